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


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `gtgm demo` run (example corpus + cache + report), shared by the tests that read it. No test may write
    into it: its files are hashed when it is made and again when the session ends, and a change fails the session."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--no-real", *TINY_DEMO]) == 0  # hermetic: no package index
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
