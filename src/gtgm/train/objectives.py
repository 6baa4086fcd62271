"""The pretraining objectives in one table: ``pretrain.objective`` names a row of :data:`OBJECTIVES`.

Each row says which samples the objective trains on, what they are matched to, which model and loss it builds
(every loss lives in :mod:`gtgm.train.losses`) and what the run exports. :class:`~gtgm.train.pretrain.Pretrainer`
reads the row and holds no branch of its own per objective.

========================  =========  =======  ========================================================  ==========
objective                 samples    target   loss                                                      study arms
========================  =========  =======  ========================================================  ==========
``gtgm``                  boxes      text     CLIP(v1, t) + CLIP(v2, t) + Barlow Twins / VICReg(v1, v2)  gtgm, ...
``mim``                   boxes      image    masked reconstruction of 32³ boxes                       mae
``mim_dense``             crops      image    masked reconstruction at the fine-tuning field of view   mae_dense
``region``                crops      text     each region against the whole caption bank               region_*
``region_facts``          crops      facts    each region regresses its box's measured facts           region_facts
========================  =========  =======  ========================================================  ==========

*boxes*: :class:`~gtgm.train.pairs.CaptionPairs`, two augmented views of one caption box (``pretrain.patch_size``).
*crops*: :class:`~gtgm.train.regions.RegionCrops`, a crop of ``pretrain.region_crop`` (default: the fine-tuning
patch) placed on the caption grid, with the caption boxes inside it as regions. Caption boxes also place the crops
of the image-only ``mim_dense``, so that every crop-based arm sees the same voxels and only its target differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from gtgm.config import Config
from gtgm.errors import GtgmError
from gtgm.models.mim import build_mim_model
from gtgm.models.regions import build_region_model
from gtgm.models.vlp import build_model
from gtgm.train.losses import GTGMLoss, MaskedReconstructionLoss, RegionLoss
from gtgm.train.regions import RegionCrops


@dataclass(frozen=True)
class Objective:
    """One row of the table: ``samples`` ("boxes" | "crops"), ``target`` ("text" | "image" | "facts"), the model and
    loss builders (``(cfg, samples, world) -> module``), ``heads``: projection heads exported for ``gtgm query``,
    ``text_controls``: ``pretrain.text_control`` and ``loss.learnable_temperature`` apply."""

    samples: str
    target: str
    model: Callable[[Config, Any], nn.Module]
    loss: Callable[[Config, Any, int], nn.Module]
    heads: bool = False
    text_controls: bool = False

    @property
    def retrieval(self) -> bool:
        """Held-out image -> text retrieval is logged (the model maps images into the text space)."""
        return self.target == "text"

    @property
    def ddp_kwargs(self) -> dict[str, Any]:
        """The region model's caption bank is a buffer every process builds alike: not re-sent at each step."""
        return {"broadcast_buffers": False} if self.samples == "crops" and self.target == "text" else {}


def _gtgm_model(cfg: Config, samples: Any) -> nn.Module:
    return build_model(cfg.model, samples.text_cache.index["dim"])


def _gtgm_loss(cfg: Config, samples: Any, world: int) -> nn.Module:
    return GTGMLoss(cfg.loss, gather=world > 1, text_views=1 if cfg.augment.caption_consistent else 2)


def _mim_model(cfg: Config, samples: Any) -> nn.Module:
    image = "image" if isinstance(samples, RegionCrops) else "view2"
    return build_mim_model(cfg.model, cfg.pretrain.mask_ratio, cfg.pretrain.mask_block, image)


def _mim_loss(cfg: Config, samples: Any, world: int) -> nn.Module:
    return MaskedReconstructionLoss()


def _region_model(cfg: Config, samples: Any) -> nn.Module:
    return build_region_model(cfg.model, samples.target, samples.dim, getattr(samples, "bank", None))


def _region_loss(cfg: Config, samples: Any, world: int) -> nn.Module:
    return RegionLoss(cfg.loss.temperature, getattr(samples, "content", None))


OBJECTIVES: dict[str, Objective] = {
    "gtgm": Objective("boxes", "text", _gtgm_model, _gtgm_loss, heads=True, text_controls=True),
    "mim": Objective("boxes", "image", _mim_model, _mim_loss),
    "mim_dense": Objective("crops", "image", _mim_model, _mim_loss),
    "region": Objective("crops", "text", _region_model, _region_loss),
    "region_facts": Objective("crops", "facts", _region_model, _region_loss),
}


def objective_of(cfg: Config) -> Objective:
    """The row of ``pretrain.objective``; settings the objective does not implement are refused, not ignored."""
    name = cfg.pretrain.objective
    if name not in OBJECTIVES:
        raise GtgmError(f"pretrain.objective={name} is not one of {sorted(OBJECTIVES)}")
    row = OBJECTIVES[name]
    if not row.text_controls and (cfg.pretrain.text_control != "none" or cfg.loss.learnable_temperature):
        raise GtgmError(
            f"pretrain.objective={name} has no pretrain.text_control and no loss.learnable_temperature "
            "(set them to none / false)"
        )
    return row
