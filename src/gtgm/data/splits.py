"""Train/val/test splits of a labeled cache (a small pure function of the cache's shapes and the split settings).

Two split kinds:

* ``cases`` — shuffle (``split_seed``) of the labeled cases into test (``test_fraction``), val
  (``val_fraction``) and train, or fixed ones (``test_cases``, ``val_cases``: case ids; the rest train, and the
  validation may be empty); the label ratio keeps ``max(1, round(ratio · n_train))`` train cases, and
  ``slices_per_case`` > 0 labels only that many axial slices of each (``label_slices``: spread or block) — the
  label-limited regime where unlabelled data can matter. Cases the dataset declares as test (its ``test`` list,
  e.g. the sealed phantoms) are never drawn into a split: they are scored only when named in ``test_cases``. Named
  cases (any of ``test_cases``, ``val_cases``, ``train_cases``) fix the split; the test may then stay empty (a
  selection run that never reads a test volume).
* ``region`` — each labeled volume is cut into slabs along ``region_axis`` (train below
  ``region_bounds[0]``, val between, test above ``region_bounds[1]``, as fractions of the axis; reversed bounds
  ``[a, b]`` with a > b train above a and test below b), so
  train and test voxels never overlap; image voxels outside a slab are replaced by the pad value when
  sampling, so no training patch sees test intensities either. The label ratio keeps that share of the
  train slab's axial (z) slices as labelled (``label_slices``: ``spread`` = evenly spaced, ``block`` =
  a contiguous block in the middle of the slab, a sub-volume as EM affinities need, with unlabelled
  image context on both sides like the sections it will be applied to); the others are ignored by the loss.
  EM presets cut along z (``region_axis: 2``): first sections train, last sections test.

A split is a list of :class:`Part` (case index, box, labelled slices), stored as ``split.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gtgm.config import FinetuneConfig
from gtgm.data.patches import VolumeCache
from gtgm.errors import GtgmError

IGNORE = -1  # label value the loss ignores


@dataclass
class Part:
    case: int
    lo: list[int]  # box [lo, hi) of the volume this part may use
    hi: list[int]
    slices: list[int] | None = None  # labelled z indices (None = all)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_split(cache: VolumeCache, cfg: FinetuneConfig) -> dict[str, list[Part]]:
    """``{"train": [...], "val": [...], "test": [...]}`` for the labeled cases of ``cache``.

    Drawn with ``cfg.split_seed`` only, so runs that differ in their initialisation seed share their test
    and validation cases and their labelled subset (paired comparisons on fixed evaluation cases).
    """
    declared_test = {i for i, e in enumerate(cache.entries) if e.get("split") == "test"}
    cases = [i for i in range(len(cache)) if i not in declared_test] or list(range(len(cache)))
    kind = cfg.split if cfg.split != "auto" else ("region" if len(cases) == 1 else "cases")
    if kind == "region":
        if cfg.slices_per_case:
            raise GtgmError(
                "finetune.slices_per_case applies to a case split; a region split labels slices with label_ratio"
            )
        if cfg.train_cases:  # the named volumes only
            ids = {e["id"]: i for i, e in enumerate(cache.entries)}
            unknown = [c for c in cfg.train_cases if c not in ids]
            if unknown:
                raise GtgmError(f"{cache.root}: finetune.train_cases {unknown} are not labelled cases here")
            cases = [ids[c] for c in cfg.train_cases]
        parts = [_region_split(cache, i, cfg) for i in cases]
        return {k: [p[k][0] for p in parts] for k in ("train", "val", "test")}
    named = bool(cfg.test_cases or cfg.val_cases or cfg.train_cases)
    if len(cases) < 3 and not named:
        raise GtgmError(
            f"{cache.root}: a case split needs at least 3 labeled cases (has {len(cases)}); use split=region"
        )
    if named:
        test, val, train = _named_cases(cache, cfg)
    else:
        order = [int(i) for i in np.random.default_rng([cfg.split_seed, 7]).permutation(cases)]
        n_test = max(1, round(cfg.test_fraction * len(order)))
        n_val = max(1, round(cfg.val_fraction * len(order)))
        test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    if not train:
        raise GtgmError(f"{cache.root}: no training case left after the val/test split")
    keep = max(1, round(cfg.label_ratio * len(train)))
    whole = lambda i: Part(i, [0, 0, 0], list(cache.shape(i)))  # noqa: E731
    labelled = lambda i, z: Part(i, [0, 0, 0], z, _pick_slices(0, z[2], cfg.slices_per_case, cfg.label_slices))  # noqa: E731
    return {
        "train": [labelled(i, list(cache.shape(i))) for i in sorted(train[:keep])],
        "val": [whole(i) for i in val],
        "test": [whole(i) for i in test],
    }


def _named_cases(cache: VolumeCache, cfg: FinetuneConfig) -> tuple[list[int], list[int], list[int]]:
    """``finetune.test_cases`` / ``val_cases`` (case ids) as test / val, ``train_cases`` (or, when empty, the other
    labelled cases) as train, in cache order; an unknown id, or a case in two of them, is an error."""
    ids = {e["id"]: i for i, e in enumerate(cache.entries)}
    unknown = [c for c in [*cfg.test_cases, *cfg.val_cases, *cfg.train_cases] if c not in ids]
    if unknown:
        raise GtgmError(f"{cache.root}: finetune cases {unknown} are not labelled cases here ({sorted(ids)})")
    named = [*cfg.test_cases, *cfg.val_cases, *cfg.train_cases]
    twice = sorted({c for c in named if named.count(c) > 1})
    if twice:
        raise GtgmError(f"finetune test/val/train cases: {twice} named in more than one of them")
    test, val = [ids[c] for c in cfg.test_cases], [ids[c] for c in cfg.val_cases]
    held = {i for i, e in enumerate(cache.entries) if e.get("split") == "test"}  # declared test: never trained on
    if cfg.train_cases:
        return test, val, sorted(ids[c] for c in cfg.train_cases)
    return test, val, [i for i in range(len(cache)) if i not in test and i not in val and i not in held]


def _region_split(cache: VolumeCache, case: int, cfg: FinetuneConfig) -> dict[str, list[Part]]:
    shape = list(cache.shape(case))
    ax, (a, b) = cfg.region_axis, cfg.region_bounds
    cut_a, cut_b = round(a * shape[ax]), round(b * shape[ax])

    def part(lo_ax: int, hi_ax: int, slices: list[int] | None = None) -> Part:
        lo, hi = [0, 0, 0], list(shape)
        lo[ax], hi[ax] = lo_ax, hi_ax
        return Part(case, lo, hi, slices)

    if not 0 < min(cut_a, cut_b) < max(cut_a, cut_b) < shape[ax]:
        raise GtgmError(
            f"{cache.root}: case {cache.entries[case]['id']} (shape {shape}) is too small for region_bounds "
            f"{cfg.region_bounds} along axis {ax}"
        )
    if cut_a < cut_b:
        train, val, test = part(0, cut_a), part(cut_a, cut_b), part(cut_b, shape[ax])
    else:  # reversed bounds: train above a, val between b and a, test below b
        train, val, test = part(cut_a, shape[ax]), part(cut_b, cut_a), part(0, cut_b)
    z_lo, z_hi = train.lo[2], train.hi[2]
    train.slices = _pick_slices(z_lo, z_hi, max(1, round(cfg.label_ratio * (z_hi - z_lo))), cfg.label_slices)
    return {"train": [train], "val": [val], "test": [test]}


def _pick_slices(z_lo: int, z_hi: int, n: int, mode: str) -> list[int] | None:
    """``n`` labelled axial slices of ``[z_lo, z_hi)``: evenly spread (``spread``, the ends left out) or a central
    ``block``; None (all labelled) when ``n`` is 0 or covers the range."""
    if n <= 0 or n >= z_hi - z_lo:
        return None
    if mode == "block":
        first = z_lo + (z_hi - z_lo - n) // 2
        return list(range(first, first + n))
    return sorted({int(z) for z in np.linspace(z_lo, z_hi - 1, n + 2)[1:-1].round()})


def usable_mask(p: Part, start: list[int], size: list[int]) -> np.ndarray:
    """Boolean (size) mask of patch voxels inside the part's box."""
    axes = [
        (np.arange(s0, s0 + n) >= lo) & (np.arange(s0, s0 + n) < hi) for s0, n, lo, hi in zip(start, size, p.lo, p.hi)
    ]
    return axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :]


def part_arrays(cache: VolumeCache, p: Part) -> tuple[np.ndarray, np.ndarray]:
    """The part's box of image (C, ...) and label (...) as arrays (for sliding-window evaluation)."""
    box = tuple(slice(lo, hi) for lo, hi in zip(p.lo, p.hi))
    return np.asarray(cache.image(p.case)[(slice(None), *box)]), np.asarray(cache.label(p.case)[box])
