"""Paired comparisons for the study: differences per (seed, test case), percentile bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np


def paired_bootstrap(diffs: np.ndarray | list[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of paired differences ``diffs`` (n,) and its percentile bootstrap interval.

    Resamples the n differences with replacement ``n_boot`` times; the interval is the
    ((1 - level) / 2, (1 + level) / 2) quantiles of the resampled means. Returns
    ``{"mean", "lo", "hi", "n"}``; with n = 1 the interval is the value itself (no spread to estimate).
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one difference")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(d.size)}


def case_scores(test: dict[str, Any]) -> dict[str, float]:
    """Per test case, the run's main figure: mean Dice over classes (segmentation) or VOI (EM)."""
    if test["metric"] == "voi":
        return {c["case"]: float(c["voi"]) for c in test["cases"]}
    return {c["case"]: float(np.mean(list(c["dice"].values()))) for c in test["cases"]}


def paired_differences(rows: list[dict[str, Any]], arm: str, base: str) -> dict[float, list[float]]:
    """Per label ratio, ``arm`` − ``base`` for every (seed, test case) that both arms scored."""
    out: dict[float, list[float]] = {}
    for r in rows:
        if r["arm"] != arm:
            continue
        other = [b for b in rows if b["arm"] == base and b["ratio"] == r["ratio"] and b["seed"] == r["seed"]]
        if not other:
            continue
        a, b = r["cases"], other[0]["cases"]
        out.setdefault(r["ratio"], []).extend(a[c] - b[c] for c in sorted(a) if c in b)
    return out
