"""The study's diagnostics: what each arm's fine-tuning did, beyond its final mean Dice.

Per group and label ratio, the report shows
* learning curves: validation score (mean Dice, or −VOI for EM) at ``study.curve_steps`` — pretraining usually
  shows first as faster convergence — and a figure of the whole curves;
* per-class test Dice of every arm minus scratch's (paired by seed and test case), and the collapse rate: the
  share of (seed, test case, class) whose Dice is below 0.1, apart from the mean;
* swaps: per class, the share of its reference voxels predicted as the one other foreground class it is most
  often taken for (liver ↔ spleen and kidney left ↔ right in the phantoms: the side is the only cue);
* drift: the mean / minimum cosine between each encoder kernel after fine-tuning and where it started, and the
  normalisation layers' scale / shift (:func:`gtgm.train.diagnostics.encoder_drift`): a pretrained encoder
  whose kernels end near cosine 0 was erased by fine-tuning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

COLLAPSE = 0.1  # a class whose test Dice is below this counts as collapsed


def run_diagnostics(res: dict[str, Any]) -> dict[str, Any]:
    """From one run's result (``test_metrics.json`` + ``"out"``): per-case class Dice and confusion counts
    (segmentation), the encoder drift summary and the validation curve ``[[step, score], ...]``."""
    test, out = res["test"], {}
    if test["metric"] != "voi":
        out["case_dice"] = {c["case"]: {str(k): float(v) for k, v in c["dice"].items()} for c in test["cases"]}
        out["confusion"] = {c["case"]: c["confusion"] for c in test["cases"] if "confusion" in c}
    drift = res.get("encoder_drift") or {}
    out["drift"] = {k: v for k, v in drift.items() if k != "cosine"}
    out["curve"] = validation_curve(Path(res["out"]) / "log.jsonl") if res.get("out") else []
    return out


def validation_curve(log: Path) -> list[list[float]]:
    """``[[step, val/score], ...]`` from a run's ``log.jsonl`` (the last record per step wins: a resumed run)."""
    if not log.is_file():
        return []
    points: dict[int, float] = {}
    for line in log.read_text().splitlines():
        rec = json.loads(line) if line.strip() else {}
        if "val/score" in rec:
            points[int(rec["step"])] = float(rec["val/score"])
    return [[s, points[s]] for s in sorted(points)]


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    out: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault((r["arm"], r["ratio"]), []).append(r)
    return out


def curve_blocks(rows: list[dict[str, Any]], steps: list[int], figure: Path) -> list:
    """Validation score at ``steps`` (mean over seeds; '–' where not validated) per arm and ratio, and a figure."""
    import matplotlib.pyplot as plt

    groups = {k: v for k, v in _groups(rows).items() if any(r.get("curve") for r in v)}
    if not groups:
        return []
    table = []
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for (arm, ratio), runs in groups.items():
        curves = [dict((int(s), v) for s, v in r["curve"]) for r in runs]
        at = [[c[s] for c in curves if s in c] for s in steps]
        best = [max(c.values()) for c in curves if c]
        table.append([arm, f"{ratio:g}", *(f"{np.mean(v):.3f}" if v else "–" for v in at), f"{np.mean(best):.3f}"])
        common = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(common, [np.mean([c[s] for c in curves]) for s in common], label=f"{arm} ({ratio:g})")
    ax.set_xlabel("fine-tuning step"), ax.set_ylabel("validation score (mean over seeds)"), ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figure, dpi=80)
    plt.close(fig)
    header = ["arm", "label ratio", *(f"val @ {s}" for s in steps), "best val"]
    text = (
        "Learning curves: validation score (mean Dice over classes; EM: −VOI) after the given number of fine-tuning "
        "steps, mean over seeds; a gain from pretraining usually shows first as faster convergence."
    )
    return [("text", text), ("table", (header, table)), ("figure", (figure, "Validation score during fine-tuning"))]


def class_blocks(rows: list[dict[str, Any]], names: dict[str, str]) -> list:
    """Per-class Dice minus scratch's (paired by seed and case), the collapse rate and the worst swap per class."""
    groups = {k: v for k, v in _groups(rows).items() if all(r.get("case_dice") for r in v)}
    if not groups:
        return []
    classes = sorted({c for runs in groups.values() for r in runs for d in r["case_dice"].values() for c in d}, key=int)
    label = [names.get(c, f"class {c}") for c in classes]
    delta, collapse, swaps = [], [], []
    for (arm, ratio), runs in groups.items():
        dice = [d for r in runs for d in r["case_dice"].values()]
        rate = np.mean([d[c] < COLLAPSE for d in dice for c in classes if c in d])
        collapse.append([arm, f"{ratio:g}", f"{100 * rate:.1f} %", str(len(dice) * len(classes))])
        base = groups.get(("scratch", ratio), [])
        if arm != "scratch" and base:
            by_seed = {r["seed"]: r["case_dice"] for r in base}
            diffs = {
                c: [
                    d[c] - by_seed[r["seed"]][case][c]
                    for r in runs
                    if r["seed"] in by_seed
                    for case, d in r["case_dice"].items()
                    if case in by_seed[r["seed"]]
                ]
                for c in classes
            }
            delta.append(
                [f"{arm} − scratch", f"{ratio:g}", *(f"{np.mean(v):+.3f}" if v else "–" for v in diffs.values())]
            )
        swaps.append([arm, f"{ratio:g}", *_worst_swaps(runs, classes, names)])
    out = [
        (
            "text",
            f"Collapse rate: share of (seed, test case, class) with test Dice < {COLLAPSE} (apart from the mean).",
        ),
        ("table", (["arm", "label ratio", "collapsed", "of"], collapse)),
    ]
    if delta:
        text = "Per-class test Dice minus scratch's, mean over (seed, test case) pairs."
        out += [("text", text), ("table", (["comparison", "label ratio", *label], delta))]
    if any(any(cell != "–" for cell in s[2:]) for s in swaps):
        text = (
            "Swaps: per class, the share of its reference test voxels predicted as the one other foreground class "
            "it is most often taken for (summed over seeds and test cases)."
        )
        out += [("text", text), ("table", (["arm", "label ratio", *label], swaps))]
    return out


def _worst_swaps(runs: list[dict[str, Any]], classes: list[str], names: dict[str, str]) -> list[str]:
    mats = [np.asarray(m, dtype=np.float64) for r in runs for m in (r.get("confusion") or {}).values()]
    if not mats:
        return ["–"] * len(classes)
    total = np.sum(mats, axis=0)
    cells = []
    for c in classes:
        k = int(c)
        row = total[k].copy() if k < len(total) else np.zeros(len(total))
        n = row.sum()
        row[[0, k] if k < len(row) else [0]] = 0
        j = int(row.argmax())
        cells.append(f"→ {names.get(str(j), j)} {100 * row[j] / n:.1f} %" if n and row[j] else "–")
    return cells


def drift_blocks(rows: list[dict[str, Any]]) -> list:
    """Per arm and ratio: kernel cosine to the start (mean, min) and norm scale / shift, means over seeds."""
    table = []
    for (arm, ratio), runs in _groups(rows).items():
        d = [r["drift"] for r in runs if r.get("drift")]
        if not d:
            continue
        m = {k: float(np.nanmean([x[k] for x in d])) for k in d[0]}
        table.append(
            [
                arm,
                f"{ratio:g}",
                f"{m['cosine_mean']:.3f}",
                f"{m['cosine_min']:.3f}",
                f"{m['norm_scale_mean']:.3f} ± {m['norm_scale_std']:.3f}",
                f"{m['norm_shift_mean']:+.3f} ± {m['norm_shift_std']:.3f}",
            ]
        )
    if not table:
        return []
    text = (
        "Drift: cosine between each encoder kernel after fine-tuning (the kept model) and its start (mean and "
        "minimum over kernels), and the encoder's normalisation scales and shifts (mean ± std over channels); "
        "means over seeds. Near 1: the start survived; near 0: fine-tuning replaced it."
    )
    header = ["arm", "label ratio", "kernel cosine (mean)", "(min)", "norm scale", "norm shift"]
    return [("text", text), ("table", (header, table))]
