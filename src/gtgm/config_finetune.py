"""Configuration sections of fine-tuning and the study: ``finetune``, ``seg_augment``, ``em`` and ``study``.

Part of :mod:`gtgm.config`, which re-exports every name here; import them from there.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Literal

from gtgm.config_checks import check_ranges
from gtgm.errors import ConfigError


@dataclass
class FinetuneConfig:
    """``gtgm finetune``: segmentation from a (pre)trained encoder with a share of the labels."""

    cache: str = ""  # preprocessed cache (labeled cases)
    group: str | None = None  # cache group to use (e.g. ct_phantom); None = every labeled case
    out: str = "runs/finetune"
    pretrained: str = ""  # encoder.pt from gtgm pretrain; empty = from scratch
    task_labels: dict[str, str] = field(default_factory=dict)  # preset's label names; checked against the data
    task_channels: list[str] = field(default_factory=list)  # preset's input channels (documentation + check)
    task: Literal["segmentation", "em"] = "segmentation"  # em: affinities + agglomeration (see the em section)
    label_ratio: float = 1.0  # share of training cases (case split) or of labelled slices (region split)
    split_seed: int = 0  # chooses test / val / train cases and the labelled subset; `seed` only initialises
    label_slices: Literal["spread", "block"] = "spread"  # region split: evenly spread z slices, or a central block
    slices_per_case: int = 0  # case split: label only this many axial slices of each training case (0 = all)
    split: Literal["auto", "cases", "region"] = "auto"  # auto: region when there is a single labeled case
    val_fraction: float = 0.15
    test_fraction: float = 0.3
    test_cases: list[str] = field(default_factory=list)  # case split: these ids are the test cases (fractions unused)
    val_cases: list[str] = field(default_factory=list)  # ... and these the validation ones (may stay empty)
    train_cases: list[str] = field(default_factory=list)  # ... and these the training ones (empty: all the others)
    region_axis: int = 0  # region split: train | val | test slabs along this axis (0 = left-right)
    region_bounds: list[float] = field(
        default_factory=lambda: [0.45, 0.55]
    )  # train < a <= val < b <= test; a > b: reversed
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])
    batch_size: int = 4
    steps: int = 200
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: nnU-Net's (momentum 0.99, Nesterov; nnU-Net: lr 0.01, wd 3e-5)
    schedule: Literal["cosine", "poly"] = (
        "cosine"  # after the warm-up: cosine to 0, or nnU-Net's (1 - step / steps)^0.9
    )
    warmup_steps: int = 10
    encoder_lr_scale: float = 1.0  # a pretrained encoder's lr = lr * this (keeps its features); scratch: lr
    freeze_encoder_steps: int = 0  # encoder frozen for the first K steps
    foreground_ratio: float = 0.5
    class_weight_power: float = 0.0  # CE weight of class k ∝ (share of k in the training labels)^-p; 0 = none
    augment: bool = False  # random flips + in-plane quarter turns of training patches (EM presets: on)
    # the old per-class intensity shift U(-a, a) inside each label (normalised units), kept to reproduce the real-CT
    # attribution table's baseline; seg_augment's contrast-phase augmentation replaces it
    class_shift: float = 0.0
    # where a sampled foreground voxel lands in its patch: uniform, centre, or auto (uniform with augment, as before)
    fg_position: Literal["uniform", "centre", "auto"] = "auto"
    case_weights: Literal["uniform", "voxels"] = "uniform"  # draw cases uniformly, or by their usable voxels
    # > 0: the synthetic cases (marked in the cache, e.g. gtgm.data.phantom_mix's phantoms) get this share of the draws
    # and the real ones the rest, each side keeping its case_weights; 0, or no synthetic training case: no rescaling
    synthetic_share: float = 0.0
    body_crop: bool = False  # CT: train and infer inside the body's box (+ margin); background outside the body
    body_margin_mm: float = 10.0
    single_component: list[str] = field(default_factory=list)  # classes kept as their largest component, a priori
    val_every: int = 50
    sw_overlap: float = 0.25
    sw_batch_size: int = 4
    postprocess: bool = True  # keep each class's largest component where that raises validation Dice (nnU-Net)
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    num_workers: int = 0
    checkpoint_every: int = 100
    snapshot_every: int = 0  # > 0: the model every N steps as snapshots/step_N.pt (anytime curves), 0: none
    log_every: int = 10
    tensorboard: bool = False

    def __post_init__(self) -> None:
        check_ranges(
            "finetune",
            self,
            at_least_one=("batch_size", "steps", "val_every", "checkpoint_every", "log_every", "sw_batch_size"),
            ratios=("label_ratio",),
            sizes=("patch_size",),
            non_negative=("class_shift", "slices_per_case", "body_margin_mm", "snapshot_every"),
        )
        if not 0 <= self.synthetic_share < 1:
            raise ConfigError(f"config key 'finetune.synthetic_share': must lie in [0, 1), got {self.synthetic_share}")


@dataclass
class SegAugmentConfig:
    """Fine-tuning augmentation beyond flips (:mod:`gtgm.train.ctaug`); every probability 0 = off.

    Contrast phase (CT): each class named in ``enhancing`` (its unenhanced HU) keeps a share U(``phase_keep``) of its
    enhancement (patch median − unenhanced HU, if positive) or of its ``phase_peak`` (HU above the unenhanced value,
    textbook; only classes of ``enhancing``), whichever is larger, shifted by U(±``phase_jitter``) HU, its internal
    contrast scaled by U(``phase_compress``); the change fades to 0 over ``phase_ramp`` voxels inside the label, so no
    step falls on a label boundary and no voxel of another class (lungs, bone) changes. Intensity (CT, in HU,
    nnU-Net's set, each op with ``intensity_prob``): contrast about 40 HU, brightness, gamma over [-200, 300] HU,
    Gaussian noise, blur. Spatial (any modality): a rotation of U(±``rotate_deg``) about each axis and a scale
    U(``scale``), with ``spatial_prob``; no mirroring (left and right differ).
    """

    enhancing: dict[str, float] = field(default_factory=dict)
    phase_peak: dict[str, float] = field(default_factory=dict)
    phase_prob: float = 0.0
    phase_keep: list[float] = field(default_factory=lambda: [0.0, 1.0])
    phase_jitter: float = 15.0
    phase_compress: list[float] = field(default_factory=lambda: [0.5, 1.0])
    phase_ramp: float = 2.0
    intensity_prob: float = 0.0
    contrast: list[float] = field(default_factory=lambda: [0.75, 1.25])
    brightness_hu: float = 25.0
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.5])
    noise_hu: float = 25.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])
    spatial_prob: float = 0.0
    rotate_deg: float = 15.0
    scale: list[float] = field(default_factory=lambda: [0.85, 1.15])

    def __post_init__(self) -> None:
        for key in ("phase_prob", "intensity_prob", "spatial_prob"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"config key 'seg_augment.{key}': a probability in [0, 1], got {getattr(self, key)}")
        for key in ("phase_keep", "phase_compress", "contrast", "gamma", "blur_sigma", "scale"):
            value = getattr(self, key)
            positive = key in ("gamma", "scale")
            low_ok = len(value) == 2 and (value[0] > 0 if positive else value[0] >= 0)
            if not low_ok or value[0] > value[1]:
                bound = "0 < low <= high" if positive else "0 <= low <= high"
                raise ConfigError(f"config key 'seg_augment.{key}': needs [low, high] with {bound}, got {value}")
        check_ranges(
            "seg_augment", self, non_negative=("phase_jitter", "phase_ramp", "brightness_hu", "noise_hu", "rotate_deg")
        )
        for name, peak in self.phase_peak.items():
            number = isinstance(peak, (int, float)) and not isinstance(peak, bool) and math.isfinite(peak)
            if name not in self.enhancing or not number or peak < 0:
                raise ConfigError(
                    f"config key 'seg_augment.phase_peak': '{name}: {peak}' needs a class of seg_augment.enhancing "
                    f"and a peak enhancement >= 0 HU"
                )


@dataclass
class EMConfig:
    """EM neuron segmentation (``finetune.task=em``): affinity targets, loss, agglomeration, evaluation."""

    offsets: list[list[int]] = field(default_factory=lambda: [[-1, 0, 0], [0, -1, 0], [0, 0, -1]])  # (z, y, x)
    loss: Literal["bce", "mse"] = "bce"
    balance: bool = True  # weight connected and cut affinities equally in each batch
    agglomeration: Literal["waterz", "watershed"] = "waterz"
    thresholds: list[float] = field(default_factory=lambda: [round(0.05 * k, 2) for k in range(1, 19)])
    border_nm: float = 0.0  # evaluation: ignore ground truth this close to a boundary (CREMI: 25)


STUDY_ARMS = (
    *("scratch", "pretrained", "supervised", "gtgm", "gtgm_vicreg", "image_only", "text_only", "shuffled_text", "mae"),
    *("position_text", "intensity_text", "oracle_text", "region_text", "region_oracle", "region_facts", "mae_dense"),
)


# fine-tuning settings every arm of a study shares (what is evaluated and on which labels): no per-arm override
SHARED_FINETUNE_KEYS = (
    *("cache", "group", "task", "split", "split_seed", "test_cases", "val_cases", "val_fraction", "test_fraction"),
    *("label_ratio", "label_slices", "slices_per_case", "region_axis", "region_bounds", "pretrained", "out"),
    "train_cases",
)


@dataclass
class StudyConfig:
    """``gtgm study``: arms x label ratios x seeds (arms: see gtgm.study.arms)."""

    arms: list[Literal[STUDY_ARMS]] = field(default_factory=lambda: ["scratch", "pretrained"])
    pretrain_seeds: list[int] = field(default_factory=lambda: [0])  # arms the study pretrains: one run per seed
    probe: bool = False  # frozen-encoder probes (gtgm.study.probe) of every arm's encoder, in the report
    ratios: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    groups: list[str] = field(default_factory=lambda: ["ct_phantom", "mni152_tissue"])
    group_presets: dict[str, str] = field(default_factory=dict)  # group -> a preset whose fine-tuning recipe it takes
    group_overrides: dict[str, list[str]] = field(default_factory=dict)  # group -> ["finetune.task=em", ...]
    arm_overrides: dict[str, list[str]] = field(default_factory=dict)  # arm -> its fine-tuning recipe (after groups)
    supervised_overrides: list[str] = field(default_factory=list)  # the positive control's source segmenter run
    # caption set (oracle, position, intensity) -> [captions, text cache]; "describe" is the study's --captions
    caption_sets: dict[str, list[str]] = field(default_factory=dict)
    # arm -> {recipe name: fine-tuning overrides}: candidate recipes, each run for every seed in this folder; the one
    # with the higher mean best validation score is the arm's (gtgm.study.select); the test is read for it only
    recipes: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # a reading rule fixed before the run, applied by the report (gtgm.study.select.READING_RULES); "" = none
    rule: Literal["", "text_premise"] = ""
    curve_steps: list[int] = field(default_factory=lambda: [50, 100, 150])  # report: validation Dice at these steps
    readout: bool = False  # also a frozen-encoder readout of every arm (decoder only), at the smallest label ratio
    out: str = "runs/study"

    def __post_init__(self) -> None:
        for key in ("arms", "ratios", "seeds", "groups", "pretrain_seeds"):
            if not getattr(self, key):
                raise ConfigError(f"config key 'study.{key}': needs at least one entry")
        for key in ("arm_overrides", "recipes"):
            unknown = sorted(set(getattr(self, key)) - set(STUDY_ARMS))
            if unknown:
                raise ConfigError(f"config key 'study.{key}': unknown arm(s) {unknown}")
        recipes = [(f"arm_overrides.{arm}", items) for arm, items in self.arm_overrides.items()]
        for arm, named in self.recipes.items():
            if not isinstance(named, dict) or not named:
                raise ConfigError(f"config key 'study.recipes.{arm}': a mapping of recipe name -> [overrides]")
            bad = [name for name in named if not re.fullmatch(r"[A-Za-z0-9_-]+", str(name))]
            if bad:  # a recipe's name is its run folder
                raise ConfigError(
                    f"config key 'study.recipes.{arm}': recipe names are letters, digits, _ and -: {bad[0]!r}"
                )
            recipes += [(f"recipes.{arm}.{name}", items) for name, items in named.items()]
        for where, items in recipes:
            _check_recipe(where, items)
        both = sorted(set(self.recipes) & {a for a, items in self.arm_overrides.items() if items})
        if both:
            raise ConfigError(
                f"config key 'study.recipes.{both[0]}': the arm has study.arm_overrides too (they would apply under "
                "every candidate); put them in each candidate recipe, or clear them with "
                f"study.arm_overrides.{both[0]}=[]"
            )
        stale = sorted(k for k in self.caption_sets if k.endswith("_text"))
        if stale:
            raise ConfigError(
                f"config key 'study.caption_sets': keys are caption sets (oracle, position, intensity), not arms: "
                f"{stale[0]} -> {stale[0].removesuffix('_text')}"
            )
        if any(not 0 < r <= 1 for r in self.ratios):
            raise ConfigError(f"config key 'study.ratios': label ratios must lie in (0, 1], got {self.ratios}")


def _check_recipe(where: str, items: list[str]) -> None:
    """A per-arm recipe changes fine-tuning recipe keys only: arms share their data, split, labels and model."""
    keys = [str(item).split("=", 1)[0].strip() for item in items]
    bad = [k for k in keys if not k.startswith("finetune.") or k.split(".", 1)[1] in SHARED_FINETUNE_KEYS]
    if bad:
        raise ConfigError(
            f"config key 'study.{where}': {bad[0]} is not a fine-tuning recipe setting (arms "
            "share their data, split, labelled subset and model; only finetune.* recipe keys may differ)"
        )
