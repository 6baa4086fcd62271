"""Choose pretraining settings on VALIDATION probes only (never test cases): for each variant, pretrain the gtgm arm
as the ablation study would, then score the voxel and presence probes on the fine-tuning validation cases.

    python benchmarks/select_on_val_probes.py CACHE CAPTIONS TEXT_CACHE OUT pooling:steps:arm [...]
    e.g. ... last:300:gtgm stages:300:gtgm stages:1000:gtgm

Prints one JSON line per variant: pretraining seconds, held-out retrieval (with the modality + position
baseline), validation voxel-probe Dice, presence AUC, and the same probes of a random encoder (the control).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from gtgm.config import group_config, load_config
from gtgm.study.arms import pretrain_arm
from gtgm.study.probe import run_probe


def main() -> None:
    cache, captions, text, out, *variants = sys.argv[1:]
    for pooling, steps, arm in (v.split(":") for v in variants):
        root = Path(out) / f"sel_{pooling}_{steps}"
        overrides = [f"finetune.cache={cache}", f"pretrain.captions={captions}", f"pretrain.text_cache={text}"]
        overrides += [f"model.pooling={pooling}", f"pretrain.steps={steps}", f"study.out={root}"]
        cfg = group_config(load_config("study/cpu-ablation", overrides), "ct_phantom")
        t = time.time()
        run = pretrain_arm(cfg, arm, 0, root, progress=False)
        seconds = time.time() - t
        info = json.loads((run / "encoder.json").read_text())
        probe = run_probe(cfg, str(run / "encoder.pt"), "ct_phantom", 0, on="val")
        control = run_probe(cfg, "", "ct_phantom", 0, on="val")
        line = {
            "pooling": pooling,
            "steps": int(steps),
            "arm": arm,
            "pretrain_s": round(seconds),
            "retrieval": info.get("retrieval"),
            "val_voxel_dice": probe["voxel"]["mean_dice"],
            "val_presence_auc": probe["presence"]["mean_auc"],
            "random_val_voxel_dice": control["voxel"]["mean_dice"],
            "random_val_presence_auc": control["presence"]["mean_auc"],
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
