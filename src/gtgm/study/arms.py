"""The study's arms: where each arm's encoder comes from, and the pretraining runs the study makes.

* ``scratch``: random initialisation.
* ``pretrained``: the encoder given to ``gtgm study --pretrained``.
* ``supervised``: the positive control — the encoder of a segmenter trained with every labelled training case of
  the group (:mod:`gtgm.study.supervised`); if it does not beat scratch, the protocol cannot see a gain.
* ``gtgm``: image-text (CLIP) + image-image (Barlow Twins / VICReg) pretraining, as configured.
* ``gtgm_vicreg``: the same with VICReg as the image-image term (``loss.image_image=vicreg``) at
  ``loss.image_weight=0.008``, the GTGM variant for small batches: at batch 8 Barlow Twins' 128 × 128
  cross-correlation has rank ≤ 7, so its decorrelation term has a floor; VICReg's variance hinge and covariance
  term do not need the batch to span the projector. The weight makes the term start at the size of
  Barlow Twins' (0.01 × its value) on the CPU preset's first batches: mean 62.6 vs 79.1 over 8 batches of the
  label-limited corpus, so 0.01 × 62.6 / 79.1 ≈ 0.008 (``benchmarks/vicreg_weight.py``).
* ``image_only``: the same run without the text term (``loss.text_weight=0``): self-supervised only.
* ``text_only``: the same run without the image-image term (``loss.image_weight=0``).
* ``mae``: masked image modelling on the same boxes (:mod:`gtgm.models.mim`): the strong image-only control.
* ``position_text`` / ``intensity_text``: GTGM on content-control captions that keep only the position words or only
  the intensity clauses (``caption.content``; their files in ``study.caption_sets``): what part of the text helps.
* ``oracle_text``: GTGM on captions that name the organs in each box with their shares, from the generator's labels
  of the unlabelled phantoms (:mod:`gtgm.text.captioners.oracle`): the upper bound of what any captioner could give.
* ``region_text``: region-level alignment at the fine-tuning field of view (:mod:`gtgm.train.regions`): the
  encoder sees a whole fine-tuning crop, each caption box in it is pooled and contrasted against the whole caption
  bank (same-content captions masked). Batch 4 crops of the CT preset's 64 × 64 × 32 hold as many voxels per step
  as gtgm's 8 boxes of 32³ in two views (the batch is sized for that preset: a larger crop needs a smaller batch).
* ``region_facts``: its control: the same crops and pooled features regress the boxes' measured facts, no text.
* ``shuffled_text``: GTGM with every box paired with another box's caption (``pretrain.text_control=shuffled``):
  the control that shows whether the captions' content, not the extra loss, brings a gain.

The study pretrains each arm into ``STUDY/pretrain/<arm>_seed<k>/`` on ``pretrain.cache`` (default: the
fine-tuning cache), ``pretrain.captions`` and ``pretrain.text_cache``, with ``study.pretrain_seeds``; the
i-th fine-tuning seed uses pretraining seed ``pretrain_seeds[i mod len]``. All arms get the same views
(:class:`~gtgm.data.augment.TwoViews`: a caption-consistent view 1, a view 2 with every augmentation except,
for CT and MRI, mirrors and quarter turns), so ``image_only``
differs from ``gtgm`` only in its loss; its view 1 is milder than a self-supervised recipe would choose alone.
Pretraining never sees the fine-tuning validation and test regions (:mod:`gtgm.train.reserved`). Finished runs
are reused only when made with the same settings, split and encoder file.
"""

from __future__ import annotations

from pathlib import Path

from gtgm.config import STUDY_ARMS, Config, with_overrides
from gtgm.errors import GtgmError
from gtgm.fsutil import read_json
from gtgm.schemas import RESERVED_JSON
from gtgm.study.reuse import check_reuse

PRETRAIN_ARMS: dict[str, list[str]] = {
    "gtgm": [],
    "gtgm_vicreg": ["loss.image_image=vicreg", "loss.image_weight=0.008"],
    "image_only": ["loss.text_weight=0"],
    "text_only": ["loss.image_weight=0"],
    "shuffled_text": ["pretrain.text_control=shuffled"],
    "mae": ["pretrain.objective=mim"],
    "position_text": [],  # GTGM on captions of study.caption_sets.position_text (caption.content=position)
    "intensity_text": [],  # ... of study.caption_sets.intensity_text (caption.content=intensity)
    "oracle_text": [],  # ... of study.caption_sets.oracle_text (caption.content=oracle: the upper bound)
    "region_text": ["pretrain.objective=region", "pretrain.batch_size=4"],
    "region_facts": ["pretrain.objective=region_facts", "pretrain.batch_size=4"],
}
CAPTION_SET_ARMS = ("position_text", "intensity_text", "oracle_text")
ARMS = STUDY_ARMS
# (arm, baseline) pairs the report compares, when both arms ran; the positive control first
COMPARISONS = [
    ("supervised", "scratch"),
    ("pretrained", "scratch"),
    ("gtgm", "scratch"),
    ("gtgm_vicreg", "scratch"),
    ("gtgm_vicreg", "gtgm"),
    ("gtgm_vicreg", "mae"),
    ("region_text", "scratch"),
    ("region_text", "region_facts"),
    ("region_text", "gtgm"),
    ("region_text", "gtgm_vicreg"),
    ("gtgm", "image_only"),
    ("gtgm", "shuffled_text"),
    ("gtgm", "mae"),
    ("gtgm", "position_text"),
    ("gtgm", "intensity_text"),
    ("gtgm", "oracle_text"),
    ("oracle_text", "scratch"),
    ("mae", "scratch"),
    ("image_only", "scratch"),
    ("text_only", "scratch"),
    ("shuffled_text", "scratch"),
    ("region_facts", "scratch"),
]


def arm_encoder(
    cfg: Config,
    arm: str,
    pretrain_seed: int,
    given: str,
    root: Path,
    progress: bool = False,
    group: str = "",
    overrides: list[str] = (),
) -> str:
    """The ``finetune.pretrained`` path of ``arm`` ('' = scratch); pretraining arms (and the positive control,
    which is trained on ``group`` with ``overrides``) use ``pretrain_seed``."""
    if arm == "scratch":
        return ""
    if arm == "pretrained":
        return given
    if arm == "supervised":
        from gtgm.study.supervised import supervised_encoder

        return str(supervised_encoder(cfg, group, pretrain_seed, root, overrides, progress))
    return str(pretrain_arm(cfg, arm, pretrain_seed, root, progress) / "encoder.pt")


def check_arm_inputs(cfg: Config, arms: set[str], given: str) -> None:
    """Before any run: the inputs every arm needs are there (an encoder file; captions and text cache)."""
    if "pretrained" in arms and not (given and Path(given).is_file()):
        raise GtgmError(f"study arm 'pretrained' needs an encoder file: give --pretrained ENCODER.pt (got {given!r})")
    for arm in sorted(arms & set(PRETRAIN_ARMS)):
        arm_config(cfg, arm, 0, Path(cfg.study.out))


def arm_config(cfg: Config, arm: str, seed: int, root: Path) -> Config:
    """The pretraining configuration of ``arm`` with ``seed``, writing to ``root/pretrain/<arm>_seed<seed>``."""
    c = with_overrides(cfg, PRETRAIN_ARMS[arm])
    if arm in CAPTION_SET_ARMS:
        paths = cfg.study.caption_sets.get(arm, [])
        if len(paths) != 2:
            content = arm.removesuffix("_text")
            raise GtgmError(
                f"study arm '{arm}' needs its captions and text cache: study.caption_sets.{arm}=[CAPTIONS.jsonl, "
                f"TEXT_CACHE] (gtgm caption ... caption.content={content}, then gtgm embed-text)"
            )
        _check_caption_set(arm, paths[0])
        c = with_overrides(c, values={"pretrain.captions": paths[0], "pretrain.text_cache": paths[1]})
    if c.pretrain.objective.startswith("region") and not c.pretrain.region_crop:  # recorded, so that reuse compares it
        c = with_overrides(c, values={"pretrain.region_crop": list(c.finetune.patch_size)})
    out = str(root / "pretrain" / f"{arm}_seed{seed}")
    c = with_overrides(
        c, values={"seed": seed, "pretrain.out": out, "pretrain.cache": c.pretrain.cache or c.finetune.cache}
    )
    for key in ("captions", "text_cache"):
        if not getattr(c.pretrain, key):
            raise GtgmError(
                f"study arm '{arm}' pretrains its encoder and needs pretrain.{key} (give --{key.replace('_', '-')})"
            )
    return c


def pretrain_arm(cfg: Config, arm: str, seed: int, root: Path, progress: bool = False) -> Path:
    """Run (or reuse, or resume) the pretraining of ``arm``; returns its run folder."""
    from gtgm.train.pretrain import pretrain

    c = arm_config(cfg, arm, seed, root)
    out = Path(c.pretrain.out)
    check_reuse(out, c, ("seed", "model", "loss", "augment", "pretrain", "text"), ignore=("pretrain.out",))
    check_reserved(out, c)
    if (out / "encoder.pt").is_file():
        return out
    if progress:
        print(f"[study] pretraining arm {arm} (seed {seed}) -> {out}", flush=True)
    pretrain(c, resume=(out / "checkpoints" / "last.pt").is_file(), progress=progress)
    return out


def check_reserved(out: Path, cfg: Config) -> None:
    """A pretraining run is reused only if it kept out every fine-tuning validation / test region the study's groups
    reserve now (another ``finetune.split_seed`` or fractions would let test voxels in); keeping out more is fine."""
    from gtgm.data.patches import VolumeCache
    from gtgm.train.reserved import reserved_regions

    path = out / "reserved.json"
    if not path.is_file():
        return
    now = reserved_regions(VolumeCache(cfg.finetune.cache or cfg.pretrain.cache), cfg)["regions"]
    kept_out = read_json(path, schema=RESERVED_JSON)["regions"]
    if any(r not in kept_out for r in now if r["group"] in cfg.study.groups):
        raise GtgmError(
            f"{out} was pretrained without the fine-tuning validation / test regions of another split; "
            "delete it, or choose another study output folder"
        )


def _check_caption_set(arm: str, path: str) -> None:
    """A content-control arm's captions must come from its variant of the describe captioner (``describe:<content>``):
    full captions there would make the control the gtgm arm under another name."""
    from gtgm.text.captions import read_captions

    want = f"describe:{arm.removesuffix('_text')}"
    made_by = {str(r.get("captioner")) for r in read_captions(path)}
    if made_by != {want}:
        raise GtgmError(f"{path}: captions by {sorted(made_by)}, but study arm '{arm}' needs '{want}' captions only")
