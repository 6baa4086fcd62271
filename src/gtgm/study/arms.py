"""The study's arms: where each arm's encoder comes from, and the pretraining runs the study makes.

A pretraining arm is a pair (objective, caption set) (:class:`Arm`, :data:`PRETRAIN_ARMS`); two arms compared in the
text-premise study differ in one of the two only (``region_text`` / ``region_oracle``: the caption set;
``region_text`` / ``mae_dense`` / ``region_facts``: the objective, on the same crops).

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
* ``mae_dense``: masked image modelling at the fine-tuning field of view, on the region arms' crops
  (``pretrain.objective=mim_dense``): the image-only ceiling a region arm must match.
* ``position_text`` / ``intensity_text``: GTGM on content-control captions that keep only the position words or only
  the intensity clauses (``caption.content``; their files in ``study.caption_sets.position`` / ``.intensity``): what
  part of the text helps.
* ``oracle_text``: GTGM on captions that name the organs in each box with their shares, from the generator's labels
  of the unlabelled phantoms (:mod:`gtgm.text.captioners.oracle`; ``study.caption_sets.oracle``): the upper bound of
  what any captioner could give.
* ``region_text``: region-level alignment at the fine-tuning field of view (:mod:`gtgm.train.regions`): the
  encoder sees a whole fine-tuning crop, each caption box in it is pooled and contrasted against the whole caption
  bank (same-content captions masked). Batch 4 crops of the CT preset's 64 × 64 × 32 hold as many voxels per step
  as gtgm's 8 boxes of 32³ in two views (the batch is sized for that preset: a larger crop needs a smaller batch).
* ``region_oracle``: the same objective on the oracle captions: the caption set alone differs from ``region_text``.
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

from dataclasses import dataclass
from pathlib import Path

from gtgm.config import STUDY_ARMS, Config, with_overrides
from gtgm.errors import GtgmError
from gtgm.fsutil import read_json
from gtgm.schemas import RESERVED_JSON
from gtgm.study.reuse import check_reuse
from gtgm.train.objectives import objective_of


@dataclass(frozen=True)
class Arm:
    """A pretraining arm: ``objective`` (overrides that choose ``pretrain.objective`` and its loss terms: a row of
    :data:`gtgm.train.objectives.OBJECTIVES`) × ``captions`` (the caption set: ``describe`` is the study's
    ``--captions`` / ``--text-cache``; any other name is read from ``study.caption_sets``). No arm has code of its
    own: two arms differ in their objective, their caption set, or both."""

    objective: tuple[str, ...] = ()
    captions: str = "describe"


REGION = ("pretrain.objective=region", "pretrain.batch_size=4")
CROPS = ("pretrain.batch_size=4",)  # the crop objectives' batch: 4 crops of the CT preset's 64 x 64 x 32
PRETRAIN_ARMS: dict[str, Arm] = {
    "gtgm": Arm(),
    "gtgm_vicreg": Arm(("loss.image_image=vicreg", "loss.image_weight=0.008")),
    "image_only": Arm(("loss.text_weight=0",)),
    "text_only": Arm(("loss.image_weight=0",)),
    "shuffled_text": Arm(("pretrain.text_control=shuffled",)),
    "mae": Arm(("pretrain.objective=mim",)),
    "mae_dense": Arm(("pretrain.objective=mim_dense", *CROPS)),
    "position_text": Arm(captions="position"),
    "intensity_text": Arm(captions="intensity"),
    "oracle_text": Arm(captions="oracle"),
    "region_text": Arm(REGION),
    "region_oracle": Arm(REGION, "oracle"),
    "region_facts": Arm(("pretrain.objective=region_facts", *CROPS)),
}
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
    ("region_oracle", "scratch"),
    ("region_oracle", "region_text"),
    ("region_text", "mae_dense"),
    ("region_oracle", "mae_dense"),
    ("mae_dense", "scratch"),
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
    spec = PRETRAIN_ARMS[arm]
    c = with_overrides(cfg, list(spec.objective))
    if spec.captions != "describe":
        paths = cfg.study.caption_sets.get(spec.captions, [])
        if len(paths) != 2:
            raise GtgmError(
                f"study arm '{arm}' needs the {spec.captions} captions and their text cache: study.caption_sets."
                f"{spec.captions}=[CAPTIONS.jsonl, TEXT_CACHE] (gtgm caption ... caption.content={spec.captions}, "
                "then gtgm embed-text)"
            )
        _check_caption_set(arm, spec.captions, paths[0])
        c = with_overrides(c, values={"pretrain.captions": paths[0], "pretrain.text_cache": paths[1]})
    if objective_of(c).samples == "crops" and not c.pretrain.region_crop:  # recorded, so that reuse compares it
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


def _check_caption_set(arm: str, name: str, path: str) -> None:
    """A caption set's captions must come from its variant of the describe captioner (``describe:<name>``): full
    captions there would make e.g. the oracle arm the describe arm under another name."""
    from gtgm.text.captions import read_captions

    want = f"describe:{name}"
    made_by = {str(r.get("captioner")) for r in read_captions(path)}
    if made_by != {want}:
        raise GtgmError(f"{path}: captions by {sorted(made_by)}, but study arm '{arm}' needs '{want}' captions only")
