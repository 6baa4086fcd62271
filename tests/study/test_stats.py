"""Paired bootstrap and paired differences, checked by hand on small examples."""

from __future__ import annotations

import pytest

from gtgm.study.stats import case_scores, paired_bootstrap, paired_differences


def test_paired_bootstrap_by_hand():
    assert paired_bootstrap([0.5, 0.5, 0.5]) == {
        "mean": 0.5,
        "lo": 0.5,
        "hi": 0.5,
        "n": 3,
        "clusters": 3,
        "resampled": "differences",
    }
    # two differences 0 and 2: a resampled mean is 0, 1 or 2 with probability 1/4, 1/2, 1/4,
    # so the 2.5 % and 97.5 % quantiles are 0 and 2
    b = paired_bootstrap([0.0, 2.0])
    assert (b["mean"], b["lo"], b["hi"], b["n"]) == (1.0, 0.0, 2.0, 2)
    b = paired_bootstrap([0.1, 0.2, 0.3, 0.4] * 5)
    assert 0.18 < b["lo"] < 0.22 and 0.28 < b["hi"] < 0.32  # mean 0.25 ± 1.96 · standard error 0.025
    assert paired_bootstrap([1.0, 3.0], seed=1) == paired_bootstrap([1.0, 3.0], seed=1)  # deterministic
    with pytest.raises(ValueError):
        paired_bootstrap([])
    # clusters: two test cases a, b with four seeds each. Resampling cases, a resampled mean is 0, 1 or 2 with
    # probability 1/4, 1/2, 1/4 -> interval [0, 2]; resampling the eight values as if independent, a mean of 0
    # has probability 1/256 < 2.5 %, so that interval is narrower
    c = paired_bootstrap([0.0] * 4 + [2.0] * 4, clusters=["a"] * 4 + ["b"] * 4)
    assert (c["mean"], c["lo"], c["hi"], c["n"], c["clusters"]) == (1.0, 0.0, 2.0, 8, 2)
    flat = paired_bootstrap([0.0] * 4 + [2.0] * 4)
    assert flat["lo"] > 0.0 and flat["hi"] < 2.0
    # unequal clusters: the resampled mean weighs each difference once (a: 1 value 3, b: 3 values 0 -> 0.75)
    assert paired_bootstrap([3.0, 0.0, 0.0, 0.0], clusters=["a", "b", "b", "b"])["mean"] == 0.75
    # one test case with two seeds: resampling the single case would give a zero-width interval, so the two
    # differences are resampled instead (as without clusters: [0, 2]) and the result says so
    one = paired_bootstrap([0.0, 2.0], clusters=["a", "a"])
    assert (one["lo"], one["hi"], one["clusters"], one["resampled"]) == (0.0, 2.0, 1, "differences")
    assert c["resampled"] == "clusters"


def test_paired_differences_pair_seed_and_case():
    def row(arm, seed, cases):
        return {"arm": arm, "ratio": 0.1, "seed": seed, "cases": cases}

    rows = [
        row("scratch", 0, {"a": 0.5, "b": 0.6}),
        row("pretrained", 0, {"a": 0.7, "b": 0.5}),
        row("scratch", 1, {"a": 0.4, "b": 0.4}),
        row("pretrained", 1, {"a": 0.4, "c": 0.9}),  # c has no partner
    ]
    assert paired_differences(rows, "pretrained", "scratch") == {0.1: pytest.approx([0.2, -0.1, 0.0])}
    cases = paired_differences(rows, "pretrained", "scratch", with_cases=True)[0.1]
    assert [c for c, _ in cases] == ["a", "b", "a"] and [d for _, d in cases] == pytest.approx([0.2, -0.1, 0.0])
    test = {"metric": "mean_dice", "cases": [{"case": "a", "dice": {"1": 0.5, "2": 1.0}}]}
    assert case_scores(test) == {"a": 0.75}
    assert case_scores({"metric": "voi", "cases": [{"case": "e", "voi": 1.5}]}) == {"e": 1.5}


def test_paired_blocks_verdicts_need_three_resampled_units():
    from gtgm.study.report import paired_blocks

    def rows(n_seeds, cases):
        out = []
        for seed in range(n_seeds):
            for arm, score in (("scratch", 0.5), ("gtgm", 0.6 + seed / 100)):
                out.append({"arm": arm, "ratio": 0.01, "seed": seed, "metric": "mean_dice", "cases": cases(score)})
        return out

    def verdict(blocks):
        return next(r for r in blocks[1][1][1] if r[0] == "gtgm − scratch")[-1]

    one_case = lambda v: {"mni": v}  # noqa: E731
    assert verdict(paired_blocks(rows(2, one_case))) == "too few to judge (< 3 resampled)"  # 2 seeds of one case
    assert verdict(paired_blocks(rows(3, one_case))) == "gtgm better"  # 3 seeds, all above 0
    two_cases = lambda v: {"a": v, "b": v}  # noqa: E731
    assert verdict(paired_blocks(rows(2, two_cases))) == "too few to judge (< 3 resampled)"  # 2 clusters
    assert verdict(paired_blocks(rows(1, lambda v: {"a": v}))) == "one pair: no interval"
