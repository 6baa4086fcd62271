"""Post-processing: keep each chosen class's largest component, chosen per class on validation Dice."""

import numpy as np

from gtgm.infer.postprocess import choose_keep_largest, keep_largest, one_piece_classes, postprocess_label
from gtgm.metrics import dice_per_class


def _reference() -> np.ndarray:
    """Class 1: one block; class 2: two separate blocks of equal size (like left and right lungs)."""
    ref = np.zeros((24, 24, 12), dtype=np.uint8)
    ref[2:10, 2:10, 2:10] = 1
    ref[14:20, 2:8, 2:8] = 2
    ref[14:20, 14:20, 2:8] = 2
    return ref


def test_keep_largest_removes_islands_of_the_chosen_classes_only():
    pred = _reference().copy()
    pred[20:22, 20:22, 9:11] = 1  # an island of class 1 far from its organ
    out = keep_largest(pred, [1])
    assert out.dtype == pred.dtype and out.shape == pred.shape
    assert (out[20:22, 20:22, 9:11] == 0).all()  # the island became background
    assert (out[2:10, 2:10, 2:10] == 1).all()  # the organ stays
    np.testing.assert_array_equal(out == 2, pred == 2)  # other classes are untouched
    np.testing.assert_array_equal(keep_largest(pred, []), pred)
    # 26-connectivity: a voxel touching the organ only at a corner is part of it
    corner = pred.copy()
    corner[10, 10, 10] = 1
    assert keep_largest(corner, [1])[10, 10, 10] == 1


def test_choice_follows_validation_dice_per_class():
    ref = _reference()
    pred = ref.copy()
    pred[20:22, 20:22, 9:11] = 1  # class 1: a stray island (costs Dice); class 2: both lungs found
    assert choose_keep_largest([pred], [ref], [1, 2]) == [1]  # keeping one "lung" would halve class 2's Dice
    before, after = dice_per_class(pred, ref, [1, 2]), dice_per_class(keep_largest(pred, [1]), ref, [1, 2])
    assert after[1] == 1.0 > before[1] and after[2] == before[2]
    assert choose_keep_largest([], [], [1, 2]) == []
    joined = ref.copy()
    joined[14:20, 8:14, 2:8] = 2  # the two "lungs" joined by a bridge: one component, nothing to remove
    assert choose_keep_largest([joined], [ref], [1, 2]) == []  # a tie decides nothing
    joined[22, 22, 10] = 2  # ... nor an island beside lungs predicted as one: the reference has two lungs
    assert keep_largest(joined, [2])[22, 22, 10] == 0 and choose_keep_largest([joined], [ref], [1, 2]) == []
    # the checkpoint's record decides what predict applies; none recorded (older checkpoints): unchanged
    np.testing.assert_array_equal(postprocess_label(pred, {}), pred)
    np.testing.assert_array_equal(
        postprocess_label(pred, {"postprocess": {"keep_largest": [1]}}), keep_largest(pred, [1])
    )


def test_keep_largest_leaves_its_input_unchanged():
    pred = _reference().copy()
    pred[20:22, 20:22, 9:11] = 1
    before = pred.copy()
    keep_largest(pred, [1, 2])
    np.testing.assert_array_equal(pred, before)


def test_classes_that_are_one_piece_in_training_are_kept_unless_validation_shows_a_clear_loss():
    ref = _reference()
    # class 1 is one piece in both training blocks; class 2 is two; class 3 is in no block
    assert one_piece_classes([(ref, [1, 2]), (ref[:, :, :6], [1, 2])], [1, 2, 3]) == [1]
    assert one_piece_classes([(ref, [2])], [1, 2]) == []  # a block that does not annotate class 1 says nothing
    # a tie on validation (no island there) keeps the default: one validation case cannot drop it
    assert choose_keep_largest([ref], [ref], [1, 2], default=[1]) == [1]
    assert choose_keep_largest([ref], [ref], [1, 2]) == []  # without the training evidence, a tie adds nothing
    assert choose_keep_largest([], [], [1, 2], default=[1]) == [1]  # no validation case: the default holds
    assert choose_keep_largest([ref], [ref], [2]) == []  # no candidate class left: nothing to score
    # a clear loss drops it: the validation organ predicted in two halves of equal size loses one of them
    split = ref.copy()
    split[2:10, 2:10, 2:10] = 0
    split[2:10, 2:10, 2:5] = 1
    split[2:10, 2:10, 6:10] = 1
    assert choose_keep_largest([split], [ref], [1, 2], default=[1]) == []
