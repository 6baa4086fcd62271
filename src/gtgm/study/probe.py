"""``gtgm probe``: what a frozen encoder already knows, measured cheaply enough for a CPU.

Two probes on a labelled cache group, with the fine-tuning split (``finetune.split_seed``, ``label_ratio``),
so every encoder is measured on the same voxels and cases (paired comparisons):

* **voxel probe** — the encoder's feature maps of every stage, upsampled (trilinear) to the input grid
  and concatenated (``sum(channels)`` features per voxel); a fixed class-balanced sample of up to
  ``voxels_per_class`` voxels per class from the training parts; features standardised with the sample's
  mean and std; a multinomial logistic regression (L-BFGS, L2 ``weight_decay``) fitted on it; Dice per
  class of its argmax over every voxel of the test parts.
* **presence probe** — the encoder's pooled feature (``model.pooling``) of ``box``-sized windows on a
  grid over each part; per class, presence = at least 1 % of the window's voxels; a logistic regression per
  class fitted on the training windows; ROC AUC on the test windows (classes present in some and absent in
  other test windows only).

Everything is drawn from fixed seeds: the same encoder and data give the same figures.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gtgm.config import Config
from gtgm.data.patches import VolumeCache, grid_starts, read_patch
from gtgm.data.splits import Part, make_split, part_arrays
from gtgm.errors import GtgmError
from gtgm.metrics import dice_per_class


def load_frozen_encoder(cfg: Config, path: str, seed: int = 0) -> torch.nn.Module:
    """The encoder of ``path`` (``encoder.pt``; '' = random initialisation drawn from ``seed``), in eval mode."""
    from gtgm.models.vlp import build_encoder

    m = cfg.model
    torch.manual_seed(seed)
    enc = build_encoder(dataclasses.replace(m, ct_windows=[]))  # a probe reads the cached channel as pretraining did
    if path:
        from gtgm.models.checkpoint import load_state_dict

        prefix = getattr(enc, "segmenter_prefix", "")
        weights = {k[len(prefix) :]: v for k, v in load_state_dict(Path(path)).items() if k.startswith(prefix)}
        try:
            missing, _ = enc.load_state_dict(weights, strict=False)
        except RuntimeError as exc:  # tensors of other shapes: another width or depth
            raise GtgmError(f"{path}: does not fit the configured {m.encoder} encoder (model.channels?)") from exc
        if missing:
            raise GtgmError(
                f"{path}: {len(missing)} encoder tensors missing (e.g. {missing[0]}); another architecture?"
            )
    return enc.eval()


@torch.no_grad()
def stage_maps(enc: torch.nn.Module, image: np.ndarray) -> tuple[list[torch.Tensor], list[int]]:
    """The encoder's feature maps of (C, X, Y, Z) ``image``, padded (edge values) to a multiple of 32 per side
    (the strided stages; SwinUNETR needs 32); returns the maps and the padded shape."""
    pad = [(0, 0)] + [(0, (-s) % 32) for s in image.shape[1:]]
    x = torch.from_numpy(np.pad(image, pad, mode="edge"))[None].float()
    return list(enc.features(x)), list(x.shape[2:])


@torch.no_grad()
def sample_features(maps: list[torch.Tensor], padded: list[int], idx: np.ndarray) -> torch.Tensor:
    """(N, sum of channels) features at voxels ``idx`` (N, 3): every stage's map trilinearly upsampled to the
    padded input grid (as ``F.interpolate(..., align_corners=False)``) and read at those voxels."""
    n = torch.tensor(padded, dtype=torch.float32)
    norm = (2 * torch.from_numpy(idx).float() + 1) / n - 1  # voxel centres in [-1, 1], axes (x, y, z)
    grid = norm[:, [2, 1, 0]].view(1, -1, 1, 1, 3)  # grid_sample wants (W, H, D) = (z, y, x) order
    cols = [
        F.grid_sample(m, grid, mode="bilinear", padding_mode="border", align_corners=False).view(m.shape[1], -1)
        for m in maps
    ]
    return torch.cat(cols, dim=0).T


def _balanced_sample(label: np.ndarray, classes: list[int], n: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of up to ``n`` voxels per class of ``label`` (ignored voxels < 0 never drawn)."""
    flat = label.ravel()
    picks = []
    for c in classes:
        where = np.flatnonzero(flat == c)
        if where.size:
            picks.append(rng.choice(where, size=min(n, where.size), replace=False))
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, weight_decay: float = 1e-3) -> torch.nn.Linear:
    """Multinomial logistic regression on (N, F) features and (N,) class indices, L-BFGS, deterministic."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], classes)
    torch.nn.init.zeros_(lin.weight), torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=200, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(lin(x), y) + weight_decay * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin


def voxel_probe(
    enc: torch.nn.Module,
    cache: VolumeCache,
    split: dict[str, list[Part]],
    classes: list[int],
    voxels_per_class: int = 2000,
    seed: int = 0,
    chunk: int = 200_000,
    on: str = "test",
) -> dict[str, Any]:
    """Dice per class (and mean) of a linear read-out of frozen voxel features on the ``on`` parts (test or val);
    see the module docstring."""
    rng = np.random.default_rng([seed, 5])
    xs, ys = [], []
    for p in split["train"]:
        image, label = part_arrays(cache, p)
        label = _labelled(p, label)  # region split: only the labelled slices count
        maps, padded = stage_maps(enc, image)
        pick = _balanced_sample(label, classes, voxels_per_class, rng)
        xs.append(sample_features(maps, padded, np.stack(np.unravel_index(pick, label.shape), 1)))
        ys.append(label.ravel()[pick])
    x = torch.cat(xs)
    index = {c: k for k, c in enumerate(classes)}
    y = torch.tensor([index[int(v)] for v in np.concatenate(ys)])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    lin = fit_logistic((x - mean) / std, y, len(classes))
    dice: dict[str, list[float]] = {}
    for p in split[on]:
        image, label = part_arrays(cache, p)
        maps, padded = stage_maps(enc, image)
        pred = np.empty(label.size, dtype=np.int64)
        with torch.no_grad():
            for i in range(0, label.size, chunk):
                where = np.stack(np.unravel_index(np.arange(i, min(i + chunk, label.size)), label.shape), 1)
                pred[i : i + len(where)] = lin((sample_features(maps, padded, where) - mean) / std).argmax(1).numpy()
        pred = np.asarray(classes)[pred].reshape(label.shape)
        for c, d in dice_per_class(pred, label, [c for c in classes if c > 0]).items():
            dice.setdefault(str(c), []).append(float(d))
    per_class = {c: float(np.mean(v)) for c, v in dice.items()}
    return {"dice": per_class, "mean_dice": float(np.mean(list(per_class.values()))), "train_voxels": int(len(y))}


def _labelled(p: Part, label: np.ndarray) -> np.ndarray:
    """``label`` of part ``p`` with its unlabelled z slices (region split, label ratio < 1) set to -1."""
    label = label.astype(np.int64)
    if p.slices is None:
        return label
    keep = np.full(label.shape, -1, dtype=np.int64)
    idx = [z - p.lo[2] for z in p.slices]
    keep[:, :, idx] = label[:, :, idx]
    return keep


def _windows(enc: torch.nn.Module, cache: VolumeCache, p: Part, box: list[int], classes: list[int]) -> tuple:
    """Pooled features (W, D) and presence (W, K) of ``box`` windows on a half-overlapping grid over part ``p``
    (windows without a labelled voxel are skipped)."""
    image, label = part_arrays(cache, p)
    label = _labelled(p, label)
    feats, present = [], []
    pad = cache.pad_value(p.case)
    for start in grid_starts(list(label.shape), box, [max(1, b // 2) for b in box]):
        patch = read_patch(image, start, box, pad)
        lab = read_patch(label, start, box, -1)
        if not (lab >= 0).any():
            continue
        with torch.no_grad():
            feats.append(enc(torch.from_numpy(patch)[None].float())[0])
        valid = max(int((lab >= 0).sum()), 1)
        present.append([float((lab == c).sum() / valid >= 0.01) for c in classes])
    return torch.stack(feats), np.asarray(present)


def auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC AUC = P(score of a positive > score of a negative), ties count one half (Mann-Whitney U)."""
    pos, neg = scores[truth > 0], scores[truth == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def presence_probe(
    enc: torch.nn.Module,
    cache: VolumeCache,
    split: dict[str, list[Part]],
    classes: list[int],
    box: list[int],
    on: str = "test",
) -> dict[str, Any]:
    """ROC AUC per class of logistic regressions on pooled window features, scored on the ``on`` parts (test or
    val); see the module docstring."""
    fg = [c for c in classes if c > 0]
    train = [_windows(enc, cache, p, box, fg) for p in split["train"]]
    test = [_windows(enc, cache, p, box, fg) for p in split[on]]
    x, y = torch.cat([t[0] for t in train]), np.concatenate([t[1] for t in train])
    xt, yt = torch.cat([t[0] for t in test]), np.concatenate([t[1] for t in test])
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    out = {}
    for k, c in enumerate(fg):
        if len(set(y[:, k])) < 2 or len(set(yt[:, k])) < 2:
            continue
        lin = fit_logistic((x - mean) / std, torch.from_numpy(y[:, k].astype(np.int64)), 2)
        with torch.no_grad():
            score = torch.softmax(lin((xt - mean) / std), 1)[:, 1].numpy()
        out[str(c)] = auc(score, yt[:, k])
    return {
        "auc": out,
        "mean_auc": float(np.mean(list(out.values()))) if out else float("nan"),
        "windows": [int(len(x)), int(len(xt))],
    }


def run_probe(
    cfg: Config, encoder: str, group: str, seed: int = 0, voxels_per_class: int = 2000, on: str = "test"
) -> dict[str, Any]:
    """Both probes of ``encoder`` ('' = random init from ``seed``) on ``group`` of ``finetune.cache``, scored on
    the test parts, or on the validation parts (``on='val'``: for choosing settings without touching test)."""
    if on not in ("test", "val"):
        raise GtgmError(f"probe: score on 'test' or 'val', got {on!r}")
    if cfg.finetune.task == "em":
        raise GtgmError(f"group {group}: the probes score label maps; an EM (neuron id) task has none")
    cache = VolumeCache(cfg.finetune.cache, group=group, labeled=True)
    cache.verify()
    split = make_split(cache, dataclasses.replace(cfg.finetune, group=group))
    labels = cache.index.get("groups", {}).get(group, {}).get("labels", {})
    classes = sorted(int(c) for c in labels)
    if len(classes) < 2:
        raise GtgmError(f"group {group}: the probes need at least two declared label classes, got {labels}")
    enc = load_frozen_encoder(cfg, encoder, seed)
    box = list(cfg.pretrain.patch_size)
    if not split[on]:
        raise GtgmError(f"group {group}: the fine-tuning split has no {on} cases to score the probes on")
    return {
        "encoder": encoder or f"random init (seed {seed})",
        "group": group,
        "scored_on": on,
        "pooling": cfg.model.pooling,
        "voxel": voxel_probe(enc, cache, split, classes, voxels_per_class, seed, on=on),
        "presence": presence_probe(enc, cache, split, classes, box, on=on),
    }
