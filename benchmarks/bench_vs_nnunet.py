"""gtgm's CPU recipe vs nnU-Net v2 on the same CT volumes, the same training / validation / test cases, on 2 cores.

    python benchmarks/bench_vs_nnunet.py --work runs/vs_nnunet [--task phantoms|real] [--n-ct 10]
        [--label-ratio 1.0] [--runs ...]

``--task phantoms`` (default): the CT phantoms of ``gtgm data examples``, recipe ``finetune/cpu-small`` at 5.5 mm,
6 training, 1 validation, 3 test phantoms. ``--task real``: ``real_ct_organs`` of ``gtgm data fetch-real`` (real CT,
TotalSegmentator's silver labels), recipe ``finetune/cpu-real-ct`` at 5 mm, trained on the chest CT and the DICOM
series, tested on the abdomen-pelvis CT; gtgm keeps no validation case there, so nnU-Net's fold 0 "validates" on
its training cases (that chooses nothing, both sides use their last checkpoint, but its validation counts in nnU-Net's
training time).

1. the task's data (``gtgm data examples`` / ``fetch-real``), ``gtgm data preprocess`` with the task's recipe;
2. gtgm: ``gtgm finetune`` with the recipe (test and validation cases fixed below), ``gtgm predict`` on the test
   cases' raw files;
3. nnU-Net: ``gtgm data export-nnunet``, nnU-Net's own fingerprint and planner (default ``nnUNetPlans``,
   PlainConvUNet; ``default``: at nnU-Net's target spacing, ``gtgm``: at gtgm's 5.5 mm via
   ``-overwrite_target_spacing``), ``nnUNetv2_preprocess``, ``splits_final.json`` whose fold 0 trains on exactly
   gtgm's training cases and validates on its validation cases, ``nnUNetTrainer`` cut to a fixed budget
   (``num_epochs`` × ``num_iterations_per_epoch``: equal iterations × batch to gtgm's recipe, or equal wall time
   from the measured seconds per iteration), with nnU-Net's default mirroring of every axis or with left-right
   mirroring off (on the phantoms only the side tells liver from spleen); ``nnUNetv2_predict`` on the test cases
   (the plans' spacing at ``gtgm``: the task's);
4. both scored by the same ``gtgm evaluate`` at the native grid; prints per-class Dice, wall and CPU time
   (this process's children), and the ratios to gtgm. Results: ``WORK/results.json``.

``--runs`` picks the nnU-Net runs (``PLAN:BUDGET:MIRROR``, e.g. ``gtgm:iters:all gtgm:iters:nolr default:wall:all``;
default ``gtgm:iters:all gtgm:wall:all``, 37 min on 2 cores for the phantoms; measured figures in the README, "gtgm vs
nnU-Net"). On real CT nnU-Net's plan takes about 23 s per iteration on 2 cores, so its equal-iterations run takes about
4 h there: ``--task real --runs gtgm:wall:all --seconds-per-iteration 18.6`` (19 min) is the run the README reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

GTGM = [sys.executable, "-m", "gtgm"]
DATASET_ID = 777


@dataclass(frozen=True)
class Task:
    """One comparison: the group, gtgm's recipe and spacing, the fixed test and validation cases, and where the
    raw volumes lie under WORK (``{data}/{folder}/{case}.nii.gz`` and ``..._label.nii.gz``)."""

    group: str
    preset: str
    spacing: float
    test: tuple[str, ...]
    val: tuple[str, ...]
    data: str
    folder: str

    def image(self, work: Path, case: str) -> Path:
        return work / self.data / self.folder / f"{case}.nii.gz"

    def label(self, work: Path, case: str) -> Path:
        return work / self.data / self.folder / f"{case}_label.nii.gz"


TASKS = {
    "phantoms": Task(
        "ct_phantom",
        "finetune/cpu-small",
        5.5,
        ("phantom_007", "phantom_008", "phantom_009"),
        ("phantom_006",),
        "examples",
        "ct",
    ),
    "real": Task("real_ct_organs", "finetune/cpu-real-ct", 5.0, ("ts_abdomen_ct",), (), "data", "real_ct_organs"),
}

TRAIN = """
import json, sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
dataset, plans = sys.argv[1], sys.argv[2]
iters, per_epoch, lr_axis = (int(v) for v in sys.argv[3:6])
t = get_trainer_from_args(dataset, "3d_fullres", 0, "nnUNetTrainer", plans, device=torch.device("cpu"))
t.num_iterations_per_epoch, t.num_val_iterations_per_epoch = per_epoch, 2
t.num_epochs = max(1, iters // per_epoch)
if lr_axis >= 0:  # left-right mirroring off: drop the axis that holds the patient's left-right from the mirror axes
    configure = t.configure_rotation_dummyDA_mirroring_and_inital_patch_size
    def no_lr():
        rot, dummy, initial, axes = configure()
        axes = tuple(a for a in axes if a != lr_axis)
        t.inference_allowed_mirroring_axes = axes
        return rot, dummy, initial, axes
    t.configure_rotation_dummyDA_mirroring_and_inital_patch_size = no_lr
t.run_training()
"""


def timed(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = True) -> dict[str, float]:
    """Run ``cmd``; its wall time and the CPU time (user + system) of it and its children."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=quiet, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(map(str, cmd))}\n{(out.stderr or '')[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def class_dice(metrics_csv: Path, by: str = "class") -> dict[str, float]:
    """Mean Dice per class over the test cases (``by="case"``: per test case over the classes) from ``gtgm
    evaluate``'s metrics.csv."""
    import csv

    per: dict[str, list[float]] = {}
    for row in csv.DictReader(metrics_csv.open()):
        if "mean" not in (row["case"], row["class"]):
            per.setdefault(row[by], []).append(float(row["dice"]))
    order = (lambda kv: int(kv[0])) if by == "class" else None
    return {c: float(np.mean(v)) for c, v in sorted(per.items(), key=order)}


def prepare(work: Path, task: Task, n_ct: int) -> Path:
    """The task's raw data and gtgm's cache under WORK (reused when there); returns the folder of test labels.
    A WORK made for another task is refused (its cache, references and nnU-Net dataset would be reused)."""
    stamp = work / "task.json"
    made_for = json.loads(stamp.read_text())["group"] if stamp.is_file() else task.group
    if made_for != task.group:
        sys.exit(f"{work} holds the {made_for} comparison; give another --work")
    stamp.write_text(json.dumps({"group": task.group}))
    data = work / task.data
    if not (data / "dataset.json").is_file():
        if task.data == "examples":
            timed([*GTGM, "data", "examples", "--out", str(data), "--n-ct", str(n_ct), "--n-em", "0", "--no-mri"])
        else:
            timed([*GTGM, "data", "fetch-real", "--out", str(data)])
    if not (work / "cache" / "index.json").is_file():
        timed([*GTGM, "data", "preprocess", str(data), "--out", str(work / "cache"), "--config", task.preset])
    refs = work / "refs"
    if not refs.is_dir():
        refs.mkdir()
        for case in task.test:
            shutil.copy(task.label(work, case), refs / f"{case}.nii.gz")
    return refs


def gtgm_finetune(work: Path, task: Task, out: Path, refs: Path, extra: list[str] = ()) -> tuple[dict, dict]:
    """``gtgm finetune`` into OUT with the task's recipe and test / validation cases (``extra``: more overrides,
    options last), ``gtgm predict`` of the test cases' raw files into OUT/pred, scored against REFS by ``gtgm
    evaluate`` (OUT/pred/metrics.csv); returns the training and prediction times."""
    shutil.rmtree(out, ignore_errors=True)
    args = [*GTGM, "finetune", str(work / "cache"), "--group", task.group, "--out", str(out), "--config", task.preset]
    args += [f"finetune.test_cases={list(task.test)}", f"finetune.val_cases={list(task.val)}"]
    train = timed([*args, *extra])
    images = [str(task.image(work, c)) for c in task.test]
    pred = timed([*GTGM, "predict", str(out / "best.pt"), *images, "--out", str(out / "pred")])
    timed([*GTGM, "evaluate", str(out / "pred"), str(refs), "--out", str(out / "pred")])
    return train, pred


def run_gtgm(work: Path, task: Task, ratio: float, refs: Path, extra: list[str] = ()) -> dict:
    out = work / "gtgm"
    train, pred = gtgm_finetune(work, task, out, refs, [f"finetune.label_ratio={ratio}", *extra])
    split = json.loads((out / "split.json").read_text())
    steps = json.loads((out / "test_metrics.json").read_text())["steps"]
    return {
        "train": train,
        "predict": pred,
        "dice": class_dice(out / "pred" / "metrics.csv"),
        "steps": steps,
        "batch": yaml.safe_load((out / "config.yaml").read_text())["finetune"]["batch_size"],
        "train_cases": [p["id"] for p in split["train"]],
        "val_cases": [p["id"] for p in split["val"]],
    }


def nnunet_env(work: Path, results: str = "nnUNet_results") -> dict[str, str]:
    folders = {"nnUNet_raw": "nnUNet_raw", "nnUNet_preprocessed": "nnUNet_preprocessed", "nnUNet_results": results}
    return {**os.environ, **{k: str(work / v) for k, v in folders.items()}, "nnUNet_n_proc_DA": "2"}


def nnunet_tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def export_without_test(work: Path, task: Task) -> None:
    """``gtgm data export-nnunet`` of the task's group, then the test cases moved out of ``imagesTr`` (to
    ``WORK/nnunet_test_images``, what nnUNetv2_predict reads), so that they shape neither nnU-Net's fingerprint
    (intensity percentiles, median shape) nor its plans, as they shape nothing of gtgm's run."""
    shutil.rmtree(work / "nnUNet_raw", ignore_errors=True)
    out = str(work / "nnUNet_raw")
    timed(
        [
            *GTGM,
            "data",
            "export-nnunet",
            str(work / task.data),
            "--group",
            task.group,
            "--id",
            str(DATASET_ID),
            "--out",
            out,
        ]
    )
    raw = next((work / "nnUNet_raw").glob(f"Dataset{DATASET_ID}_*"))
    test_images = work / "nnunet_test_images"
    shutil.rmtree(test_images, ignore_errors=True)
    test_images.mkdir()
    for case in task.test:
        (raw / "imagesTr" / f"{case}_0000.nii.gz").rename(test_images / f"{case}_0000.nii.gz")
        (raw / "labelsTr" / f"{case}.nii.gz").unlink()
    meta = json.loads((raw / "dataset.json").read_text())
    meta["numTraining"] -= len(task.test)
    (raw / "dataset.json").write_text(json.dumps(meta, indent=2))


def plan(work: Path, task: Task, which: str, gtgm_run: dict) -> tuple[str, dict]:
    """nnU-Net's fingerprint, plans (``which``: default or gtgm spacing), preprocessing and fold-0 split (gtgm's
    training cases; its validation cases, or its training cases where it keeps none)."""
    env = nnunet_env(work)
    if not next(work.glob(f"nnUNet_preprocessed/Dataset{DATASET_ID}_*/dataset_fingerprint.json"), None):
        export_without_test(work, task)
        timed([nnunet_tool("nnUNetv2_extract_fingerprint"), "-d", str(DATASET_ID), "-np", "1"], env)
    name = "nnUNetPlans" if which == "default" else "nnUNetPlans_gtgm_spacing"
    folder = next((work / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*"))
    cost = {"wall_s": 0.0, "cpu_s": 0.0}
    if not (folder / f"{name}.json").is_file():
        extra = (
            []
            if which == "default"
            else ["-overwrite_target_spacing", *[str(task.spacing)] * 3, "-overwrite_plans_name", name]
        )
        steps = [
            [nnunet_tool("nnUNetv2_plan_experiment"), "-d", str(DATASET_ID), *extra],
            [
                nnunet_tool("nnUNetv2_preprocess"),
                "-d",
                str(DATASET_ID),
                "-plans_name",
                name,
                "-c",
                "3d_fullres",
                "-np",
                "1",
            ],
        ]
        for c in steps:
            t = timed(c, env)
            cost = {k: cost[k] + t[k] for k in cost}
    split = [{"train": gtgm_run["train_cases"], "val": gtgm_run["val_cases"] or gtgm_run["train_cases"]}]
    (folder / "splits_final.json").write_text(json.dumps(split))
    return name, {**cost, "plans": json.loads((folder / f"{name}.json").read_text())}


def run_nnunet(work: Path, plans_name: str, plans: dict, iters: int, lr_axis: int, tag: str, refs: Path) -> dict:
    results = f"nnUNet_results_{tag}"
    shutil.rmtree(work / results, ignore_errors=True)
    env = nnunet_env(work, results)
    per_epoch = min(50, iters)
    train = timed(
        [sys.executable, "-c", TRAIN, str(DATASET_ID), plans_name, str(iters), str(per_epoch), str(lr_axis)], env
    )
    out = work / f"pred_{tag}"
    pred = nnunet_predict(work, plans_name, out, refs, env)
    epochs = max(1, iters // per_epoch)
    return {
        "train": train,
        "predict": pred,
        "dice": class_dice(out / "metrics" / "metrics.csv"),
        "iterations": epochs * per_epoch,
        "batch": plans["configurations"]["3d_fullres"]["batch_size"],
        "patch": plans["configurations"]["3d_fullres"]["patch_size"],
        "spacing": plans["configurations"]["3d_fullres"]["spacing"],
    }


def nnunet_predict(work: Path, plans_name: str, out: Path, refs: Path, env: dict[str, str]) -> dict:
    """``nnUNetv2_predict`` of the test images with fold 0's final checkpoint (``env``: its nnU-Net folders) into
    OUT, scored against REFS by ``gtgm evaluate`` (OUT/metrics/metrics.csv); returns the prediction time."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [nnunet_tool("nnUNetv2_predict"), "-i", str(work / "nnunet_test_images"), "-o", str(out)]
    cmd += ["-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-p", plans_name, "-device", "cpu"]
    pred = timed([*cmd, "-chk", "checkpoint_final.pth", "-npp", "1", "-nps", "1"], env)
    timed([*GTGM, "evaluate", str(out), str(refs), "--out", str(out / "metrics")])
    return pred


def lr_axis_of(work: Path, plans: dict) -> int:
    """The axis of nnU-Net's arrays that holds the patient's left-right (gtgm's x), from the files' orientation."""
    from gtgm.export.nnunet import dataset_orientation, nnunet_axes

    folder = next((work / "nnUNet_preprocessed").glob(f"Dataset{DATASET_ID}_*"))
    return nnunet_axes(plans, dataset_orientation(folder / "nnUNetPlans.json")[0]).index(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/vs_nnunet"))
    ap.add_argument("--task", choices=sorted(TASKS), default="phantoms", help="CT phantoms or real CT")
    ap.add_argument("--n-ct", type=int, default=10, help="phantoms: how many")
    ap.add_argument("--label-ratio", type=float, default=1.0, help="gtgm's label ratio (its training cases)")
    # the default pair took 37 min on 2 cores (2026-12-02); gtgm:iters:nolr adds ~31 min, default:wall:all ~15
    ap.add_argument("--runs", nargs="+", default=["gtgm:iters:all", "gtgm:wall:all"])
    ap.add_argument("--max-iters", type=int, default=0, help="cap nnU-Net's iterations (a smoke test)")
    ap.add_argument(
        "--seconds-per-iteration",
        type=float,
        default=0.0,
        help="nnU-Net's training seconds per iteration of the gtgm-spacing plan, measured elsewhere (e.g. an earlier, "
        "longer run's log), for a wall-time run of that plan whose equal-iterations run is not in this call",
    )
    ap.add_argument("overrides", nargs="*", help="gtgm key=value overrides (e.g. finetune.steps=20 for a smoke test)")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    task = TASKS[a.task]
    refs = prepare(work, task, a.n_ct)
    print(f"[bench] gtgm recipe ({task.preset}) on {task.group} ...", flush=True)
    ours = run_gtgm(work, task, a.label_ratio, refs, a.overrides)
    results = {"gtgm": ours, "nnunet": {}}
    for spec in a.runs:
        which, budget, mirror = spec.split(":")
        name, planned = plan(work, task, which, ours)
        plans = planned.pop("plans")
        batch = plans["configurations"]["3d_fullres"]["batch_size"]
        if budget == "iters":  # equal iterations x batch: the same number of training patches
            iters = math.ceil(ours["steps"] * ours["batch"] / batch)
        else:  # equal wall time: from the seconds per iteration of this plan's equal-iterations run
            given = a.seconds_per_iteration if which == "gtgm" else 0.0
            per_iter = seconds_per_iteration(results["nnunet"], which, mirror, plans, given)
            iters = max(1, round(ours["train"]["wall_s"] / per_iter))
        iters = min(iters, a.max_iters) if a.max_iters else iters
        lr_axis = lr_axis_of(work, plans) if mirror == "nolr" else -1
        print(f"[bench] nnU-Net {spec}: {iters} iterations of batch {batch} ...", flush=True)
        res = run_nnunet(work, name, plans, iters, lr_axis, spec.replace(":", "_"), refs)
        results["nnunet"][spec] = {**res, "planning": planned}
        (work / "results.json").write_text(json.dumps(results, indent=2))
    report(results, task)


def seconds_per_iteration(runs: dict, which: str, mirror: str, plans: dict, given: float = 0.0) -> float:
    """Training seconds per iteration of plan ``which``: measured by its equal-iterations run in this call, else
    ``given`` (``--seconds-per-iteration``), else another plan's measured figure scaled by the patch volumes (a
    rough guess: the wall-time run's table shows its real wall time), else 3.4 s (a 56 x 64 x 64 patch, batch 2,
    on 2 cores)."""
    ref = runs.get(f"{which}:iters:{mirror}") or runs.get(f"{which}:iters:all")
    if ref:
        return ref["train"]["wall_s"] / ref["iterations"]
    if given > 0:
        return given
    voxels = float(np.prod(plans["configurations"]["3d_fullres"]["patch_size"]))
    other = next((r for k, r in runs.items() if ":iters:" in k), None)
    if other:
        return other["train"]["wall_s"] / other["iterations"] * voxels / float(np.prod(other["patch"]))
    return 3.4 * voxels / (56 * 64 * 64)


def report(results: dict, task: Task) -> None:
    ours = results["gtgm"]
    classes = list(ours["dice"])
    head = f"{'run':<22}" + "".join(f"{c:>7}" for c in classes) + f"{'mean':>7}{'wall s':>9}{'cpu s':>9}{'Δmean':>8}"
    print(head)
    base = float(np.mean(list(ours["dice"].values())))
    rows = [(f"gtgm {task.preset.split('/')[-1]}", ours)] + [(f"nnU-Net {k}", v) for k, v in results["nnunet"].items()]
    for name, r in rows:
        mean = float(np.mean(list(r["dice"].values())))
        cells = "".join(f"{r['dice'].get(c, float('nan')):>7.3f}" for c in classes)
        t = r["train"]
        print(f"{name:<22}{cells}{mean:>7.3f}{t['wall_s']:>9.0f}{t['cpu_s']:>9.0f}{mean - base:>+8.3f}")
    for name, r in rows[1:]:
        ratio = r["train"]["wall_s"] / ours["train"]["wall_s"]
        print(
            f"{name}: training wall time {ratio:.2f}x gtgm's, CPU time "
            f"{r['train']['cpu_s'] / ours['train']['cpu_s']:.2f}x; {r['iterations']} iterations x batch {r['batch']}, "
            f"patch {r['patch']} at {r['spacing']} mm"
        )


if __name__ == "__main__":
    main()
