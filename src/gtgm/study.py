"""``gtgm study``: what pretraining is worth — {from scratch, gtgm-pretrained} × label ratios × seeds.

Each run is a ``gtgm finetune`` into ``STUDY/<group>/<arm>/ratio<r>_seed<s>/`` (finished runs are
reused, so an interrupted study resumes). Both arms of a seed share the same split and labelled subset.
The report (Markdown + HTML) has, per group, a table of test Dice (mean ± std over seeds) per class and
ratio for each arm, and a plot of mean Dice against label ratio.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.config import Config
from gtgm.data.patches import VolumeCache
from gtgm.fsutil import write_json
from gtgm.report import write_report
from gtgm.train.finetune import finetune
from gtgm.train.segdata import make_split

ARMS = ("scratch", "pretrained")


def run_one(cfg: Config, group: str, arm: str, ratio: float, seed: int, pretrained: str, root: Path) -> dict[str, Any]:
    out = root / group / arm / f"ratio{ratio:g}_seed{seed}"
    done = out / "test_metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    c = copy.deepcopy(cfg)
    c.seed = seed
    f = c.finetune
    f.group, f.label_ratio, f.out = group, ratio, str(out)
    f.pretrained = pretrained if arm == "pretrained" else ""
    if (out / "checkpoints" / "last.pt").exists():
        return finetune(c, resume=True, progress=False)
    return finetune(c, progress=False)


def _train_subset(cfg: Config, group: str, ratio: float, seed: int) -> tuple:
    """Which training cases / labelled slices a run would use: equal subsets give identical runs."""
    cache = VolumeCache(cfg.finetune.cache, group=group, labeled=True)
    parts = make_split(cache, dataclasses.replace(cfg.finetune, label_ratio=ratio), seed)["train"]
    return tuple((p.case, tuple(p.slices) if p.slices is not None else None) for p in parts)


def run_study(cfg: Config, pretrained: str, progress: bool = True) -> Path:
    """Run every (group, ratio, seed, arm) and write the report; returns the report's Markdown path.

    Two ratios that select the same training subset for a seed (e.g. 1 % and 10 % of five cases both
    keep one case) give the same run; it is trained once and its result reported for both.
    """
    root = Path(cfg.study.out)
    results: dict[str, Any] = {}
    seen: dict[tuple, dict[str, Any]] = {}
    t0 = time.perf_counter()
    total = len(cfg.study.groups) * len(cfg.study.ratios) * len(cfg.study.seeds) * len(ARMS)
    n = 0
    for group in cfg.study.groups:
        for ratio in cfg.study.ratios:
            for seed in cfg.study.seeds:
                for arm in ARMS:
                    n += 1
                    key = (group, arm, seed, _train_subset(cfg, group, ratio, seed))
                    res = seen.get(key) or run_one(cfg, group, arm, ratio, seed, pretrained, root)
                    seen[key] = res
                    results.setdefault(group, []).append(
                        {
                            "arm": arm,
                            "ratio": ratio,
                            "seed": seed,
                            "dice": res["test"]["dice"],
                            "mean": res["test"]["mean_dice"],
                            "train_cases": res["train_cases"],
                            "labelled_slices": res["labelled_slices"],
                        }
                    )
                    if progress:
                        print(
                            f"[study] {n}/{total} {group} {arm} ratio {ratio:g} seed {seed}: "
                            f"test mean Dice {res['test']['mean_dice']:.3f} ({time.perf_counter() - t0:.0f} s)",
                            flush=True,
                        )
    write_json(root / "study.json", {"pretrained": pretrained, "results": results, "seconds": time.perf_counter() - t0})
    return write_study_report(root, results, cfg, pretrained, time.perf_counter() - t0)[0]


def summarize(rows: list[dict[str, Any]]) -> dict[tuple[str, float], dict[str, tuple[float, float]]]:
    """(arm, ratio) -> {class or "mean": (mean, std over seeds)}."""
    out: dict[tuple[str, float], dict[str, tuple[float, float]]] = {}
    for arm in ARMS:
        for ratio in sorted({r["ratio"] for r in rows}):
            sel = [r for r in rows if r["arm"] == arm and r["ratio"] == ratio]
            if not sel:
                continue
            stats = {
                str(c): (float(np.mean([r["dice"][c] for r in sel])), float(np.std([r["dice"][c] for r in sel])))
                for c in sel[0]["dice"]
            }
            stats["mean"] = (float(np.mean([r["mean"] for r in sel])), float(np.std([r["mean"] for r in sel])))
            out[(arm, ratio)] = stats
    return out


def write_study_report(
    root: Path, results: dict[str, Any], cfg: Config, pretrained: str, seconds: float
) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks: list = [
        (
            "text",
            f"Fine-tuning {cfg.model.encoder} (channels {cfg.model.channels}) for "
            f"{cfg.finetune.steps} steps per run, from scratch and from {pretrained}; "
            f"label ratios {cfg.study.ratios}, seeds {cfg.study.seeds}; {seconds / 60:.1f} min in all. "
            "Test Dice, mean ± std over seeds (classes without any test voxels count as 1 when "
            "nothing is predicted, see gtgm.metrics).",
        )
    ]
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.8), squeeze=False)
    for ax, (group, rows) in zip(axes[0], results.items()):
        summary = summarize(rows)
        classes = [k for k in next(iter(summary.values())) if k != "mean"]
        header = ["arm", "label ratio", *[f"class {c}" for c in classes], "mean"]
        table = [
            [
                arm,
                f"{ratio:g}",
                *[f"{s[c][0]:.3f} ± {s[c][1]:.3f}" for c in classes],
                f"{s['mean'][0]:.3f} ± {s['mean'][1]:.3f}",
            ]
            for (arm, ratio), s in summary.items()
        ]
        blocks += [("heading", group), ("table", (header, table))]
        for arm, style in zip(ARMS, ("--o", "-s")):
            pts = sorted((r, s["mean"]) for (a, r), s in summary.items() if a == arm)
            ax.errorbar(
                [p[0] for p in pts],
                [p[1][0] for p in pts],
                yerr=[p[1][1] for p in pts],
                fmt=style,
                capsize=3,
                label=arm,
            )
        ax.set_xscale("log"), ax.set_xlabel("label ratio"), ax.set_ylabel("mean test Dice"), ax.set_title(group)
        ax.legend()
    fig.tight_layout()
    figure = root / "dice_vs_ratio.png"
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    blocks.insert(1, ("figure", (figure, "Mean test Dice against label ratio (error bars: std over seeds)")))
    return write_report(root, "gtgm label-efficiency study", blocks, name="report")
