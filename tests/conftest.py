"""Shared fixtures: tiny volumes written by the tests, and one demo run shared by the session."""

from __future__ import annotations

import contextlib
import subprocess
import sys
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
    "study.ratios=[1.0]",
    "study.arms=[scratch, pretrained]",  # the demo runs the pretrained arm; with scratch, the report's paired gain
]


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One `gtgm demo` run (example corpus + cache + report), shared by the tests that read it."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), "--no-real", *TINY_DEMO]) == 0  # hermetic: no package index
    return out


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
