"""Faults and integrity: a full disk or a read-only folder is one clear line and keeps earlier outputs; a cache
index is merged, never replaced; temporary files of a killed run are cleaned; failed runs leave no empty folder."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gtgm.cli import main
from gtgm.fsutil import write_json
from tests.conftest import save_nifti
from tests.reliability.conftest import fails_cleanly, finetune_argv, pretrain_argv, tree


def _dataset(root, ids, value=1.0):
    training = []
    for cid in ids:
        img = value + np.random.default_rng(len(training)).random((12, 12, 12)).astype(np.float32)
        save_nifti(root / f"{cid}.nii.gz", img)
        training.append({"image": f"{cid}.nii.gz", "id": cid})
    write_json(root / "dataset.json", {"modality": {"0": "MRI"}, "training": training})
    return root


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(args[0]) if args else None)


def test_a_full_disk_during_preprocess_keeps_the_cached_cases(tmp_path, capsys, monkeypatch):
    raw = _dataset(tmp_path / "raw", ["a", "b"])
    cache = tmp_path / "cache"
    assert main(["data", "preprocess", str(raw), "--out", str(cache)]) == 0
    before = tree(tmp_path)
    monkeypatch.setattr(np, "save", _no_space)  # every array write fails, as on a full disk
    argv = ["data", "preprocess", str(raw), "--out", str(cache), "preprocess.mri_percentiles=[1,99]"]
    fails_cleanly(capsys, argv, "no space left")
    assert tree(tmp_path) == before  # old arrays, JSON and index untouched; no temporary file left


def test_a_full_disk_in_a_fresh_cache_leaves_no_folder(tmp_path, capsys, monkeypatch):
    raw = _dataset(tmp_path / "raw", ["a"])
    monkeypatch.setattr(np, "save", _no_space)
    fails_cleanly(capsys, ["data", "preprocess", str(raw), "--out", str(tmp_path / "cache")], "no space left")
    assert not (tmp_path / "cache").exists()


def test_a_read_only_folder_while_captioning_is_one_line(tmp_path, capsys, monkeypatch):
    raw = _dataset(tmp_path / "raw", ["a"])
    assert main(["data", "preprocess", str(raw), "--out", str(tmp_path / "cache")]) == 0
    real_open = os.open

    def read_only(path, flags, *a):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", read_only)
    before = tree(tmp_path)
    argv = ["caption", str(tmp_path / "cache"), "--out", str(tmp_path / "caps.jsonl"), "caption.min_foreground=0"]
    fails_cleanly(capsys, argv, "caps.jsonl", "read-only file system")
    assert tree(tmp_path) == before


def test_a_full_disk_at_a_checkpoint_says_so(demo_run, tmp_path, capsys, monkeypatch):
    def torch_full_disk(obj, f, *a, **k):  # what torch raises when the disk fills during torch.save
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4304")

    monkeypatch.setattr(torch, "save", torch_full_disk)
    run = tmp_path / "run"
    argv = ["pretrain", "--cache", str(demo_run / "cache"), "--captions", str(demo_run / "captions.jsonl")]
    argv += ["--text-cache", str(demo_run / "text"), "--out", str(run), "pretrain.steps=1", "pretrain.num_workers=0"]
    fails_cleanly(capsys, argv, "no space left", ".pt")
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_a_second_dataset_is_merged_into_the_cache_index(tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["data", "preprocess", str(_dataset(tmp_path / "one", ["a", "b"])), "--out", str(cache)]) == 0
    assert main(["data", "preprocess", str(_dataset(tmp_path / "two", ["c"])), "--out", str(cache)]) == 0
    index = json.loads((cache / "index.json").read_text())
    assert sorted(c["id"] for c in index["cases"]) == ["a", "b", "c"]
    assert "kept the 2 cases" in capsys.readouterr().out
    clash = _dataset(tmp_path / "three", ["a"], value=2.0)
    before = tree(tmp_path)
    fails_cleanly(capsys, ["data", "preprocess", str(clash), "--out", str(cache)], "'a'", "already cached")
    assert tree(tmp_path) == before  # the other dataset's case a is not overwritten


@pytest.mark.parametrize("folder", ["volumes", "."])
def test_temporary_files_of_a_killed_run_are_removed(tmp_path, folder):
    raw = _dataset(tmp_path / "raw", ["a"])
    cache = tmp_path / "cache"
    assert main(["data", "preprocess", str(raw), "--out", str(cache)]) == 0
    stale = cache / folder / ".a.npy.k3j2h1g0.tmp.npy"  # as atomic_path names them
    stale.write_bytes(b"half an array")
    assert main(["data", "preprocess", str(raw), "--out", str(cache)]) == 0
    assert not stale.exists()


def _stage_argv(stage, tmp, inp):
    """The command line of ``stage`` writing under ``tmp`` (inputs from the shared ``inputs`` fixture)."""
    if stage == "examples":
        return ["data", "examples", "--out", str(tmp / "ex"), "--n-ct", "1", "--n-em", "1"]
    if stage == "preprocess":
        return ["data", "preprocess", str(inp.raw), "--out", str(tmp / "cache")]
    if stage == "caption":
        return ["caption", str(inp.cache), "--out", str(tmp / "c.jsonl")]
    if stage == "embed-text":
        (tmp / "two.jsonl").write_text('{"key": "a", "text": "one"}\n{"key": "b", "text": "two"}\n')
        return ["embed-text", str(tmp / "two.jsonl"), "--out", str(tmp / "text")]
    if stage == "pretrain":
        return pretrain_argv(inp, tmp / "run")
    if stage == "finetune":
        return finetune_argv(inp, tmp / "ft")
    if stage == "predict":
        return ["predict", str(inp.best), str(inp.raw / "imagesTr" / "c0.nii.gz"), "--out", str(tmp / "pred")]
    if stage == "evaluate":
        return ["evaluate", str(inp.raw / "labelsTr"), str(inp.raw / "labelsTr"), "--out", str(tmp / "m")]
    if stage == "probe":
        return ["probe", str(inp.demo_cache), "--encoder", "random", "--group", "ct_phantom", "--out", str(tmp / "p")]
    return ["study", str(inp.demo_cache), "--out", str(tmp / "st"), "study.arms=[scratch]"]


STAGES = ["examples", "preprocess", "caption", "embed-text", "pretrain", "finetune", "predict", "evaluate", "probe"]


def _read_only_mount(folder: Path, command: list[str]) -> list[str] | None:
    """``command`` run where ``folder`` is a read-only mount (every write in it fails with EROFS, even for root):
    a read-only bind mount in a user + mount namespace (``unshare``); without one, a non-root user's ``chmod``.
    None where neither is possible here."""
    probe = ["unshare", "-rm", "true"]
    if shutil.which("unshare") and subprocess.run(probe, capture_output=True).returncode == 0:
        mount = f'mount --bind "{folder}" "{folder}" && mount -o remount,bind,ro "{folder}" && exec "$@"'
        return ["unshare", "-rm", "sh", "-c", mount, "sh", *command]
    if os.geteuid() != 0:
        for p in [folder, *folder.rglob("*")]:
            if p.is_dir():
                p.chmod(0o555)
        return command
    return None


@pytest.mark.slow
def test_a_read_only_output_folder_is_one_line_at_every_stage(inputs, tmp_path, tmp_path_factory):
    """A real failing write: every stage's output goes into a read-only mount (no patched check)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    argvs = {stage: _stage_argv(stage, folder, inputs) for stage in [*STAGES, "study"]}
    side = tmp_path_factory.mktemp("ro_side")
    write_json(side / "argvs.json", argvs)
    command = [sys.executable, "-m", "tests.reliability.run_argvs", str(side / "argvs.json"), str(side / "out.json")]
    wrapped = _read_only_mount(folder, command)
    if wrapped is None:
        pytest.skip("no way to make a read-only folder here (root without user namespaces)")
    before = tree(folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(wrapped, env=env, cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage, r in json.loads((side / "out.json").read_text()).items():
        assert r["code"] == 1, (stage, r["err"])
        assert "Traceback" not in r["err"] and r["err"].count("gtgm: error:") == 1, (stage, r["err"])
        assert "not writable" in r["err"] and str(folder) in r["err"], (stage, r["err"])
    assert tree(folder) == before
