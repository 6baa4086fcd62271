"""When a study may reuse a run folder: only one made with the same settings."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from gtgm.config import Config, SegAugmentConfig
from gtgm.errors import GtgmError

# settings added after runs were made, with the behaviour those runs had (not the new default)
LEGACY = {
    "finetune.postprocess": False,
    "finetune.fg_position": "auto",  # before it: the centre, uniform only with finetune.augment
    "finetune.case_weights": "uniform",
    "finetune.body_crop": False,
    "finetune.body_margin_mm": 10.0,
    "finetune.single_component": [],
    "finetune.train_cases": [],
    "finetune.snapshot_every": 0,
    "finetune.synthetic_share": 0.0,
    "model.ct_windows": [],
    **{f"seg_augment.{k}": v for k, v in asdict(SegAugmentConfig()).items()},  # every probability 0: none of it
}


def check_reuse(out: Path, cfg: Config, sections: tuple[str, ...], ignore: tuple[str, ...] = ()) -> None:
    """A run folder is reused (finished or resumed) only when ``out/config.yaml`` agrees with ``cfg`` on every
    key under ``sections`` (a section name, or a top-level key such as ``seed``), except ``ignore``."""
    path = out / "config.yaml"
    if not path.is_file():
        return
    old, new = _flat(yaml.safe_load(path.read_text())), _flat(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    old = {**LEGACY, **old}  # a run made before a setting existed was made with its old behaviour
    keys = [k for k in old.keys() | new.keys() if k.split(".")[0] in sections and k not in ignore]
    changed = sorted(k for k in keys if old.get(k) != new.get(k))
    if changed:
        raise GtgmError(
            f"{out} holds a run made with other settings ({', '.join(changed[:4])}{', ...' if len(changed) > 4 else ''}"
            "); delete it, or choose another study output folder"
        )


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out
