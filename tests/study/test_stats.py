"""Hierarchical bootstrap and paired differences, checked by hand on small examples."""

from __future__ import annotations

import pytest

from gtgm.study.stats import case_scores, paired_differences


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
    assert [c[:3] for c in cases] == [("a", 0, None), ("b", 0, None), ("a", 1, None)]
    assert [c[3] for c in cases] == pytest.approx([0.2, -0.1, 0.0])
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
    three_cases = lambda v: {"a": v, "b": v + 0.01, "c": v + 0.02}  # noqa: E731
    assert verdict(paired_blocks(rows(2, three_cases))) == "gtgm better (2 seeds: their spread is underestimated)"


def test_hierarchical_bootstrap_covers_pretraining_and_finetuning_seeds():
    from gtgm.study.stats import hierarchical_bootstrap

    # constant differences: no spread at any level
    b = hierarchical_bootstrap([0.5] * 6, ["a", "b", "c"] * 2, [0, 0, 0, 1, 1, 1])
    assert (b["mean"], b["lo"], b["hi"], b["n"], b["cases"], b["seeds"]) == (0.5, 0.5, 0.5, 6, 3, 2)
    # two test cases, one seed: a replicate mean is 0, 1 or 2 with probability 1/4, 1/2, 1/4 -> [0, 2]
    b = hierarchical_bootstrap([0.0, 2.0], ["a", "b"], [0, 0])
    assert (b["lo"], b["hi"]) == (0.0, 2.0)
    # the difference depends only on the pretraining seed (0 for p0, 2 for p1; four fine-tuning seeds each, three
    # cases). With the pretraining level, both draws hit one pretraining seed with probability 1/2: [0, 2].
    # Resampling the eight fine-tuning seeds as if independent, all eight from one half has probability 2/256
    # < 2.5 %, so that interval is narrower
    diffs = [0.0] * 12 + [2.0] * 12
    cases, seeds, pre = ["a", "b", "c"] * 8, [s for s in range(8) for _ in range(3)], [0] * 12 + [1] * 12
    with_pre = hierarchical_bootstrap(diffs, cases, seeds, pre)
    assert (with_pre["lo"], with_pre["hi"], with_pre["pretrain_seeds"]) == (0.0, 2.0, 2)
    flat = hierarchical_bootstrap(diffs, cases, seeds)
    assert flat["lo"] > 0.0 or flat["hi"] < 2.0
    assert hierarchical_bootstrap(diffs, cases, seeds, pre, seed=3) == hierarchical_bootstrap(
        diffs, cases, seeds, pre, seed=3
    )  # deterministic
    with pytest.raises(ValueError):
        hierarchical_bootstrap([], [], [])
