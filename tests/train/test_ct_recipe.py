"""The real-CT recipe's parts on tiny CT: body mask, contrast-phase augmentation, partial labels, foreground
placement, CT windows as channels (through predict and back), and the experiment design's overrides."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from gtgm.cli import main
from gtgm.config import FinetuneConfig, SegAugmentConfig, load_config
from gtgm.data.body import body_mask, hu_of, mask_box
from gtgm.data.patches import VolumeCache
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.data.splits import IGNORE, make_split
from gtgm.errors import ConfigError
from gtgm.fsutil import write_json
from gtgm.infer.body import outside_body
from gtgm.infer.predict import load_segmenter
from gtgm.infer.sliding import predict_array
from gtgm.models.checkpoint import save_checkpoint
from gtgm.models.encoders import segmenter_state_dict
from gtgm.models.registry import create_encoder, create_segmenter
from gtgm.models.segmenters import load_encoder_weights
from gtgm.models.windows import CTWindows
from gtgm.study.real_ct import ATTRIBUTION, OLD_RECIPE, attribution_overrides, selection
from gtgm.train.ctaug import CTOps, PhaseChange, sample_ct_ops
from gtgm.train.losses import seg_loss
from gtgm.train.segdata import SegPatches, shift_classes
from tests.conftest import save_nifti

SHAPE, SPACING = (48, 48, 24), (8.0, 12.0)  # 384 x 384 x 288 mm
ENHANCING = {"liver": 55.0, "spleen": 45.0, "kidney_right": 30.0, "kidney_left": 30.0, "aorta": 40.0}


def test_body_mask_keeps_air_pockets_inside_and_drops_the_air_table_and_specks_outside():
    hu = np.full((40, 40, 12), -1000.0)
    x, y = np.ogrid[:40, :40]
    body = (x - 20) ** 2 / 15**2 + (y - 18) ** 2 / 11**2 <= 1
    hu[body] = 40.0
    hu[14:19, 14:20, 2:10] = -850.0  # a lung-like pocket, enclosed in every slice
    hu[24:26, 20:22, 5] = -950.0  # bowel gas in one slice
    hu[5:35, 34:36, :] = 200.0  # the table: its own component below the body
    hu[2, 2, 3] = 50.0  # a speck of noise in the air
    mask = body_mask(hu)
    assert mask[16, 16, 5] and mask[25, 21, 5]  # air pockets inside the outline are body
    assert not mask[:, 34:36].any() and not mask[2, 2, 3] and not mask[0, 0, 0]
    assert mask[:, :, 4].sum() == body.sum()  # exactly the outline, filled
    assert mask_box(mask, 2) == ([3, 5, 0], [38, 32, 12])
    assert mask_box(np.zeros((4, 5, 6), bool)) == ([0, 0, 0], [4, 5, 6])


@pytest.fixture(scope="module")
def phantom_patch():
    hu, lab, _ = make_ct_phantom(3, (64, 64, 24), (6.0, 10.0))
    return hu[8:56, 8:56].astype(np.float32), lab[8:56, 8:56].astype(np.int64)


def _boundary_jumps(diff: np.ndarray, label: np.ndarray) -> float:
    """The largest change of ``diff`` between two face neighbours of different labels."""
    jumps = [0.0]
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        across = label[tuple(a)] != label[tuple(b)]
        jumps.append(float(np.abs(diff[tuple(a)] - diff[tuple(b)])[across].max(initial=0.0)))
    return max(jumps)


def test_contrast_phase_never_touches_lungs_or_bone_and_leaves_no_step_on_a_label_boundary(phantom_patch):
    hu, lab = phantom_patch
    names = {v: k for k, v in CT_LABELS.items()}
    enhancing = {names[n]: v for n, v in ENHANCING.items()}
    cfg = SegAugmentConfig(phase_prob=1.0, phase_keep=[0.0, 0.0], phase_jitter=0.0, phase_compress=[1.0, 1.0])
    out = sample_ct_ops(cfg, enhancing, np.random.default_rng(0))(hu, lab, 2.0)
    diff = out - hu
    untouched = ~np.isin(lab, list(enhancing))
    assert np.isin(lab, [names["lungs"], names["bone"]]).any() and np.all(diff[untouched] == 0)
    kidney = lab == names["kidney_right"]
    assert diff[kidney].min() < -60  # the contrast kidney (+150..190 HU) goes down towards 30 HU
    full = max(float(np.median(hu[lab == k])) - v for k, v in enhancing.items() if (lab == k).any())  # keep 0
    assert float(np.abs(diff).max()) <= full
    assert _boundary_jumps(diff, lab) <= 0.3 * full  # a ramp inside the label, no step on its boundary
    old = hu[None].copy()
    shift_classes(old, lab, 100.0, np.random.default_rng(0))
    assert _boundary_jumps(old[0] - hu, lab) >= 0.9 * float(np.abs(old[0] - hu).max())  # the old shift: a step
    for seed in range(5):  # the whole sampled set (compression, jitter, intensity off) keeps lungs and bone
        ops = sample_ct_ops(SegAugmentConfig(phase_prob=1.0), enhancing, np.random.default_rng(seed))
        assert np.all(ops(hu, lab, 2.0)[untouched] == hu[untouched])


def test_phase_change_moves_an_unenhanced_organ_by_its_jitter_only():
    hu = np.full((10, 10, 10), 40.0, np.float32)
    lab = np.zeros((10, 10, 10), np.int64)
    lab[2:8, 2:8, 2:8] = 1
    PhaseChange(1, unenhanced=45.0, keep=0.0, jitter=0.0)(hu, lab, 2.0)
    assert np.all(hu == 40.0)  # no enhancement to take away
    ops = CTOps([PhaseChange(1, 0.0, keep=0.5, jitter=0.0)])
    out = ops(np.where(lab == 1, 200.0, 40.0), lab, 1.0)
    assert out[5, 5, 5] == pytest.approx(100.0) and out[0, 0, 0] == 40.0  # half the enhancement kept deep inside


def test_a_peak_shows_an_unenhanced_organ_enhanced_and_leaves_a_brighter_one_as_it_was():
    lab = np.zeros((10, 10, 10), np.int64)
    lab[2:8, 2:8, 2:8] = 1
    flat = np.where(lab == 1, 45.0, 40.0).astype(np.float32)  # unenhanced: 0 HU of enhancement
    out = CTOps([PhaseChange(1, 45.0, keep=0.5, peak=200.0, jitter=0.0)])(flat, lab, 1.0)
    assert out[5, 5, 5] == pytest.approx(145.0) and out[0, 0, 0] == 40.0  # half the peak, deep inside only
    bright = np.where(lab == 1, 345.0, 40.0).astype(np.float32)  # 300 HU above unenhanced: beyond the peak
    with_peak = CTOps([PhaseChange(1, 45.0, keep=0.5, peak=200.0, jitter=0.0)])(bright, lab, 1.0)
    without = CTOps([PhaseChange(1, 45.0, keep=0.5, jitter=0.0)])(bright, lab, 1.0)
    assert np.array_equal(with_peak, without) and with_peak[5, 5, 5] == pytest.approx(195.0)
    with pytest.raises(ConfigError, match="phase_peak.*seg_augment.enhancing"):
        SegAugmentConfig(enhancing={"liver": 55.0}, phase_peak={"aorta": 250.0})
    for bad in (-5.0, float("inf"), float("nan"), True):
        with pytest.raises(ConfigError, match="phase_peak"):
            SegAugmentConfig(enhancing={"liver": 55.0}, phase_peak={"liver": bad})


def test_partial_label_loss_has_zero_gradient_for_unlabelled_classes():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 6, 6, 6, requires_grad=True)
    target = torch.randint(0, 2, (2, 1, 6, 6, 6))  # sample 0 labels class 1 only (0 = none of the annotated)
    target[1] = torch.randint(0, 4, (1, 6, 6, 6))
    classes = torch.tensor([[True, True, False, False], [True, True, True, True]])
    seg_loss(logits, target, torch.ones(4), classes).backward()
    grad = logits.grad
    assert torch.all(grad[0, 2:] == 0) and torch.all(grad[0, :2] != 0)  # unannotated classes: exactly zero
    assert torch.all(grad[1].abs().sum(dim=(1, 2, 3)) > 0)  # the fully labelled sample trains every class
    full = seg_loss(logits.detach(), target, None, torch.ones(2, 4, dtype=torch.bool))
    assert full.item() == pytest.approx(seg_loss(logits.detach(), target).item(), rel=1e-6)


@pytest.fixture(scope="module")
def ct_cache(tmp_path_factory):
    """Three tiny phantoms (LPS on disk) cached at 8 x 8 x 12 mm; case 2 labels the liver only (partial)."""
    root = tmp_path_factory.mktemp("ct_recipe")
    training = []
    for seed in range(3):
        hu, lab, affine = make_ct_phantom(seed, SHAPE, SPACING)
        save_nifti(root / "raw" / f"ct_{seed}.nii.gz", hu, affine)
        save_nifti(root / "raw" / f"ct_{seed}_label.nii.gz", lab, affine)
        entry = {"image": f"ct_{seed}.nii.gz", "label": f"ct_{seed}_label.nii.gz", "id": f"ct_{seed}"}
        training.append({**entry, "label_classes": ["liver"]} if seed == 2 else entry)
    labels = {str(k): v for k, v in CT_LABELS.items()}
    write_json(root / "raw" / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    assert main(["data", "preprocess", str(root / "raw"), "--out", str(root / "cache")]) == 0
    return root


def test_foreground_placement_is_uniform_inside_the_patch(tmp_path):
    """One labelled voxel: with foreground_ratio 1 every patch holds it, at a uniform place (not the centre)."""
    hu = np.full((40, 40, 24), 40.0, np.float32)
    lab = np.zeros((40, 40, 24), np.uint8)
    lab[20, 20, 12] = 1
    save_nifti(tmp_path / "raw" / "a.nii.gz", hu)
    save_nifti(tmp_path / "raw" / "a_label.nii.gz", lab)
    training = [{"image": "a.nii.gz", "label": "a_label.nii.gz", "id": "a"}]
    labels = {"0": "background", "1": "dot"}
    write_json(tmp_path / "raw" / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    assert main(["data", "preprocess", str(tmp_path / "raw"), "--out", str(tmp_path / "cache")]) == 0
    cache = VolumeCache(tmp_path / "cache", labeled=True)
    f = FinetuneConfig(split="cases", patch_size=[16, 16, 8], foreground_ratio=1.0, train_cases=["a"])
    parts = make_split(cache, f)["train"]
    where = {}
    for mode in ("uniform", "centre", "auto"):  # auto without augment: the centre (the behaviour before the option)
        data = SegPatches(cache, parts, FinetuneConfig(**{**f.__dict__, "fg_position": mode}), seed=1)
        where[mode] = np.array([np.argwhere(data[i]["label"][0].numpy() == 1)[0] for i in range(400)])
    assert np.all(where["centre"] == [8, 8, 4]) and np.all(where["auto"] == [8, 8, 4])
    for axis, s in enumerate(f.patch_size):  # every place drawn, none far above its share
        counts = np.bincount(where["uniform"][:, axis], minlength=s)
        assert counts.min() > 0 and counts.max() < 2.5 * 400 / s


def test_partial_case_marks_its_unannotated_classes(ct_cache):
    cache = VolumeCache(ct_cache / "cache", labeled=True)
    f = FinetuneConfig(patch_size=[16, 16, 8], train_cases=["ct_2"], test_cases=["ct_1"], case_weights="voxels")
    data = SegPatches(cache, make_split(cache, f)["train"], f, seed=0, num_classes=len(CT_LABELS))
    assert data[0]["classes"].tolist() == [True, True] + [False] * (len(CT_LABELS) - 2)
    labels = torch.cat([data[i]["label"].flatten() for i in range(8)]).unique().tolist()
    assert set(labels) == {IGNORE, 0, 1}  # its file's other organs (spleen, kidneys, ...): unknown, not background


def test_ct_windows_are_computed_in_the_network_from_the_cached_channel():
    layer = CTWindows([-1000.0, 1000.0], [[-1000.0, 1000.0], [-200.0, 300.0]])
    hu = torch.tensor([-1000.0, -300.0, -200.0, 50.0, 300.0, 900.0])
    y = ((hu + 1000) / 2000).view(1, 1, -1, 1, 1)
    out = layer(y)[0, :, :, 0, 0]
    torch.testing.assert_close(out[0], y[0, 0, :, 0, 0])
    torch.testing.assert_close(out[1], ((hu.clamp(-200, 300) + 200) / 500))
    assert not layer.state_dict()  # no weights: checkpoints hold the plain network's tensors


def test_a_one_channel_encoder_loads_into_a_windowed_segmenter(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "encoder.pt", segmenter_state_dict(create_encoder("resunet", channels=[4, 8, 16])))
    seg = create_segmenter(
        "resunet", 3, channels=[4, 8, 16], in_channels=2, ct_windows=[[-1000, 1000], [-200, 300]],
        ct_source_window=[-1000, 1000],
    )  # fmt: skip
    stats = load_encoder_weights(seg, tmp_path / "encoder.pt", "resunet")
    assert stats["missing"] == 0 and stats["unexpected"] == 0
    stem = next(v for k, v in seg.state_dict().items() if v.ndim == 5 and v.shape[1] == 2)
    assert torch.all(stem[:, 1] == 0) and torch.any(stem[:, 0] != 0)


def test_two_windows_and_the_body_round_trip_through_predict(ct_cache, tmp_path):
    """Fine-tuned with two CT windows and the body crop: best.pt records both, predict rebuilds the two-channel
    network, and its label map on the raw file equals the sliding-window prediction on the cached grid inside the
    body, with nothing outside it."""
    out = tmp_path / "ft"
    args = ["finetune", str(ct_cache / "cache"), "--out", str(out), "model.channels=[4,8,16]",
            "model.ct_windows=[[-1000, 1000], [-200, 300]]", "finetune.body_crop=true", "finetune.patch_size=[16,16,8]",
            "finetune.steps=3", "finetune.val_every=3", "finetune.train_cases=[ct_0, ct_2]",
            "finetune.test_cases=[ct_1]", "finetune.single_component=[liver]"]  # fmt: skip
    assert main(args) == 0
    model, meta = load_segmenter(out / "best.pt", torch.device("cpu"))
    assert meta["model_config"]["ct_source_window"] == [-1000.0, 1000.0] and meta["body_crop"]["margin_mm"] == 10
    assert next(v for v in model.state_dict().values() if v.ndim == 5).shape[1] == 2
    assert (
        main(["predict", str(out / "best.pt"), str(ct_cache / "raw" / "ct_1.nii.gz"), "--out", str(tmp_path / "p")])
        == 0
    )
    pred_img = nib.load(tmp_path / "p" / "ct_1.nii.gz")
    raw = nib.load(ct_cache / "raw" / "ct_1.nii.gz")
    assert pred_img.shape == raw.shape and np.allclose(pred_img.affine, raw.affine)
    pred = np.asarray(nib.as_closest_canonical(pred_img).dataobj)  # RAS, as the cache (no resampling here)
    cache = VolumeCache(ct_cache / "cache", labeled=True)
    image, body = np.asarray(cache.image(1)), np.asarray(cache.body(1), bool)
    assert np.array_equal(body, body_mask(hu_of(image[0], cache.meta(1)["normalization"][0])))
    lo, hi = mask_box(body, [2, 2, 1])  # 10 mm at 8 x 8 x 12 mm
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    inside = predict_array(model, image[(slice(None), *box)], [16, 16, 8])
    expected = np.zeros(body.shape, np.uint8)
    expected[box] = inside
    expected[~body] = 0
    from gtgm.infer.postprocess import postprocess_label

    same = pred == postprocess_label(expected, meta)  # (an untrained net: a few argmax ties may flip with float order)
    assert same.mean() > 0.999 and not pred[~body].any() and pred[body].any()
    outside, total = outside_body(tmp_path / "p" / "ct_1.nii.gz", ct_cache / "raw" / "ct_1.nii.gz")
    assert outside == 0 and total > 0  # on the input's own grid


def test_attribution_steps_release_the_old_recipe_one_item_at_a_time():
    preset = load_config("finetune/cpu-real-ct")
    assert not any(o.startswith("finetune.test_cases=[") and o != "finetune.test_cases=[]" for o in selection("A"))
    released = set()
    for step, (_, keys) in enumerate(ATTRIBUTION):
        assert keys and not released & set(keys) or step == 0
        released |= set(keys)
        overrides = attribution_overrides(step)
        assert "finetune.test_cases=[]" in overrides
        old = overrides[len(selection("A")) :]  # after the fold's cases: the old recipe's settings not yet released
        assert {o.split("=")[0] for o in old} == set(OLD_RECIPE) - released
        load_config("finetune/cpu-real-ct", overrides)  # every step is a valid configuration
    assert released == set(OLD_RECIPE)  # the last step is the preset itself
    assert preset.finetune.body_crop and preset.seg_augment.phase_prob > 0 and len(preset.model.ct_windows) == 2


def test_named_splits_and_reversed_region_bounds(ct_cache):
    cache = VolumeCache(ct_cache / "cache", labeled=True)
    split = make_split(cache, FinetuneConfig(train_cases=["ct_2"], val_cases=["ct_0"]))
    assert [p.case for p in split["train"]] == [2] and [p.case for p in split["val"]] == [0] and not split["test"]
    cfg = FinetuneConfig(split="region", region_axis=2, region_bounds=[0.75, 0.5], train_cases=["ct_1"])
    parts = make_split(cache, cfg)
    z = cache.shape(1)[2]
    train, val, test = parts["train"][0], parts["val"][0], parts["test"][0]
    assert train.case == 1 and (train.lo[2], train.hi[2]) == (round(0.75 * z), z)  # the upper part trains
    assert (val.lo[2], val.hi[2]) == (round(0.5 * z), round(0.75 * z)) and (test.lo[2], test.hi[2]) == (
        0,
        round(0.5 * z),
    )
    from gtgm.errors import GtgmError

    with pytest.raises(GtgmError, match="more than one"):
        make_split(cache, FinetuneConfig(train_cases=["ct_0"], test_cases=["ct_0"]))
    assert IGNORE < 0


def test_the_selection_score_leaves_out_classes_absent_from_reference_and_prediction():
    from gtgm.metrics import dice_per_class
    from gtgm.train.tasks import present_mean

    ref = np.zeros((6, 6, 6), np.uint8)
    ref[:3] = 1
    pred = ref.copy()
    dice = [dice_per_class(pred, ref, [1, 2, 3])]  # classes 2 and 3 absent from both: Dice 1.0 each
    assert present_mean(dice, [pred], [ref]) == 1.0 and present_mean(dice, [None], [ref]) == 1.0
    pred[5, 5, 5] = 2  # a false positive of an absent class counts 0
    dice = [dice_per_class(pred, ref, [1, 2, 3])]
    assert present_mean(dice, [pred], [ref]) == pytest.approx(0.5)
    half = pred.copy()
    half[:3] = 0
    assert present_mean([dice_per_class(half, ref, [1, 2, 3])], [half], [ref]) == 0.0  # (not 2/3 from the empties)
