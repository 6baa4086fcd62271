"""nnU-Net trained from gtgm's weights vs from scratch, with one labelled CT phantom (issue 24's moonshot).

    python benchmarks/bench_nnunet_pretrained.py --work runs/nnunet_pretrained [--seeds 0 1] [--pretrain-steps 20 150]
        [--finetune-steps 200] [--n-ct 10]

1. the CT phantoms and gtgm's cache at 5.5 mm (``bench_vs_nnunet.prepare``: 6 training, 1 validation, 3 test
   phantoms); the one labelled case is the first training case of gtgm's split at ``finetune.label_ratio=0.01``;
2. nnU-Net's fingerprint (test phantoms left out) and its ResEnc-M planner at gtgm's 5.5 mm with the demo's CPU
   memory target (``gtgm.demo.exports``: 3 stages, 32 / 64 / 128 features) with its patch set to gtgm's field of
   view (:data:`PATCH`), ``nnUNetv2_preprocess``;
   ``splits_final.json``: fold 0 trains on the one labelled case and validates on gtgm's validation case;
3. per seed and pretraining length (``--pretrain-steps``; default the demo's resenc length, 20 steps, and a
   longer one, 150): captions of the cache (describe) embedded with MiniLM once, then ``gtgm pretrain`` of the
   encoder those plans describe with GTGM's chosen variant (``gtgm_vicreg``; the validation and test phantoms are
   reserved, as in the study), exported with ``gtgm export nnunet`` (kernels permuted and mirrored to nnU-Net's grid);
4. per seed, fine-tuning runs on the one labelled case: nnU-Net (``nnUNetTrainer`` with ``num_epochs`` cut to
   equal iterations × batch to gtgm's recipe, every default kept: mirroring, lr 0.01, poly schedule) from scratch
   and from each export (``load_pretrained_weights``, as ``nnUNetv2_train -pretrained_weights``); gtgm's own
   fine-tuning (``finetune/cpu-small``, the same resenc network) from scratch and from each ``encoder.pt``;
5. every run's test predictions scored by the same ``gtgm evaluate`` at the native grid; paired differences
   (pretrained − scratch) per (seed, test case) with the study's hierarchical 95 % interval (test cases × seeds,
   each seed with its own pretraining run). Results: ``WORK/moonshot.json`` (written after every seed). Each run's
   folder names its seed and budget (and pretraining), so a rerun reuses only finished runs of the same settings.

The seed sets the network's initialisation and nnU-Net's patch sampling and augmentation (``nnUNet_n_proc_DA=0``:
in the training process, whose NumPy stream is seeded); the export's decoder is initialised from a fixed seed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from bench_vs_nnunet import (
    DATASET_ID,
    GTGM,
    TASKS,
    class_dice,
    export_without_test,
    gtgm_finetune,
    nnunet_env,
    nnunet_predict,
    nnunet_tool,
    prepare,
    timed,
)
from gtgm.study.arms import PRETRAIN_ARMS

TASK = TASKS["phantoms"]
PLANS = "nnUNetResEncUNetCPUPlans_gtgm_spacing"
TRAIN = """
import random, sys
import numpy as np, torch
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.run.run_training import get_trainer_from_args
dataset, plans, weights = sys.argv[1], sys.argv[2], sys.argv[6]
iters, per_epoch, seed = (int(v) for v in sys.argv[3:6])
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
t = get_trainer_from_args(dataset, "3d_fullres", 0, "nnUNetTrainer", plans, device=torch.device("cpu"))
t.num_iterations_per_epoch, t.num_val_iterations_per_epoch = per_epoch, 2
t.num_epochs = max(1, iters // per_epoch)
if weights:  # what nnUNetv2_train -pretrained_weights does
    t.initialize()
    load_pretrained_weights(t.network, weights, verbose=False)
t.run_training()
"""
# nnU-Net's (z, y, x) patch: gtgm's fine-tuning field of view (64 x 64 x 32 in x, y, z). The CPU memory target
# plans 20 x 28 x 28 (110 x 154 mm), which cannot see both sides of the body (the only cue that tells liver from
# spleen on the phantoms) and takes ~8 min per test phantom to predict on 2 cores; the 3-stage network is kept.
PATCH = [32, 64, 64]
NETS = ("nnunet", "gtgm")  # who fine-tunes: nnU-Net's trainer, gtgm's finetune/cpu-small
VICREG = PRETRAIN_ARMS["gtgm_vicreg"]  # GTGM's variant chosen on validation in the study


def one_case_split(work: Path) -> dict[str, list[str]]:
    """gtgm's split of the phantoms with one labelled training case (the cases nnU-Net's fold 0 gets too)."""
    import dataclasses

    from gtgm.config import load_config
    from gtgm.data.patches import VolumeCache
    from gtgm.data.splits import make_split

    cfg = load_config(TASK.preset, splits_overrides())
    cache = VolumeCache(work / "cache", group=TASK.group, labeled=True)
    split = make_split(cache, dataclasses.replace(cfg.finetune, group=TASK.group))
    return {k: [cache.entries[p.case]["id"] for p in v] for k, v in split.items()}


def splits_overrides() -> list[str]:
    return [
        f"finetune.test_cases={list(TASK.test)}",
        f"finetune.val_cases={list(TASK.val)}",
        "finetune.label_ratio=0.01",
    ]


def plan_resenc(work: Path, split: dict[str, list[str]]) -> Path:
    """nnU-Net's ResEnc-M plan at gtgm's spacing (CPU memory target), preprocessed, with the one-case fold 0."""
    from gtgm.demo.exports import CPU_MEMORY_TARGET_GB, PLAN

    env = nnunet_env(work)
    done = work / "nnunet_planned.json"  # written once the plans are preprocessed: a torn step is redone
    if not done.is_file():
        shutil.rmtree(work / "nnUNet_preprocessed", ignore_errors=True)
        export_without_test(work, TASK)
        cmd = [sys.executable, "-c", PLAN, str(DATASET_ID), str(CPU_MEMORY_TARGET_GB), PLANS, str(TASK.spacing)]
        timed(cmd, env)
        planned = next(work.glob(f"nnUNet_preprocessed/Dataset{DATASET_ID}_*/{PLANS}.json"))
        plans = json.loads(planned.read_text())
        plans["configurations"]["3d_fullres"]["patch_size"] = PATCH
        # its own preprocessed folder: the default plans' "nnUNetPlans_3d_fullres" may hold another spacing
        plans["configurations"]["3d_fullres"]["data_identifier"] = f"{PLANS}_3d_fullres"
        planned.write_text(json.dumps(plans, indent=2))
        pre = [nnunet_tool("nnUNetv2_preprocess"), "-d", str(DATASET_ID), "-plans_name", PLANS, "-c", "3d_fullres"]
        timed([*pre, "-np", "1"], env)
        done.write_text(json.dumps({"plans": str(planned)}))
    plans = Path(json.loads(done.read_text())["plans"])
    (plans.parent / "splits_final.json").write_text(json.dumps([{"train": split["train"], "val": split["val"]}]))
    return plans


def resenc_model(plans: Path) -> list[str]:
    """The gtgm overrides of the resenc encoder the plans describe (``gtgm export resenc-config``)."""
    import subprocess

    out = subprocess.run([*GTGM, "export", "resenc-config", "--plans", str(plans)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"gtgm export resenc-config failed: {out.stderr[-2000:]}")
    return out.stdout.split()


def pretrain(work: Path, plans: Path, model: list[str], seed: int, steps: int) -> Path:
    """GTGM (gtgm_vicreg) pretraining of the planned encoder; returns the nnU-Net export's weights file."""
    if not (work / "text").is_dir():
        timed([*GTGM, "caption", str(work / "cache"), "--out", str(work / "captions.jsonl")])
        timed([*GTGM, "embed-text", str(work / "captions.jsonl"), "--out", str(work / "text")])
    run = work / f"pretrain_seed{seed}_steps{steps}"
    if not (run / "encoder.pt").is_file():
        resume = ["--resume"] if (run / "checkpoints" / "last.pt").is_file() else []
        args = [*GTGM, "pretrain", "--config", "pretrain/cpu-small", "--cache", str(work / "cache")]
        args += ["--captions", str(work / "captions.jsonl"), "--text-cache", str(work / "text"), "--out", str(run)]
        args += [*model, *VICREG, f"seed={seed}", f"pretrain.steps={steps}", f"pretrain.eval_every={steps}"]
        timed([*args, *splits_overrides(), *resume])
    weights = run / "nnunet" / "pretrained_weights.pth"
    if not weights.is_file() or weights.stat().st_mtime < (run / "encoder.pt").stat().st_mtime:
        timed([*GTGM, "export", "nnunet", str(run / "encoder.pt"), "--plans", str(plans), "--out", str(run / "nnunet")])
    return weights


def finished(out: Path, metrics: Path) -> dict:
    """A finished run: mean Dice per test case and its training time (``out/train.json``)."""
    return {"cases": class_dice(metrics, by="case"), "train": json.loads((out / "train.json").read_text())}


def run_nnunet(work: Path, iters: int, seed: int, weights: Path | None) -> dict:
    per_epoch = max(d for d in range(1, min(50, iters) + 1) if iters % d == 0)  # epochs x per_epoch = iters
    tag = f"nnunet_{'from_' + weights.parent.parent.name if weights else 'scratch'}_seed{seed}_it{iters}"
    # augmentation in this process (nnUNet_n_proc_DA=0): its workers would draw their own unseeded streams
    env = {**nnunet_env(work, f"results_{tag}"), "nnUNet_n_proc_DA": "0"}
    out = work / f"pred_{tag}"
    if not (out / "metrics" / "metrics.csv").is_file():
        shutil.rmtree(work / f"results_{tag}", ignore_errors=True)
        cmd = [sys.executable, "-c", TRAIN, str(DATASET_ID), PLANS, str(iters), str(per_epoch), str(seed)]
        train = timed([*cmd, str(weights or "")], env)
        nnunet_predict(work, PLANS, out, work / "refs", env)
        (out / "train.json").write_text(json.dumps(train))
    return finished(out, out / "metrics" / "metrics.csv")


def run_gtgm(work: Path, model: list[str], steps: int, seed: int, encoder: Path | None) -> dict:
    out = work / f"gtgm_{'from_' + encoder.parent.name if encoder else 'scratch'}_seed{seed}_steps{steps}"
    if not (out / "pred" / "metrics.csv").is_file():
        extra = [*model, "finetune.label_ratio=0.01", f"finetune.steps={steps}", f"seed={seed}"]
        train, _ = gtgm_finetune(
            work, TASK, out, work / "refs", [*extra, *(["--pretrained", str(encoder)] if encoder else [])]
        )
        (out / "train.json").write_text(json.dumps(train))
    return finished(out, out / "pred" / "metrics.csv")


def compare(runs: dict[str, dict[int, dict]], arm: str, base: str) -> dict:
    """``arm`` − ``base`` per (seed, test case), with the study's hierarchical interval."""
    from gtgm.study.stats import hierarchical_bootstrap

    diffs, cases, seeds = [], [], []
    for seed, r in runs[arm].items():
        for case, dice in r["cases"].items():
            diffs.append(dice - runs[base][seed]["cases"][case])
            cases.append(case)
            seeds.append(seed)
    return hierarchical_bootstrap(diffs, cases, seeds)


def main() -> None:
    from gtgm.demo.exports import RESENC_STEPS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/nnunet_pretrained"))
    ap.add_argument("--n-ct", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument(
        "--pretrain-steps",
        type=int,
        nargs="+",
        default=[RESENC_STEPS, 150],
        help="one pretraining per length and seed (default: the demo's resenc length, 20 steps, and a longer one)",
    )
    ap.add_argument("--finetune-steps", type=int, default=200, help="gtgm's steps (batch 2); nnU-Net: equal x batch")
    ap.add_argument("--nets", nargs="+", choices=NETS, default=list(NETS), help="who fine-tunes (default: both)")
    a = ap.parse_args()
    work = a.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work, TASK, a.n_ct)
    split = one_case_split(work)
    plans = plan_resenc(work, split)
    model = resenc_model(plans)
    conf = json.loads(plans.read_text())["configurations"]["3d_fullres"]
    iters = max(1, round(a.finetune_steps * 2 / conf["batch_size"]))
    print(
        f"[bench] one labelled case {split['train']}; nnU-Net {iters} iterations x batch {conf['batch_size']}, "
        f"patch {conf['patch_size']}; gtgm {a.finetune_steps} steps x batch 2; pretraining {a.pretrain_steps} steps",
        flush=True,
    )
    arms = [f"{who}_{start}" for start in ["scratch", *(f"gtgm{n}" for n in a.pretrain_steps)] for who in a.nets]
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    if (work / "moonshot.json").is_file():  # keep the other arms' results (e.g. an earlier call's other --nets)
        old = json.loads((work / "moonshot.json").read_text())["runs"]
        runs |= {arm: {int(s): r for s, r in by_seed.items()} for arm, by_seed in old.items() if arm not in runs}
    result = {"split": split, "plans": str(plans), "iterations": iters, "runs": runs}
    fine_tune = {  # who fine-tunes, from a pretraining's nnU-Net weights file (None: from scratch)
        "nnunet": lambda seed, weights: run_nnunet(work, iters, seed, weights),
        "gtgm": lambda seed, weights: run_gtgm(
            work, model, a.finetune_steps, seed, weights and weights.parent.parent / "encoder.pt"
        ),
    }
    for seed in a.seeds:
        for who in a.nets:
            runs[f"{who}_scratch"][seed] = fine_tune[who](seed, None)
        for steps in a.pretrain_steps:
            weights = pretrain(work, plans, model, seed, steps)
            for who in a.nets:
                runs[f"{who}_gtgm{steps}"][seed] = fine_tune[who](seed, weights)
        (work / "moonshot.json").write_text(json.dumps(result, indent=2))
        for arm in arms:  # this call's arms: kept ones from an earlier call may lack this seed
            dice, wall = np.mean(list(runs[arm][seed]["cases"].values())), runs[arm][seed]["train"]["wall_s"]
            print(f"[bench] seed {seed} {arm:<17} mean Dice {dice:.3f} ({wall:.0f} s)", flush=True)
    for arm in arms:
        base = arm.split("_")[0] + "_scratch"
        if arm != base:
            d = result[f"{arm} - {base}"] = compare(runs, arm, base)
            print(f"{arm} - {base}: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] ({d['n']} pairs)")
    (work / "moonshot.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
