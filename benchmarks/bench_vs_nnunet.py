"""gtgm's recipe vs nnU-Net v2 with the same network and patch, at equal training time on 2 cores.

    python benchmarks/bench_vs_nnunet.py --work runs/vs_nnunet [--task phantoms|real] [--budgets 5 15 45]
        [--seeds 0 1 2] [--arms gtgm nnUNetTrainer nnUNetTrainerNoMirroring]

1. the task's data (``gtgm data examples`` / ``fetch-real``) and gtgm's cache with the task's recipe
   (:data:`gtgm.study.vs_nnunet.TASKS`: fixed training, validation and test cases);
2. nnU-Net (through :mod:`gtgm.export.nnunet_run`): the raw dataset with the test cases held out of its fingerprint,
   the ResEnc-M planner with the CPU memory target at gtgm's spacing, its patch set to gtgm's, preprocessing, and
   fold 0 = gtgm's training and validation cases. gtgm trains the very network the plans describe
   (``resenc_overrides``), with its recipe otherwise unchanged;
3. calibration (once per work folder): gtgm's seconds per step and per validation; nnU-Net's seconds per epoch and
   start-up, with ``nnUNet_n_proc_DA`` 0 and 1 (the faster is kept);
4. for each budget (minutes of training) and seed: gtgm with the steps whose cosine ends at the budget, nnU-Net's
   default trainer and ``nnUNetTrainerNoMirroring`` with the epochs whose poly schedule ends there (each arm's
   seconds per step from its finished runs where it has some, else from the calibration); 5 snapshots per
   run predicted on the validation cases (the anytime curves), the final model (gtgm: its best on validation, as
   its recipe keeps; nnU-Net: ``checkpoint_final``) on the test cases;
5. every prediction scored by ``gtgm evaluate``'s code at the native grid; paired gtgm − nnU-Net per (seed, test
   case) with the hierarchical 95 % interval. Results: ``WORK/results.json`` (after every run; finished runs are
   reused), ``WORK/anytime.png``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from gtgm.export.nnunet import resenc_overrides
from gtgm.export.nnunet_run import NnUNetWork, plan, predict, preprocess, raw_dataset, timed, train, write_split
from gtgm.fsutil import read_json, write_json
from gtgm.study.vs_nnunet import (
    TASKS,
    Task,
    anytime_figure,
    anytime_points,
    case_dice,
    gtgm_steps,
    measured_rate,
    nnunet_schedule,
    paired_summary,
    prepare_task,
)
from gtgm.train.logs import read_log

GTGM = [sys.executable, "-m", "gtgm"]
DATASET_ID, PLANS = 777, "nnUNetResEncUNetCPUPlans"
MEMORY_GB = 0.05  # the demo's CPU memory target: 3 stages, 32 / 64 / 128 features
PER_EPOCH = 50  # nnU-Net's iterations per epoch (its default 250 is a quarter of a budget here)
POINTS = 5  # snapshots per run
CAL_STEPS, CAL_ITERS = 40, 10


def gtgm_run(work: Path, task: Task, out: Path, model: list[str], extra: list[str]) -> dict:
    """``gtgm finetune`` (the task's recipe and cases, the planned network, ``extra``) into OUT."""
    args = [*GTGM, "finetune", str(work / "cache"), "--group", task.group, "--out", str(out), "--config", task.preset]
    args += [f"finetune.test_cases={list(task.test)}", f"finetune.val_cases={list(task.val)}", *model, *extra]
    args += [f"finetune.train_cases={list(task.train)}"] if task.train else []
    return timed(args)


def calibrate(work: Path, task: Task, nn: NnUNetWork, model: list[str]) -> dict:
    """gtgm: seconds per step (its logged throughput) and per validation; nnU-Net: seconds per epoch of
    ``CAL_ITERS`` iterations and start-up, for n_proc_DA 0 and 1."""
    path = work / "calibration.json"
    if path.is_file():
        return read_json(path)
    out = work / "calibrate_gtgm"
    shutil.rmtree(out, ignore_errors=True)
    gtgm_run(work, task, out, model, [f"finetune.steps={CAL_STEPS}", f"finetune.val_every={CAL_STEPS}"])
    step_s = 2 / [r for r in read_log(out) if "samples_per_s" in r][-1]["samples_per_s"]
    train_s = read_json(out / "test_metrics.json")["train_s"]
    cal = {"gtgm": {"step_s": step_s, "val_s": max(0.0, train_s - CAL_STEPS * step_s)}, "nnunet": {}}
    for da in (0, 1):
        cal_nn = replace(nn, results=f"calibrate_da{da}", n_proc_da=da)
        shutil.rmtree(cal_nn.root / cal_nn.results, ignore_errors=True)
        run = train(cal_nn, PLANS, "nnUNetTrainer", 3, CAL_ITERS, snapshots=[1, 2, 3])
        t = [a["elapsed_s"] for a in run["anytime"]]
        epoch_s = (t[2] - t[0]) / 2
        cal["nnunet"][str(da)] = {"epoch_s": epoch_s, "startup_s": max(0.0, t[0] - epoch_s), "per_epoch": CAL_ITERS}
    cal["n_proc_da"] = min((0, 1), key=lambda d: cal["nnunet"][str(d)]["epoch_s"])
    write_json(path, cal)
    return cal


def run_gtgm_arm(work: Path, task: Task, model: list[str], cal: dict, budget: float, seed: int, rate: float | None):
    out = work / f"gtgm_b{budget:g}_s{seed}"
    val_every = 100  # the recipe's
    steps = gtgm_steps(budget * 60, rate or cal["gtgm"]["step_s"], 0.0 if rate else cal["gtgm"]["val_s"], val_every)
    every = max(1, steps // POINTS)
    shutil.rmtree(out, ignore_errors=True)
    cost = gtgm_run(work, task, out, model, [f"finetune.steps={steps}", f"seed={seed}",
                                             f"finetune.snapshot_every={every}"])  # fmt: skip
    from gtgm.infer.predict import predict_inputs

    snaps = [{"name": r["snapshot"], "elapsed_s": r["elapsed_s"]} for r in read_log(out) if "snapshot" in r]
    dice = {}
    for s in snaps:
        pred = out / "val_pred" / Path(s["name"]).stem
        predict_inputs(out / s["name"], [work / "val_images"], pred)
        dice[s["name"]] = float(np.mean(list(case_dice(pred, work / "val_refs").values())))
    predict_inputs(out / "best.pt", [task.image(work, c) for c in task.test], out / "pred")
    metrics = read_json(out / "test_metrics.json")
    return {"steps": steps, "train_s": metrics["train_s"], **cost, "snapshots": snaps, "val_dice": dice,
            "test": case_dice(out / "pred", work / "refs")}  # fmt: skip


def run_nnunet_arm(
    work: Path, nn: NnUNetWork, cal: dict, trainer: str, budget: float, seed: int, rate: float | None
) -> dict:
    c = cal["nnunet"][str(cal["n_proc_da"])]
    epoch_s, startup_s = (
        (rate * PER_EPOCH, 0.0) if rate else (c["epoch_s"] * PER_EPOCH / c["per_epoch"], c["startup_s"])
    )
    epochs, per_epoch = nnunet_schedule(budget * 60, epoch_s, startup_s, PER_EPOCH)
    snaps = sorted({max(1, round(epochs * (k + 1) / POINTS)) for k in range(POINTS)})
    tag = f"{trainer}_b{budget:g}_s{seed}"
    run_nn = replace(nn, results=f"results_{tag}")
    shutil.rmtree(nn.root / run_nn.results, ignore_errors=True)
    done = train(run_nn, PLANS, trainer, epochs, per_epoch, seed=seed, snapshots=snaps)
    out = work / f"pred_{tag}"
    jobs = [(nn.root / "nnunet_val_images", out / "val" / a["checkpoint"], a["checkpoint"]) for a in done["anytime"]]
    predict(run_nn, PLANS, trainer, [*jobs, (nn.root / "nnunet_test_images", out / "test", "checkpoint_final.pth")])
    dice = {a["checkpoint"]: float(np.mean(list(case_dice(out / "val" / a["checkpoint"], work / "val_refs").values())))
            for a in done["anytime"]}  # fmt: skip
    snapshots = [{"name": a["checkpoint"], "elapsed_s": a["elapsed_s"]} for a in done["anytime"]]
    return {"epochs": epochs, "per_epoch": per_epoch, "train_s": done["train_s"], "wall_s": done["wall_s"],
            "cpu_s": done["cpu_s"], "snapshots": snapshots, "val_dice": dice,
            "test": case_dice(out / "test", work / "refs")}  # fmt: skip


def setup_nnunet(work: Path, task: Task) -> tuple[NnUNetWork, list[str]]:
    """nnU-Net's raw dataset (test held out), ResEnc plan with gtgm's patch, preprocessing, fold 0 = gtgm's split;
    returns the working folder and gtgm's overrides for the planned network."""
    nn = NnUNetWork(work / "nnunet", DATASET_ID)
    if not (work / "nnunet" / "planned.json").is_file():
        raw_dataset(nn, work / task.data, task.group, list(task.test))
        plan(nn, PLANS, memory_gb=MEMORY_GB, spacing=task.spacing, patch=task.nnunet_patch())
        preprocess(nn, PLANS)
        write_json(work / "nnunet" / "planned.json", {"plans": PLANS})
    raw = next((nn.root / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    train_cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTr").iterdir())
    val = list(task.val)
    write_split(nn, [c for c in train_cases if c not in val], val)
    (nn.root / "nnunet_val_images").mkdir(exist_ok=True)
    for case in val:
        shutil.copy(raw / "imagesTr" / f"{case}_0000.nii.gz", nn.root / "nnunet_val_images")
    return nn, resenc_overrides(nn.preprocessed() / f"{PLANS}.json")


def report(results: dict, task: Task) -> None:
    runs = results["runs"]
    for budget in sorted({r["budget"] for r in runs}, key=float):
        print(f"\nbudget {budget} min of training (2 cores); test mean Dice over seeds, training s, pairs")
        for arm in sorted({r["arm"] for r in runs if r["budget"] == budget}):
            mine = [r for r in runs if r["arm"] == arm and r["budget"] == budget]
            dice = [float(np.mean(list(r["test"].values()))) for r in mine]
            secs = [r["train_s"] for r in mine]
            print(f"  {arm:<26} {np.mean(dice):.3f} ± {np.std(dice):.3f} (n={len(dice)})  {np.mean(secs):6.0f} s")
        for base in ("nnUNetTrainerNoMirroring", "nnUNetTrainer"):
            d = paired_summary(runs, "gtgm", base, budget)
            if d:
                print(f"  gtgm − {base}: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] ({d['n']} pairs)")
    if task.caveat:
        print(f"caveat: {task.caveat}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/vs_nnunet"))
    ap.add_argument("--task", choices=sorted(TASKS), default="phantoms")
    ap.add_argument("--budgets", type=float, nargs="+", default=[5.0], help="minutes of training per run")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["gtgm", "nnUNetTrainer", "nnUNetTrainerNoMirroring"])
    a = ap.parse_args()
    work, task = a.work.resolve(), TASKS[a.task]
    work.mkdir(parents=True, exist_ok=True)
    prepare_task(work, task)
    nn, model = setup_nnunet(work, task)
    cal = calibrate(work, task, nn, model)
    nn = replace(nn, n_proc_da=cal["n_proc_da"])
    print(f"[bench] calibration: {cal}", flush=True)
    path = work / "results.json"
    results = read_json(path) if path.is_file() else {"task": a.task, "calibration": cal, "runs": []}
    for budget in a.budgets:
        for seed in a.seeds:
            for arm in a.arms:
                if any(r["arm"] == arm and r["budget"] == f"{budget:g}" and r["seed"] == seed for r in results["runs"]):
                    continue
                print(f"[bench] {arm} budget {budget:g} min seed {seed} ...", flush=True)
                rate = measured_rate(results["runs"], arm)  # the arm's finished runs, else the calibration
                run = (run_gtgm_arm(work, task, model, cal, budget, seed, rate) if arm == "gtgm"
                       else run_nnunet_arm(work, nn, cal, arm, budget, seed, rate))  # fmt: skip
                run["anytime"] = anytime_points(run["snapshots"], run["val_dice"])
                results["runs"].append({"arm": arm, "budget": f"{budget:g}", "seed": seed, **run})
                write_json(path, results)
                print(f"[bench]   test mean Dice {np.mean(list(run['test'].values())):.3f}, "
                      f"training {run['train_s']:.0f} s", flush=True)  # fmt: skip
    anytime_figure(results["runs"], work / "anytime.png", f"{a.task}: gtgm vs nnU-Net, same ResEnc network")
    report(results, task)


if __name__ == "__main__":
    main()
