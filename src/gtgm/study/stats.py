"""Paired comparisons for the study: differences per (seed, test case), percentile bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np


def paired_bootstrap(
    diffs: np.ndarray | list[float],
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
    clusters: list[str] | None = None,
) -> dict:
    """Mean of paired differences ``diffs`` (n,) and its percentile bootstrap interval.

    Resamples with replacement ``n_boot`` times and takes the ((1 - level) / 2, (1 + level) / 2) quantiles of
    the resampled means. Without ``clusters`` the n differences are resampled; with ``clusters`` (one label per
    difference, e.g. the test case) whole clusters are resampled, each bringing all its differences (the
    seeds of one test case are not independent draws). With a single cluster (one test case, several seeds)
    the differences themselves are resampled: the interval then covers seed-to-seed spread only, and
    ``"resampled"`` says which was done ("clusters" or "differences"). Returns ``{"mean", "lo", "hi", "n",
    "clusters", "resampled"}``; with one difference the interval is the mean itself (no spread to estimate).
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("paired_bootstrap needs at least one difference")
    rng = np.random.default_rng(seed)
    labels = np.arange(d.size) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1]
    n_clusters = int(labels.max()) + 1
    if n_clusters < 2:
        labels = np.arange(d.size)
    k = int(labels.max()) + 1
    sums, counts = np.bincount(labels, d, minlength=k), np.bincount(labels, minlength=k).astype(np.float64)
    pick = rng.integers(0, k, size=(n_boot, k))
    means = sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    resampled = "clusters" if k == n_clusters and clusters is not None else "differences"
    return {
        "mean": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n": int(d.size),
        "clusters": n_clusters,
        "resampled": resampled,
    }


def case_scores(test: dict[str, Any]) -> dict[str, float]:
    """Per test case, the run's main figure: mean Dice over classes (segmentation) or VOI (EM)."""
    if test["metric"] == "voi":
        return {c["case"]: float(c["voi"]) for c in test["cases"]}
    return {c["case"]: float(np.mean(list(c["dice"].values()))) for c in test["cases"]}


def paired_differences(
    rows: list[dict[str, Any]], arm: str, base: str, with_cases: bool = False
) -> dict[float, list[Any]]:
    """Per label ratio, ``arm`` − ``base`` for every (seed, test case) that both arms scored
    (``with_cases``: ``(case, difference)`` pairs)."""
    out: dict[float, list[Any]] = {}
    for r in rows:
        if r["arm"] != arm:
            continue
        other = [b for b in rows if b["arm"] == base and b["ratio"] == r["ratio"] and b["seed"] == r["seed"]]
        if not other:
            continue
        a, b = r["cases"], other[0]["cases"]
        pairs = [(c, a[c] - b[c]) for c in sorted(a) if c in b]
        out.setdefault(r["ratio"], []).extend(pairs if with_cases else [d for _, d in pairs])
    return out
