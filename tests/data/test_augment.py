"""Augmentation: deterministic ops, recorded random parameters, reproducibility under a seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gtgm.config import AugmentConfig
from gtgm.data import augment as A

X = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 12, 12, 8)).astype(np.float32))


@pytest.mark.parametrize(
    "op",
    [
        A.Flip([0, 2]),
        A.Rot90(1),
        A.CropResize([1, 2, 0], [8, 9, 6]),
        A.Gamma(1.3),
        A.Contrast(0.8),
        A.Brightness(0.1),
        A.Noise(0.05, 123),
        A.Blur(0.8),
    ],
)
def test_ops_keep_shape_and_are_deterministic(op):
    out = op(X)
    assert out.shape == X.shape and out.dtype == X.dtype
    torch.testing.assert_close(op(X), out)
    assert A.describe(op)["op"] == type(op).__name__


def test_op_values():
    torch.testing.assert_close(A.Flip([0, 1, 2])(A.Flip([0, 1, 2])(X)), X)
    torch.testing.assert_close(A.Rot90(1)(X)[:, :, :, 0], torch.rot90(X[:, :, :, 0], 1, dims=(1, 2)))
    torch.testing.assert_close(A.Rot90(3)(A.Rot90(1)(X)), X)
    torch.testing.assert_close(A.Gamma(1.0)(X), X)
    torch.testing.assert_close(A.Contrast(1.0)(X), X)
    torch.testing.assert_close(A.Brightness(0.5)(X), X + 0.5 * X.std())
    torch.testing.assert_close(A.CropResize([0, 0, 0], [12, 12, 8])(X), X)
    const = torch.full((1, 10, 10, 10), 3.0)
    torch.testing.assert_close(A.Blur(1.0)(const), const)
    blurred = A.Blur(1.0)(X)
    assert blurred.std() < X.std()
    torch.testing.assert_close(blurred.mean(), X.mean(), atol=0.05, rtol=0)
    assert not torch.equal(A.Noise(0.1, 1)(X), A.Noise(0.1, 2)(X))


def _replay(records):
    classes = {
        c.__name__: c for c in (A.Flip, A.Rot90, A.CropResize, A.Gamma, A.Contrast, A.Brightness, A.Noise, A.Blur)
    }
    return [classes[r["op"]](**{k: v for k, v in r.items() if k != "op"}) for r in records]


def test_two_views_reproducible_and_replayable():
    cfg = AugmentConfig(
        flip_prob=0.5,
        rot90_prob=1.0,
        crop_prob=1.0,
        gamma_prob=1.0,
        contrast_prob=1.0,
        brightness_prob=1.0,
        noise_prob=1.0,
        blur_prob=1.0,
    )
    views = A.TwoViews(cfg)
    a1, a2, rec_a = views(X, np.random.default_rng(42))
    b1, b2, rec_b = views(X, np.random.default_rng(42))
    torch.testing.assert_close(a1, b1)
    torch.testing.assert_close(a2, b2)
    assert rec_a == rec_b
    assert len(rec_a[0]) >= 7 and rec_a[0] != rec_a[1]  # every op applied, the two views differ
    assert not torch.allclose(a1, a2)
    torch.testing.assert_close(A.apply_ops(X, _replay(rec_a[0])), a1)  # records replay the view exactly
    c1, _, _ = views(X, np.random.default_rng(43))
    assert not torch.allclose(a1, c1)


def test_no_augmentation_is_identity():
    cfg = AugmentConfig(
        flip_prob=0,
        rot90_prob=0,
        crop_prob=0,
        gamma_prob=0,
        contrast_prob=0,
        brightness_prob=0,
        noise_prob=0,
        blur_prob=0,
    )
    v1, v2, rec = A.TwoViews(cfg)(X, np.random.default_rng(0))
    torch.testing.assert_close(v1, X)
    torch.testing.assert_close(v2, X)
    assert rec == [[], []]


def test_rot90_on_non_square_plane_keeps_shape():
    x = torch.zeros(1, 10, 12, 6)
    ops = [A.RandomRot90(1.0).sample(np.random.default_rng(s), (10, 12, 6)) for s in range(10)]
    assert all(op.k == 2 and op(x).shape == x.shape for op in ops)


def test_ct_and_mri_views_keep_left_and_right():
    cfg = AugmentConfig(flip_prob=1.0, rot90_prob=1.0)
    for caption_consistent in (True, False):
        views = A.TwoViews(cfg, caption_consistent)
        kinds = {
            modality: {
                r["op"] for s in range(20) for rec in views(X, np.random.default_rng(s), modality)[2] for r in rec
            }
            for modality in ("CT", "MRI", "EM")
        }
        assert not {"Flip", "Rot90"} & (kinds["CT"] | kinds["MRI"])  # an invariance to them would erase the side
        assert {"Flip", "Rot90"} <= kinds["EM"]  # EM keeps them (augment.mirror_modalities)
