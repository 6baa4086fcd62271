"""What a fine-tuning run learns and how it is scored: one class per ``finetune.task``.

* :class:`SegmentationTask` (``segmentation``, CT/MRI): K-class logits, masked Dice + CE, scored by Dice
  (and HD95 on the test split); higher is better.
* :class:`AffinityTask` (``em``): one sigmoid output per affinity offset, masked (balanced) BCE or MSE
  against affinities computed from the instance labels of each patch, scored by agglomerating the
  predicted affinities into neurons (waterz, or the watershed fallback) at every threshold of
  ``em.thresholds`` and measuring VOI / adapted Rand; lower VOI is better. Validation picks the threshold
  with the lowest VOI; the test split uses that threshold.

Both score a list of :class:`~gtgm.data.splits.Part` with sliding-window inference and return a dict
with ``main`` (the selection figure, oriented so that higher is better), ``metric`` (its name) and
``summary`` (the figures to report: per class Dice, or VOI split / merge / sum, ARAND and CREMI score).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from gtgm.config import Config
from gtgm.data.patches import VolumeCache
from gtgm.data.splits import Part, part_arrays
from gtgm.em.affinities import affinities_torch, offsets_xyz
from gtgm.em.agglomerate import segment, threshold_baseline
from gtgm.errors import GtgmError
from gtgm.infer.body import predict_in_body
from gtgm.infer.postprocess import choose_keep_largest, keep_largest, one_piece_classes
from gtgm.infer.sliding import predict_array
from gtgm.metrics import dice_per_class, hd95_per_class, neuron_scores
from gtgm.models.registry import architecture_kwargs, create_segmenter
from gtgm.train.diagnostics import confusion_counts
from gtgm.train.losses import affinity_loss, seg_loss


def class_weights(counts: np.ndarray, power: float) -> torch.Tensor:
    """CE weights from voxel counts per class (K,): ``w_k ∝ (n_k / n)^-power``, scaled so that the
    voxel-weighted mean weight is 1 (``Σ w_k n_k = n``); absent classes count as one voxel.

    ``power`` 0 gives equal weights, 1 inverse frequency, 0.5 (the CPU presets) its square root: with it the
    CT phantoms' small organs (kidneys, spleen, aorta: < 1 % of the voxels each) are learnt in a few hundred
    steps; without it they stay at Dice 0 for longer than a CPU run lasts.
    """
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    w = (n.sum() / n) ** power
    return torch.tensor(w * n.sum() / (w * n).sum(), dtype=torch.float32)


def label_counts(cache: VolumeCache, parts: list[Part], num_classes: int) -> np.ndarray:
    """Labelled voxels per class (K,) inside ``parts`` (their boxes and labelled slices); a partial-label case counts
    only the classes it annotates (its 0 is "none of them", not background)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for p in parts:
        label = np.asarray(part_arrays(cache, p)[1])
        if p.slices is not None:
            label = label[:, :, [z - p.lo[2] for z in p.slices]]
        n = np.bincount(label.ravel(), minlength=num_classes)[:num_classes]
        known = cache.label_classes(p.case)
        if known is not None:
            n = np.where(np.isin(np.arange(num_classes), known), n, 0)
        counts += n
    return counts


def labelled_blocks(cache: VolumeCache, parts: list[Part]) -> list[tuple[np.ndarray, list[int]]]:
    """The training label maps as contiguously labelled blocks, for :func:`one_piece_classes`: each part's box, or
    each run of consecutive labelled slices of it, with the classes its case annotates (all but 0 when complete)."""
    blocks = []
    for p in parts:
        label = np.asarray(part_arrays(cache, p)[1])
        known = cache.label_classes(p.case)
        annotated = list(known) if known is not None else [int(v) for v in np.unique(label) if v > 0]
        if p.slices is None:
            blocks.append((label, annotated))
            continue
        zs = sorted(z - p.lo[2] for z in p.slices)
        runs = np.split(np.asarray(zs), np.flatnonzero(np.diff(zs) > 1) + 1) if zs else []
        blocks += [(label[:, :, run[0] : run[-1] + 1], annotated) for run in runs if len(run)]
    return blocks


def build_segmenter(cfg: Config, outputs: int, task: str = "segmentation") -> torch.nn.Module:
    kind = "affinity" if task == "em" else "segmentation"
    return create_segmenter(cfg.model.encoder, outputs, task=kind, **architecture_kwargs(cfg.model))


def create_task(cfg: Config, cache: VolumeCache) -> SegmentationTask | AffinityTask:
    """The task of ``cfg.finetune.task``."""
    return AffinityTask(cfg, cache) if cfg.finetune.task == "em" else SegmentationTask(cfg, cache)


class SegmentationTask:
    name = "segmentation"
    metric = "mean_dice"

    def __init__(self, cfg: Config, cache: VolumeCache):
        self.cfg, self.cache = cfg, cache
        f = cfg.finetune
        labels = cache.index["groups"].get(f.group or "default", {}).get("labels", {})
        metas = [cache.meta(i) for i in range(len(cache))]  # each case's JSON, read once
        values = [int(k) for k in labels] + [v for m in metas for v in (m.get("label_values") or [])]
        if any(_instance_labels(m) for m in metas):
            raise GtgmError(f"{cache.root}: the labels are neuron instance ids (EM); use finetune.task=em")
        self.outputs, self.labels = (max(values) + 1 if values else 2), labels
        _check_labels(cache, f.task_labels, labels)
        _check_declared(cache, labels, metas)
        self.class_weight: torch.Tensor | None = None
        self.single = class_ids(labels, f.single_component, "finetune.single_component")  # one component, a priori
        self.enhancing = by_class_id(labels, cfg.seg_augment.enhancing, "seg_augment.enhancing")  # unenhanced HU
        self.peaks = by_class_id(labels, cfg.seg_augment.phase_peak, "seg_augment.phase_peak")  # peak enhancement
        self.keep_largest: list[int] = list(self.single)  # + the classes validation adds (choose_keep_largest)
        self.one_piece: list[int] = []  # one component in every training label map: kept by default

    def weigh_classes(self, train: list[Part]) -> None:
        """CE class weights from the labelled voxels of the training parts (``finetune.class_weight_power``)."""
        power = self.cfg.finetune.class_weight_power
        self.class_weight = class_weights(label_counts(self.cache, train, self.outputs), power) if power else None
        if self.cfg.finetune.postprocess:
            self.one_piece = one_piece_classes(labelled_blocks(self.cache, train), list(range(1, self.outputs)))
            self.keep_largest = sorted({*self.single, *self.one_piece})

    def loss(self, logits: torch.Tensor, label: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        partial = classes is not None and not bool(classes.all())
        return seg_loss(logits, label, self.class_weight, classes if partial else None)

    def restore(self, ckpt: dict[str, Any]) -> None:
        """The post-processing chosen on validation with the kept weights (none in older checkpoints)."""
        self.keep_largest = [int(c) for c in (ckpt.get("postprocess") or {}).get("keep_largest") or []]

    def meta(self) -> dict[str, Any]:
        meta = {"task": self.name, "num_classes": self.outputs, "labels": self.labels}
        body = {"margin_mm": self.cfg.finetune.body_margin_mm} if self.cfg.finetune.body_crop else None
        return {**meta, "postprocess": {"keep_largest": list(self.keep_largest)}, "body_crop": body}

    def score(self, model: torch.nn.Module, parts: list[Part], device: Any, final: bool = False) -> dict[str, Any]:
        """Per-class Dice (and, when ``final``, HD95 and the confusion counts reference × predicted) of
        sliding-window predictions on ``parts``, and their means, after post-processing.

        Validation (``final`` False) chooses the post-processing (:mod:`gtgm.infer.postprocess`; kept in
        ``best.pt`` with the weights that scored best); the test split applies the one restored from ``best.pt``.
        ``dice_raw`` is the mean Dice before post-processing. The means (``main``, the figure validation selects on)
        leave out a class absent from both a case's reference and its prediction (:func:`present_mean`): an 8-slice
        validation slab without kidneys must not reward a model for predicting none there.
        """
        f, classes = self.cfg.finetune, list(range(1, self.outputs))
        entries, preds, labels = [], [], []
        for p in parts:  # one image in memory at a time; the uint8 predictions and labels are kept
            image, label = part_arrays(self.cache, p)
            preds.append(self._predict(model, p, image, device))
            entries.append(self.cache.entries[p.case])
            labels.append(np.asarray(label))
        if not final:
            others = [c for c in classes if c not in self.single]
            chosen = choose_keep_largest(preds, labels, others, self.one_piece) if f.postprocess else []
            self.keep_largest = sorted({*self.single, *chosen})
        raw = [dice_per_class(pred, label, classes) for pred, label in zip(preds, labels)]
        preds = [keep_largest(pred, self.keep_largest) for pred in preds]
        rows = []
        for entry, label, pred, dice_raw in zip(entries, labels, preds, raw):
            row = {"case": entry["id"], "dice": dice_per_class(pred, label, classes), "dice_raw": dice_raw}
            if final:
                row["hd95"] = hd95_per_class(pred, label, classes, entry["spacing"])
                row["confusion"] = confusion_counts(pred, label, self.outputs)
            rows.append(row)
        mean = {c: float(np.mean([r["dice"][c] for r in rows])) for c in classes}
        main = present_mean([r["dice"] for r in rows], preds, labels)
        dice_raw = present_mean(raw, [None] * len(raw), labels)
        return {
            "cases": rows,
            "dice": mean,
            "mean_dice": main,
            "dice_raw": dice_raw,
            "keep_largest": list(self.keep_largest),
            "summary": mean,
            "main": main,
            "metric": self.metric,
        }

    def _predict(self, model: torch.nn.Module, p: Part, image: np.ndarray, device: Any) -> np.ndarray:
        """Labels of part ``p`` (its box of the volume): inside the body only when ``body_crop`` (CT)."""
        f = self.cfg.finetune
        sliding = {"overlap": f.sw_overlap, "sw_batch": f.sw_batch_size, "device": device}
        body = self.cache.body(p.case) if f.body_crop else None
        if body is None:
            return predict_array(model, image, f.patch_size, **sliding)
        box = tuple(slice(lo, hi) for lo, hi in zip(p.lo, p.hi))
        spacing = self.cache.entries[p.case]["spacing"]
        return predict_in_body(
            model, image, np.asarray(body[box], bool), f.body_margin_mm, spacing, f.patch_size, **sliding
        )


def present_mean(dice: list[dict[int, float]], preds: list[np.ndarray | None], labels: list[np.ndarray]) -> float:
    """Mean of the per-case, per-class Dice over the (case, class) pairs where the class is in the reference or the
    prediction (nnU-Net's rule: both empty is no evidence either way; a false positive counts 0). ``preds[i]`` None:
    decide on the Dice alone (1.0 means both empty). 0 when no pair counts."""
    values = []
    for d, pred, label in zip(dice, preds, labels):
        for c, v in d.items():
            present = (label == c).any() or (pred == c).any() if pred is not None else v != 1.0 or (label == c).any()
            if present:
                values.append(v)
    return float(np.mean(values)) if values else 0.0


def class_ids(labels: dict[str, str], names: list[str], key: str) -> list[int]:
    """The label values of class ``names`` (``labels``: value -> name); a name not among them is an error."""
    ids = {str(n): int(k) for k, n in labels.items()}
    unknown = [n for n in names if n not in ids]
    if unknown:
        raise GtgmError(f"config key '{key}': {unknown} are not classes of this data ({sorted(ids)})")
    return [ids[n] for n in names]


def by_class_id(labels: dict[str, str], values: dict[str, float], key: str) -> dict[int, float]:
    """``values`` (class name -> value) keyed by label value instead (:func:`class_ids`)."""
    return dict(zip(class_ids(labels, list(values), key), values.values()))


class AffinityTask:
    name = "em"
    metric = "voi"

    def __init__(self, cfg: Config, cache: VolumeCache):
        self.cfg, self.cache, self.em = cfg, cache, cfg.em
        self.offsets = offsets_xyz(self.em.offsets)
        self.outputs = len(self.offsets)
        self.threshold: float | None = None  # chosen on validation
        if cfg.finetune.task_labels:
            raise GtgmError("finetune.task_labels names classes; an EM (affinity) task has neuron ids, not classes")

    def weigh_classes(self, train: list[Part]) -> None:
        """Nothing to count: affinity classes are balanced within each batch (``em.balance``)."""

    def loss(self, logits: torch.Tensor, label: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        target, mask = affinities_torch(label[:, 0], self.offsets)
        return affinity_loss(logits, target, mask, self.em.loss, self.em.balance)

    def meta(self) -> dict[str, Any]:
        e = self.em
        return {
            "task": self.name,
            "num_classes": self.outputs,
            "labels": {},
            "em": {"offsets": e.offsets, "threshold": self.threshold, "agglomeration": e.agglomeration},
        }

    def baseline(self, parts: list[Part], thresholds: list[float] | None = None) -> dict[str, Any]:
        """The trivial baseline on ``parts``: raw image > t, connected components (see
        :func:`~gtgm.em.agglomerate.threshold_baseline`), scored at the best ``t`` on these parts (an oracle
        choice, in the baseline's favour)."""
        thresholds = thresholds or [round(0.05 * k, 2) for k in range(4, 17)]
        per_t: dict[float, list[dict[str, float]]] = {t: [] for t in thresholds}
        for p in parts:
            image, label = part_arrays(self.cache, p)
            for t in thresholds:
                seg = threshold_baseline(image[0], t)
                per_t[t].append(neuron_scores(seg, label.astype(np.int64), border=self._border(p)))
        mean = {t: {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} for t, rows in per_t.items()}
        best = min(thresholds, key=lambda t: mean[t]["voi"])
        return {"threshold": best, **mean[best]}

    def _border(self, p: Part) -> float:
        """``em.border_nm`` in in-plane voxels of the part's volume."""
        return self.em.border_nm / float(self.cache.entries[p.case]["spacing"][0])

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Take the validation-chosen threshold back from a ``best.pt``."""
        self.threshold = ckpt["em"]["threshold"]

    def segment(self, affs: np.ndarray, thresholds: list[float]) -> list[np.ndarray]:
        return segment(affs, thresholds, self.em.agglomeration, self.em.offsets)

    def score(self, model: torch.nn.Module, parts: list[Part], device: Any, final: bool = False) -> dict[str, Any]:
        """VOI / ARAND / CREMI per part at each threshold (validation) or at the chosen one (``final``)."""
        f = self.cfg.finetune
        thresholds = [self.threshold] if final and self.threshold is not None else list(self.em.thresholds)
        per_t: dict[float, list[dict[str, Any]]] = {t: [] for t in thresholds}
        for p in parts:
            image, label = part_arrays(self.cache, p)
            affs = predict_array(model, image, f.patch_size, f.sw_overlap, f.sw_batch_size, device, "affinities")
            for t, seg in zip(thresholds, self.segment(affs, thresholds)):
                scores = neuron_scores(seg, label.astype(np.int64), border=self._border(p))
                per_t[t].append({"case": self.cache.entries[p.case]["id"], **scores})
        mean = {
            t: {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "case"} for t, rows in per_t.items()
        }
        best = min(thresholds, key=lambda t: mean[t]["voi"])
        if not final:
            self.threshold = best
        return {
            "cases": per_t[best],
            "threshold": best,
            "by_threshold": {f"{t:g}": m for t, m in mean.items()},
            "summary": mean[best],
            "main": -mean[best]["voi"],
            "metric": self.metric,
            **mean[best],
        }


def _instance_labels(meta: dict[str, Any]) -> bool:
    """CREMI ``neuron_ids`` labels, or more distinct labels than any class map has (see preprocess)."""
    key = (meta.get("label_input") or {}).get("key") or ""
    return key.endswith("neuron_ids") or meta.get("label_values") is None and meta.get("num_labels", 0) > 0


def _check_declared(cache: VolumeCache, labels: dict[str, str], metas: list[dict[str, Any]]) -> None:
    """Label values must be among those ``dataset.json`` declares (an undeclared 9 would add classes 8-9)."""
    if not labels:
        return
    declared = {int(k) for k in labels}
    for i, meta in enumerate(metas):
        extra = sorted(set(meta.get("label_values") or []) - declared)
        if extra:
            raise GtgmError(
                f"{cache.root}: case {cache.entries[i]['id']} has label values {extra} that dataset.json does not "
                f"declare (labels: {labels}); fix the label map or declare them"
            )


def _check_labels(cache: VolumeCache, task_labels: dict[str, str], labels: dict[str, str]) -> None:
    """A preset names its task's labels: refuse data whose label names differ."""
    if task_labels and labels and {str(k): v for k, v in task_labels.items()} != {str(k): v for k, v in labels.items()}:
        raise GtgmError(f"{cache.root}: labels {labels} differ from the preset's task_labels {task_labels}")
