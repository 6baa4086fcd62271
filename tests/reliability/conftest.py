"""Shared inputs and checks of the bad-input and fault tests."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from gtgm.cli import main
from gtgm.fsutil import write_json
from tests.conftest import save_nifti


def tree(root: Path) -> dict[str, str]:
    """relative path -> SHA-256 of the bytes ('dir' for folders) of everything under ``root``."""
    return {
        p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def fails_cleanly(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and err.count("gtgm: error:") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


class Inputs:
    """Shared inputs, built once per module; ``copy`` puts a private copy into a test's folder."""

    def __init__(self, root: Path, demo: Path):
        self.raw = root / "raw"
        self.demo = demo
        lab = np.zeros((16, 16, 16), np.uint8)
        lab[4:10, 4:10, 4:10] = 1
        training = []
        for i in range(3):
            img = np.random.default_rng(i).normal(size=(16, 16, 16)).astype(np.float32)
            save_nifti(self.raw / "imagesTr" / f"c{i}.nii.gz", img)
            save_nifti(self.raw / "labelsTr" / f"c{i}.nii.gz", lab)
            training.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
        labels = {"0": "background", "1": "lesion"}
        write_json(self.raw / "dataset.json", {"modality": {"0": "MRI"}, "labels": labels, "training": training})
        self.cache = root / "cache"
        assert main(["data", "preprocess", str(self.raw), "--out", str(self.cache)]) == 0
        self.captions = demo / "captions.jsonl"
        self.text = demo / "text"
        self.demo_cache = demo / "cache"
        self.encoder = demo / "pretrain" / "encoder.pt"
        self.best = next((demo / "study").rglob("ct_phantom/*/ratio1_seed0/best.pt"))

    def copy(self, src: Path, dest: Path) -> Path:
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        return dest


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, demo_run) -> Inputs:
    return Inputs(tmp_path_factory.mktemp("inputs"), demo_run)


def pretrain_argv(inp: Inputs, out: Path, captions=None, text=None, *extra: str) -> list[str]:
    return [
        "pretrain",
        "--cache",
        str(inp.demo_cache),
        "--captions",
        str(captions or inp.captions),
        "--text-cache",
        str(text or inp.text),
        "--out",
        str(out),
        "pretrain.steps=1",
        "pretrain.num_workers=0",
        *extra,
    ]


def finetune_argv(inp: Inputs, out: Path, *extra: str) -> list[str]:
    return ["finetune", str(inp.demo_cache), "--group", "ct_phantom", "--out", str(out), "finetune.steps=1", *extra]
