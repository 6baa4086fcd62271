"""nnU-Net v2 driven from Python: plan, preprocess, train, predict, on nnU-Net's own API.

nnU-Net reads its folders (``nnUNet_raw``, ``nnUNet_preprocessed``, ``nnUNet_results``) from the environment when
it is imported, so every step runs in a child process of this very module
(``python -m gtgm.export.nnunet_run OP ARGS.json``) whose environment points into one working folder
(:class:`NnUNetWork`). The parent side (:func:`plan`, :func:`preprocess`, :func:`train`, :func:`predict`) writes the
step's arguments as JSON, runs the child, times it (wall and CPU seconds, the child's) and reads back what the child
wrote; the child side (``_plan``, ``_preprocess``, ``_train``, ``_predict``) only calls nnU-Net.

What the steps add to nnU-Net's defaults, and nothing else:

- ``plan``: a GPU-memory target (CPU-sized networks), a target spacing, a plans name, and optionally a patch size
  (gtgm's field of view) written into the plans with its own ``data_identifier``;
- ``train``: a trainer class by name (``nnUNetTrainer``, ``nnUNetTrainerNoMirroring``, ...), the number of epochs
  × iterations per epoch (the poly schedule ends at the last one; validation iterations per epoch keep nnU-Net's
  250 : 50 ratio), a seed (``random``, NumPy and torch; with ``nnUNet_n_proc_DA=0`` the augmentation runs in the
  training process and follows it), pretrained weights (as ``nnUNetv2_train -pretrained_weights``), and snapshots:
  at the listed epochs the weights are saved as ``checkpoint_ep{N}.pth`` and the training seconds spent so far
  (saving excluded) are recorded in ``anytime.json`` beside them;
- ``predict``: a fold's checkpoint (final, or a snapshot) on a folder of images, sequentially in one process.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtgm.errors import GtgmError
from gtgm.fsutil import read_json, write_json

FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# the trainers gtgm runs, and their modules: nnU-Net's own lookup by name imports trainer modules in turn until one
# holds the name, and some of them import timm, which needs the torchvision gtgm's install removes (README)
TRAINERS = {
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnUNetTrainerNoMirroring": "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring",
}
CONFIGURATION = "3d_fullres"
VAL_PER_TRAIN = 50 / 250  # nnU-Net's validation iterations per training iteration (50 per epoch of 250)


@dataclass(frozen=True)
class NnUNetWork:
    """One nnU-Net working folder: ``root/nnUNet_raw``, ``root/nnUNet_preprocessed`` and ``root/<results>``
    (several result folders can share one preprocessed dataset: one per seed or arm). ``n_proc_da``: nnU-Net's
    augmentation worker processes (``nnUNet_n_proc_DA``; 0 runs it in the training process)."""

    root: Path
    dataset_id: int
    results: str = "nnUNet_results"
    n_proc_da: int = 0

    def env(self, training: bool = False) -> dict[str, str]:
        """The environment of a child step (``training``: with ``nnUNet_n_proc_DA``, which nnU-Net's planner
        would also take for its thread count, where 0 fails)."""
        folders = {
            "nnUNet_raw": "nnUNet_raw",
            "nnUNet_preprocessed": "nnUNet_preprocessed",
            "nnUNet_results": self.results,
        }
        env = {**os.environ, **{k: str((Path(self.root) / v).resolve()) for k, v in folders.items()}}
        env.pop("nnUNet_n_proc_DA", None)
        return {**env, "nnUNet_n_proc_DA": str(self.n_proc_da)} if training else env

    def preprocessed(self) -> Path:
        """``nnUNet_preprocessed/DatasetXXX_Name`` (after :func:`plan`)."""
        found = sorted((Path(self.root) / "nnUNet_preprocessed").glob(f"Dataset{self.dataset_id:03d}_*"))
        if not found:
            raise GtgmError(f"{self.root}/nnUNet_preprocessed: dataset {self.dataset_id} is not planned yet")
        return found[0]

    def plans(self, plans_name: str) -> dict[str, Any]:
        return read_json(self.preprocessed() / f"{plans_name}.json")


def timed(cmd: list[str], env: dict[str, str] | None = None, what: str = "") -> dict[str, float]:
    """Run ``cmd``; its wall time and the CPU time (user + system) of it and its children. A failure is a
    :class:`GtgmError` naming ``what`` (default: the command) with the end of its output."""
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-6:])
        raise GtgmError(f"{what or ' '.join(map(str, cmd))} failed (exit {done.returncode}): {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu}


def _child(work: NnUNetWork, op: str, **args: Any) -> dict[str, Any]:
    """Run step ``op`` in a child process (this module) with ``work``'s environment; the step's result
    (a JSON object) plus its ``wall_s`` / ``cpu_s``."""
    with tempfile.TemporaryDirectory(prefix="gtgm_nnunet_") as tmp:
        request, result = Path(tmp) / "args.json", Path(tmp) / "result.json"
        write_json(request, {**args, "result": str(result)})
        env = work.env(training=op == "train")
        cost = timed([sys.executable, "-m", __name__, op, str(request)], env, f"nnU-Net {op} in {work.root}")
        return {**(read_json(result) if result.is_file() else {}), **cost}


# ---- the parent side --------------------------------------------------------------------------------------------


def raw_dataset(work: NnUNetWork, dataset: str | Path, group: str | None, held_out: list[str]) -> Path:
    """``gtgm data export-nnunet`` of ``group`` into ``root/nnUNet_raw`` with the ``held_out`` cases (the test
    cases) moved out of ``imagesTr`` into ``root/nnunet_test_images`` (what :func:`predict` reads), so that they
    shape neither nnU-Net's fingerprint (intensity percentiles, median shape) nor its plans. Returns that folder;
    a dataset already exported there is kept."""
    from gtgm.data.datasets import load_dataset
    from gtgm.export.nnunet_data import export_nnunet_raw

    raw, held = Path(work.root) / "nnUNet_raw", Path(work.root) / "nnunet_test_images"
    existing = next(raw.glob(f"Dataset{work.dataset_id:03d}_*"), None)
    if existing is not None and held.is_dir():
        return held
    if existing is not None:  # an export torn before its held-out cases were moved: redone
        shutil.rmtree(existing)
    folder = export_nnunet_raw(load_dataset(dataset), group, work.dataset_id, raw)
    moving = held.with_name(held.name + ".tmp")
    shutil.rmtree(moving, ignore_errors=True)
    moving.mkdir(parents=True)
    for case in held_out:
        for image in (folder / "imagesTr").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"):
            image.rename(moving / image.name)
        (folder / "labelsTr" / f"{case}.nii.gz").unlink()
    meta = read_json(folder / "dataset.json")
    write_json(folder / "dataset.json", {**meta, "numTraining": meta["numTraining"] - len(held_out)})
    moving.rename(held)
    return held


def plan(
    work: NnUNetWork,
    plans_name: str,
    planner: str = "nnUNetPlannerResEncM",
    memory_gb: float | None = None,
    spacing: float | None = None,
    patch: list[int] | None = None,
) -> Path:
    """nnU-Net's fingerprint (once per dataset) and ``planner``'s plans named ``plans_name`` of the raw dataset
    ``root/nnUNet_raw/DatasetXXX_*``; returns the plans file. ``spacing``: isotropic target spacing in mm;
    ``patch``: nnU-Net's (z, y, x) patch written into the plans (its network is the planner's)."""
    args = {"dataset": work.dataset_id, "planner": planner, "memory_gb": memory_gb, "spacing": spacing}
    _child(work, "plan", plans_name=plans_name, patch=patch, **args)
    return work.preprocessed() / f"{plans_name}.json"


def preprocess(work: NnUNetWork, plans_name: str) -> dict[str, float]:
    """``nnUNetv2_preprocess`` of the dataset with ``plans_name`` (3d_fullres, one process)."""
    return _child(work, "preprocess", dataset=work.dataset_id, plans_name=plans_name)


def write_split(work: NnUNetWork, train: list[str], val: list[str]) -> Path:
    """Fold 0 of ``splits_final.json``: exactly these training and validation cases."""
    path = work.preprocessed() / "splits_final.json"
    write_json(path, [{"train": list(train), "val": list(val)}])
    return path


def train(
    work: NnUNetWork,
    plans_name: str,
    trainer: str,
    epochs: int,
    per_epoch: int,
    seed: int = 0,
    pretrained: Path | None = None,
    snapshots: list[int] | None = None,
) -> dict[str, Any]:
    """``trainer`` on fold 0 for ``epochs`` × ``per_epoch`` iterations from ``seed`` (and ``pretrained`` weights);
    returns ``{"wall_s", "cpu_s", "train_s", "anytime": [{"epoch", "iterations", "elapsed_s", "checkpoint"}],
    "folder"}`` (``train_s``: ``run_training`` alone, data loaders started to final checkpoint, snapshots' saving
    excluded; ``wall_s`` adds the process's start, nnU-Net's import and the trainer's set-up)."""
    if trainer not in TRAINERS:
        print(f"[nnunet] trainer {trainer} is not one gtgm has run; nnU-Net looks it up by name")
    args = {"dataset": work.dataset_id, "plans_name": plans_name, "trainer": trainer, "epochs": epochs}
    args |= {"per_epoch": per_epoch, "seed": seed, "pretrained": str(pretrained) if pretrained else None}
    return _child(work, "train", snapshots=sorted(set(snapshots or [])), **args)


def predict(work: NnUNetWork, plans_name: str, trainer: str, jobs: list[tuple[Path, Path, str]]) -> dict[str, float]:
    """For each ``(images, out, checkpoint)`` of ``jobs``: fold 0's ``checkpoint`` (``checkpoint_final.pth``, or a
    snapshot) on every image of ``images`` (``CASE_0000.nii.gz``) into ``out`` (``CASE.nii.gz``), with the trainer's
    test-time mirroring (none for ``nnUNetTrainerNoMirroring``); one process for all of them."""
    args = {"dataset": work.dataset_id, "plans_name": plans_name, "trainer": trainer}
    return _child(work, "predict", jobs=[[str(i), str(o), c] for i, o, c in jobs], **args)


# ---- the child side (nnU-Net imported here, with the folders set) -----------------------------------------------


def _direct_trainer_lookup() -> None:
    """Make nnU-Net's training and inference find :data:`TRAINERS` by their modules (others: its own search)."""
    import importlib

    import nnunetv2.inference.predict_from_raw_data as inference
    import nnunetv2.run.run_training as training

    search = training.recursive_find_trainer_class_by_name

    def find(name: str) -> Any:
        return getattr(importlib.import_module(TRAINERS[name]), name) if name in TRAINERS else search(name)

    training.recursive_find_trainer_class_by_name = inference.recursive_find_trainer_class_by_name = find


def _plan(dataset: int, plans_name: str, planner: str, memory_gb: float | None, spacing: float | None,
          patch: list[int] | None, **_: Any) -> dict[str, Any]:  # fmt: skip
    import torch
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    if not list(Path(os.environ["nnUNet_preprocessed"]).glob(f"Dataset{dataset:03d}_*/dataset_fingerprint.json")):
        extract_fingerprints([dataset], num_processes=1, check_dataset_integrity=True)
    extra = {"overwrite_target_spacing": (float(spacing),) * 3} if spacing else {}
    extra |= {"gpu_memory_target_in_gb": memory_gb, "overwrite_plans_name": plans_name}
    # the planner builds dozens of candidate networks only to count their feature maps: on the meta device their
    # weights are never initialised (the same plans; 2.6 s instead of 20 s for the demo's dataset on 2 cores)
    with torch.device("meta"):
        plan_experiments([dataset], planner, **extra)
    path = next(Path(os.environ["nnUNet_preprocessed"]).glob(f"Dataset{dataset:03d}_*")) / f"{plans_name}.json"
    if patch:  # gtgm's field of view; its own preprocessed folder (another plan may hold another spacing)
        plans = read_json(path)
        conf = plans["configurations"][CONFIGURATION]
        conf["patch_size"], conf["data_identifier"] = [int(p) for p in patch], f"{plans_name}_{CONFIGURATION}"
        write_json(path, plans)
    return {"plans": str(path)}


def _preprocess(dataset: int, plans_name: str, **_: Any) -> dict[str, Any]:
    from nnunetv2.experiment_planning.plan_and_preprocess_api import preprocess

    preprocess([dataset], plans_name, configurations=[CONFIGURATION], num_processes=[1])
    return {}


def _train(dataset: int, plans_name: str, trainer: str, epochs: int, per_epoch: int, seed: int,
           pretrained: str | None, snapshots: list[int], **_: Any) -> dict[str, Any]:  # fmt: skip
    import numpy as np
    import torch
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.run.run_training import get_trainer_from_args

    _direct_trainer_lookup()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    t = get_trainer_from_args(str(dataset), CONFIGURATION, 0, trainer, plans_name, device=torch.device("cpu"))
    t.num_epochs, t.num_iterations_per_epoch = int(epochs), int(per_epoch)
    t.num_val_iterations_per_epoch = max(1, round(per_epoch * VAL_PER_TRAIN))
    if pretrained:  # what nnUNetv2_train -pretrained_weights does
        t.initialize()
        load_pretrained_weights(t.network, pretrained, verbose=False)
    anytime = _record_snapshots(t, set(snapshots), per_epoch)
    start = time.perf_counter()
    t.run_training()
    folder = Path(t.output_folder)
    write_json(folder / "anytime.json", anytime)
    return {"train_s": time.perf_counter() - start - sum(a["save_s"] for a in anytime), "anytime": anytime,
            "folder": str(folder)}  # fmt: skip


def _record_snapshots(t: Any, epochs: set[int], per_epoch: int) -> list[dict[str, Any]]:
    """Wrap the trainer's ``on_epoch_end``: after each epoch in ``epochs`` (1-based) save the weights as
    ``checkpoint_ep{N}.pth`` and record the training seconds so far (since its first epoch started, saving
    excluded). Returns the list the records are appended to."""
    anytime: list[dict[str, Any]] = []
    end_of_epoch, clock = t.on_epoch_end, {"start": None, "saving": 0.0}
    start_of_epoch = t.on_epoch_start

    def on_epoch_start() -> None:
        clock["start"] = clock["start"] or time.perf_counter()
        start_of_epoch()

    def on_epoch_end() -> None:
        epoch = t.current_epoch + 1
        end_of_epoch()
        if epoch in epochs:
            now = time.perf_counter()
            name = f"checkpoint_ep{epoch}.pth"
            t.save_checkpoint(str(Path(t.output_folder) / name))
            saved = time.perf_counter() - now
            elapsed = now - clock["start"] - clock["saving"]
            clock["saving"] += saved
            anytime.append({"epoch": epoch, "iterations": epoch * per_epoch, "elapsed_s": elapsed,
                            "checkpoint": name, "save_s": saved})  # fmt: skip

    t.on_epoch_start, t.on_epoch_end = on_epoch_start, on_epoch_end
    return anytime


def _predict(dataset: int, plans_name: str, trainer: str, jobs: list[list[str]], **_: Any) -> dict[str, Any]:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    _direct_trainer_lookup()
    model = get_output_folder(dataset, trainer, plans_name, CONFIGURATION)
    for images, out, checkpoint in jobs:
        predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(model, use_folds=(0,), checkpoint_name=checkpoint)
        Path(out).mkdir(parents=True, exist_ok=True)
        predictor.predict_from_files_sequential(images, out, save_probabilities=False, overwrite=True)
    return {}


OPS = {"plan": _plan, "preprocess": _preprocess, "train": _train, "predict": _predict}


def main(argv: list[str]) -> int:
    """The child: ``OP ARGS.json``; writes the step's result to the ``result`` path the arguments name."""
    if len(argv) != 2 or argv[0] not in OPS:
        print(f"usage: python -m gtgm.export.nnunet_run {{{','.join(OPS)}}} ARGS.json", file=sys.stderr)
        return 2
    args = read_json(argv[1])
    write_json(args["result"], OPS[argv[0]](**args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
