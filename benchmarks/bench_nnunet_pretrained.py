"""nnU-Net trained from gtgm's weights vs from scratch, with one labelled CT phantom (issue 24's moonshot).

    python benchmarks/bench_nnunet_pretrained.py --work runs/nnunet_pretrained [--seeds 0 1] [--pretrain-steps 20 150]
        [--finetune-steps 200]

Every nnU-Net step runs through :mod:`gtgm.export.nnunet_run`.

1. the CT phantoms and gtgm's cache at 5.5 mm (``gtgm.study.vs_nnunet.prepare_task``: 6 training, 1 validation, 3 test
   phantoms); the one labelled case is the first training case of gtgm's split at ``finetune.label_ratio=0.01``;
2. nnU-Net's fingerprint (test phantoms left out) and its ResEnc-M planner at gtgm's 5.5 mm with the demo's CPU
   memory target (:data:`MEMORY_GB`: 3 stages, 32 / 64 / 128 features) with its patch set to gtgm's field of
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
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from gtgm.export.nnunet import resenc_overrides
from gtgm.export.nnunet_run import NnUNetWork, plan, predict, preprocess, raw_dataset, timed, train, write_split
from gtgm.fsutil import read_json, write_json
from gtgm.study.arms import PRETRAIN_ARMS
from gtgm.study.vs_nnunet import TASKS, case_dice, prepare_task

TASK = TASKS["phantoms"]
GTGM = [sys.executable, "-m", "gtgm"]
DATASET_ID, PLANS = 777, "nnUNetResEncUNetCPUPlans_gtgm_spacing"
MEMORY_GB = 0.05  # the demo's CPU memory target: 3 stages, 32 / 64 / 128 features
RESENC_STEPS = 20  # the demo's resenc pretraining length
# nnU-Net's (z, y, x) patch: gtgm's fine-tuning field of view (64 x 64 x 32 in x, y, z). The CPU memory target
# plans 20 x 28 x 28 (110 x 154 mm), which cannot see both sides of the body (the only cue that tells liver from
# spleen on the phantoms) and takes ~8 min per test phantom to predict on 2 cores; the 3-stage network is kept.
PATCH = TASK.nnunet_patch()  # [32, 64, 64]
NETS = ("nnunet", "gtgm")  # who fine-tunes: nnU-Net's trainer, gtgm's finetune/cpu-small
VICREG = list(PRETRAIN_ARMS["gtgm_vicreg"].objective)  # GTGM's variant chosen on validation in the study


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


def plan_resenc(work: Path, split: dict[str, list[str]]) -> tuple[NnUNetWork, Path]:
    """nnU-Net's ResEnc-M plan at gtgm's spacing (CPU memory target, gtgm's patch), preprocessed, with the one-case
    fold 0 (through :mod:`gtgm.export.nnunet_run`)."""
    nn = NnUNetWork(work, DATASET_ID, n_proc_da=0)  # augmentation in the (seeded) training process
    done = work / "nnunet_planned.json"  # written once the plans are preprocessed: a torn step is redone
    if not done.is_file():
        shutil.rmtree(work / "nnUNet_preprocessed", ignore_errors=True)
        raw_dataset(nn, work / TASK.data, TASK.group, list(TASK.test))
        plan(nn, PLANS, memory_gb=MEMORY_GB, spacing=TASK.spacing, patch=PATCH)
        preprocess(nn, PLANS)
        write_json(done, {"plans": PLANS})
    write_split(nn, split["train"], split["val"])
    (work / "nnunet_val_images").mkdir(exist_ok=True)
    return nn, nn.preprocessed() / f"{PLANS}.json"


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


def finished(work: Path, out: Path, pred: Path) -> dict:
    """A finished run: mean Dice per test case (``pred`` against ``work/refs``) and its training time
    (``out/train.json``)."""
    return {"cases": case_dice(pred, work / "refs"), "train": read_json(out / "train.json")}


def run_nnunet(work: Path, nn: NnUNetWork, iters: int, seed: int, weights: Path | None) -> dict:
    per_epoch = max(d for d in range(1, min(50, iters) + 1) if iters % d == 0)  # epochs x per_epoch = iters
    tag = f"nnunet_{'from_' + weights.parent.parent.name if weights else 'scratch'}_seed{seed}_it{iters}"
    run_nn, out = replace(nn, results=f"results_{tag}"), work / f"pred_{tag}"
    if not (out / "metrics" / "metrics.csv").is_file():
        shutil.rmtree(work / run_nn.results, ignore_errors=True)
        done = train(run_nn, PLANS, "nnUNetTrainer", iters // per_epoch, per_epoch, seed=seed, pretrained=weights)
        predict(run_nn, PLANS, "nnUNetTrainer", [(work / "nnunet_test_images", out, "checkpoint_final.pth")])
        write_json(out / "train.json", {k: done[k] for k in ("wall_s", "cpu_s", "train_s")})
    return finished(work, out, out)


def run_gtgm(work: Path, model: list[str], steps: int, seed: int, encoder: Path | None) -> dict:
    from gtgm.infer.predict import predict_inputs

    out = work / f"gtgm_{'from_' + encoder.parent.name if encoder else 'scratch'}_seed{seed}_steps{steps}"
    if not (out / "pred" / "metrics" / "metrics.csv").is_file():
        shutil.rmtree(out, ignore_errors=True)
        args = [*GTGM, "finetune", str(work / "cache"), "--group", TASK.group, "--out", str(out)]
        args += ["--config", TASK.preset, *splits_overrides(), *model, f"finetune.steps={steps}", f"seed={seed}"]
        cost = timed([*args, *(["--pretrained", str(encoder)] if encoder else [])])
        predict_inputs(out / "best.pt", [TASK.image(work, c) for c in TASK.test], out / "pred")
        write_json(out / "train.json", cost)
    return finished(work, out, out / "pred")


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
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/nnunet_pretrained"))
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
    prepare_task(work, TASK)
    split = one_case_split(work)
    nn, plans = plan_resenc(work, split)
    model = resenc_overrides(plans)
    conf = read_json(plans)["configurations"]["3d_fullres"]
    iters = max(1, round(a.finetune_steps * 2 / conf["batch_size"]))
    print(
        f"[bench] one labelled case {split['train']}; nnU-Net {iters} iterations x batch {conf['batch_size']}, "
        f"patch {conf['patch_size']}; gtgm {a.finetune_steps} steps x batch 2; pretraining {a.pretrain_steps} steps",
        flush=True,
    )
    arms = [f"{who}_{start}" for start in ["scratch", *(f"gtgm{n}" for n in a.pretrain_steps)] for who in a.nets]
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in arms}
    if (work / "moonshot.json").is_file():  # keep the other arms' results (e.g. an earlier call's other --nets)
        old = read_json(work / "moonshot.json")["runs"]
        runs |= {arm: {int(s): r for s, r in by_seed.items()} for arm, by_seed in old.items() if arm not in runs}
    result = {"split": split, "plans": str(plans), "iterations": iters, "runs": runs}
    fine_tune = {  # who fine-tunes, from a pretraining's nnU-Net weights file (None: from scratch)
        "nnunet": lambda seed, weights: run_nnunet(work, nn, iters, seed, weights),
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
        write_json(work / "moonshot.json", result)
        for arm in arms:  # this call's arms: kept ones from an earlier call may lack this seed
            dice, wall = np.mean(list(runs[arm][seed]["cases"].values())), runs[arm][seed]["train"]["wall_s"]
            print(f"[bench] seed {seed} {arm:<17} mean Dice {dice:.3f} ({wall:.0f} s)", flush=True)
    for arm in arms:
        base = arm.split("_")[0] + "_scratch"
        if arm != base:
            d = result[f"{arm} - {base}"] = compare(runs, arm, base)
            print(f"{arm} - {base}: {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] ({d['n']} pairs)")
    write_json(work / "moonshot.json", result)


if __name__ == "__main__":
    main()
