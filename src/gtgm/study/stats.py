"""Paired comparisons for the study: differences per (seed, test case), hierarchical bootstrap intervals."""

from __future__ import annotations

from typing import Any

import numpy as np


def hierarchical_bootstrap(
    diffs: np.ndarray | list[float],
    cases: list[str],
    seeds: list[int],
    pretrain_seeds: list[int | None] | None = None,
    n_boot: int = 10000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean of paired differences ``diffs`` (n,) and a percentile bootstrap interval over every source of chance.

    Each difference belongs to a test case ``cases[i]``, a fine-tuning seed ``seeds[i]`` and a pretraining seed
    ``pretrain_seeds[i]`` (None or omitted: one level). Fine-tuning seeds are nested in pretraining seeds (the
    study's i-th fine-tuning seed uses one pretraining run); test cases are crossed with both (every run scores
    the same cases). One bootstrap replicate draws, with replacement, the C test cases (weights ``w_c``), the P
    pretraining seeds, and for each drawn pretraining seed its fine-tuning seeds (weights ``v_u``; a pretraining
    seed drawn k times draws k × its seeds), and takes ``Σ_u Σ_c v_u w_c d_uc / Σ_u Σ_c v_u w_c``. The interval
    is the ((1 − level) / 2, (1 + level) / 2) quantiles of ``n_boot`` replicates. A level with one value adds no
    spread. Returns ``{"mean", "lo", "hi", "n", "cases", "seeds", "pretrain_seeds"}`` (the last three: how many
    distinct values each level has).
    """
    d = np.asarray(diffs, dtype=np.float64).ravel()
    if d.size == 0:
        raise ValueError("hierarchical_bootstrap needs at least one difference")
    pre = list(pretrain_seeds) if pretrain_seeds is not None else [None] * d.size
    case_ids, ci = np.unique(np.asarray(cases, dtype=str), return_inverse=True)
    units = list(dict.fromkeys(zip(pre, seeds)))  # (pretraining seed, fine-tuning seed)
    ui = np.array([units.index(u) for u in zip(pre, seeds)])
    sums, counts = np.zeros((len(units), len(case_ids))), np.zeros((len(units), len(case_ids)))
    np.add.at(sums, (ui, ci), d)
    np.add.at(counts, (ui, ci), 1.0)
    rng = np.random.default_rng(seed)
    n_cases, groups = len(case_ids), list(dict.fromkeys(p for p, _ in units))
    w = rng.multinomial(n_cases, np.full(n_cases, 1 / n_cases), size=n_boot)  # (B, C)
    g_draws = rng.multinomial(len(groups), np.full(len(groups), 1 / len(groups)), size=n_boot)  # (B, P)
    v = np.zeros((n_boot, len(units)))
    for g, group in enumerate(groups):
        members = [u for u, (p, _) in enumerate(units) if p == group]
        v[:, members] = rng.multinomial(g_draws[:, g] * len(members), np.full(len(members), 1 / len(members)))
    num, den = np.einsum("bu,uc,bc->b", v, sums, w), np.einsum("bu,uc,bc->b", v, counts, w)
    means = num[den > 0] / den[den > 0]  # a replicate may draw only (unit, case) cells without a difference
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return {
        "mean": float(d.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "n": int(d.size),
        "cases": n_cases,
        "seeds": len(units),
        "pretrain_seeds": len(groups),
    }


def case_scores(test: dict[str, Any]) -> dict[str, float]:
    """Per test case, the run's main figure: mean Dice over classes (segmentation) or VOI (EM)."""
    if test["metric"] == "voi":
        return {c["case"]: float(c["voi"]) for c in test["cases"]}
    return {c["case"]: float(np.mean(list(c["dice"].values()))) for c in test["cases"]}


def paired_differences(
    rows: list[dict[str, Any]], arm: str, base: str, with_cases: bool = False
) -> dict[float, list[Any]]:
    """Per label ratio, ``arm`` − ``base`` for every (seed, test case) that both arms scored (``with_cases``:
    ``(case, seed, pretraining seed, difference)`` tuples; the pretraining seed is the arm's, else the
    baseline's, else None)."""
    out: dict[float, list[Any]] = {}
    for r in rows:
        if r["arm"] != arm:
            continue
        other = [b for b in rows if b["arm"] == base and b["ratio"] == r["ratio"] and b["seed"] == r["seed"]]
        if not other:
            continue
        a, b = r["cases"], other[0]["cases"]
        pre = r.get("pretrain_seed") if r.get("pretrain_seed") is not None else other[0].get("pretrain_seed")
        pairs = [(c, r["seed"], pre, a[c] - b[c]) for c in sorted(a) if c in b]
        out.setdefault(r["ratio"], []).extend(pairs if with_cases else [p[-1] for p in pairs])
    return out


def seed_level_sd(diffs: list[float], seeds: list[int], pretrain_seeds: list[int | None] | None = None) -> float | None:
    """SD (ddof 1) over seed units — (pretraining seed, fine-tuning seed) pairs — of each unit's mean difference
    over the test cases; None with fewer than 2 units. The spread a new paired seed adds."""
    pre = list(pretrain_seeds) if pretrain_seeds is not None else [None] * len(diffs)
    units: dict[tuple, list[float]] = {}
    for d, s, p in zip(diffs, seeds, pre):
        units.setdefault((p, s), []).append(float(d))
    means = [float(np.mean(v)) for v in units.values()]
    return float(np.std(means, ddof=1)) if len(means) > 1 else None


def paired_t(diffs: list[float], level: float = 0.95) -> dict[str, float]:
    """Mean of paired differences with a Student-t interval: ``mean ± t_{(1+level)/2, n-1} · sd / √n`` (sd with
    ddof 1); ``n``, ``mean``, ``sd``, ``lo``, ``hi`` (sd and the bounds NaN with fewer than 2 differences)."""
    from scipy.stats import t

    d = np.asarray(diffs, dtype=float)
    n, mean = len(d), float(d.mean()) if len(d) else float("nan")
    if n < 2:
        return {"n": n, "mean": mean, "sd": float("nan"), "lo": float("nan"), "hi": float("nan")}
    sd = float(d.std(ddof=1))
    half = float(t.ppf((1 + level) / 2, n - 1) * sd / np.sqrt(n))
    return {"n": n, "mean": mean, "sd": sd, "lo": mean - half, "hi": mean + half}


def seeds_needed(sd: float, delta: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Paired seeds ``n = ⌈((z_{1-α/2} + z_{power}) · sd / delta)²⌉`` that detect a mean difference ``delta`` with
    ``power`` at a two-sided level ``alpha`` (normal approximation; at least 2). sd 0.09, delta 0.05: 26."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return max(2, int(np.ceil((z * sd / delta) ** 2)))
