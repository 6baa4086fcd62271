"""Captioner backends behind one interface (:class:`~gtgm.text.captioners.base.Captioner`)."""

from __future__ import annotations

from gtgm.config import CaptionConfig
from gtgm.data.boxes import Patch
from gtgm.errors import ConfigError
from gtgm.text.captioners.base import Captioner


def create_captioner(cfg: CaptionConfig, device: str = "auto") -> Captioner:
    """The backend named by ``cfg.captioner``: describe (offline default), hf, or openai."""
    if cfg.content != "full" and cfg.captioner != "describe":
        raise ConfigError(
            f"caption.content={cfg.content} is a variant of the describe captioner, not of {cfg.captioner}"
        )
    if cfg.captioner == "describe" and cfg.content == "oracle":
        from gtgm.text.captioners.oracle import OracleCaptioner

        return OracleCaptioner(cfg.oracle_cache)
    if cfg.captioner == "describe":
        from gtgm.text.captioners.describe import DescribeCaptioner

        return DescribeCaptioner(cfg.content)
    if cfg.captioner == "hf":
        from gtgm.text.captioners.hf import HFCaptioner

        return HFCaptioner(cfg, device)
    if cfg.captioner == "openai":
        from gtgm.text.captioners.openai import OpenAICaptioner

        return OpenAICaptioner(cfg)
    raise ValueError(cfg.captioner)


__all__ = ["Captioner", "Patch", "create_captioner"]
