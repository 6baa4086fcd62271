"""The study's positive control, arm ``supervised``: an encoder known to be good for the task.

It is the encoder of a segmenter trained from scratch on *every* labelled training case of the group (label
ratio 1, all slices labelled, the group's recipe, seed = the pretraining seed), never on the validation or test
cases (the same ``finetune.split_seed`` chooses them). Only the encoder's tensors are kept (``encoder.pt``, keyed
as in the segmenter; the decoder starts from random like every other arm's), so the arm is fine-tuned exactly like
a pretrained one. If it does not beat scratch with few labels, the fine-tuning protocol cannot see a gain from
a good initialisation, and a null for any pretraining arm says nothing (DESIGN.md §6).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gtgm.config import Config, group_config, with_overrides
from gtgm.fsutil import read_json, write_json
from gtgm.models.checkpoint import load_checkpoint, save_checkpoint
from gtgm.schemas import TEST_METRICS
from gtgm.study.reuse import check_reuse


def supervised_config(cfg: Config, group: str, seed: int, root: Path, overrides: list[str] = ()) -> Config:
    """The source segmenter's run: the group's fine-tuning recipe with ``study.supervised_overrides`` (e.g. more
    steps) at label ratio 1 from scratch, in ``root/pretrain/supervised_<group>_seed<seed>``."""
    out = root / "pretrain" / f"supervised_{group}_seed{seed}"
    values = {
        "seed": seed,
        "finetune.group": group,
        "finetune.label_ratio": 1.0,
        "finetune.pretrained": "",
        "finetune.freeze_encoder_steps": 0,  # a segmenter trained from scratch: nothing to keep frozen
        "finetune.slices_per_case": 0,  # every slice of every training case labelled, whatever the arms get
        "finetune.out": str(out),
    }
    return with_overrides(group_config(cfg, group, [*cfg.study.supervised_overrides, *overrides]), values=values)


def supervised_encoder(
    cfg: Config, group: str, seed: int, root: Path, overrides: list[str] = (), progress: bool = False
) -> Path:
    """Train (or reuse, or resume) the source segmenter and return its ``encoder.pt``."""
    from gtgm.train.finetune import finetune

    c = supervised_config(cfg, group, seed, root, overrides)
    out = Path(c.finetune.out)
    check_reuse(out, c, ("seed", "model", "finetune", "seg_augment", "em"), ignore=("finetune.out",))
    encoder = out / "encoder.pt"
    if encoder.is_file():
        return encoder
    if not (out / "test_metrics.json").is_file():
        if progress:
            print(f"[study] positive control: training {group} with every labelled training case (seed {seed})")
        finetune(c, resume=(out / "checkpoints" / "last.pt").is_file(), progress=progress)
    export_encoder(out, c)
    return encoder


def export_encoder(out: Path, cfg: Config) -> None:
    """``out/best.pt``'s encoder tensors (names under the segmenter's ``encoder_prefix``) -> ``out/encoder.pt``,
    with ``encoder.json`` naming the architecture and where the weights came from."""
    from gtgm.train.tasks import build_segmenter

    best = load_checkpoint(out / "best.pt", keys=("model",))
    bare = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, ct_windows=[]))  # (no CT window source here)
    prefix = build_segmenter(bare, 2, cfg.finetune.task).encoder_prefix
    weights = {k: v for k, v in best["model"].items() if k.startswith(prefix)}
    run: dict[str, Any] = read_json(out / "test_metrics.json", schema=TEST_METRICS)
    m = cfg.model
    write_json(
        out / "encoder.json",
        {
            "encoder": m.encoder,
            "in_channels": m.in_channels,
            "channels": m.channels,
            "feature_size": m.feature_size,
            "source": "supervised",
            "group": cfg.finetune.group,
            "train_cases": run["train_cases"],
            "steps": run["steps"],
            "val_score": best.get("val_score"),
        },
    )
    save_checkpoint(out / "encoder.pt", weights)
