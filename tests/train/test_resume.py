"""Runs killed with SIGKILL mid-run and resumed equal the uninterrupted run; a resume that would change the
split is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from gtgm.cli import main
from tests.train.test_pretrain import pretrain_cli, tiny_overrides

FINETUNE = [
    "finetune.steps=12",
    "finetune.val_every=6",
    "finetune.checkpoint_every=2",
    "finetune.batch_size=2",
    "finetune.split=cases",
    "finetune.train_cases=[ct_0,ct_1]",
    "finetune.val_cases=[ct_2]",
    "finetune.test_cases=[ct_3]",
    "finetune.patch_size=[16,16,16]",
    "finetune.tensorboard=false",
    "model.channels=[4,8,16]",
]


def _kill_at_first_checkpoint(args: list[str], out: Path) -> int:
    """Run ``python -m gtgm ARGS`` and SIGKILL it as soon as ``out/checkpoints/last.pt`` exists; the step that
    checkpoint holds (the run must not have finished)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "gtgm", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (out / "checkpoints" / "last.pt").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return int(torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"])


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=1e-5, atol=1e-6, msg=key)


def test_finetuning_killed_mid_run_and_resumed_equals_the_uninterrupted_run(tiny_ct, tmp_path):
    base = ["finetune", str(tiny_ct / "cache"), *FINETUNE]
    assert main([*base, "--out", str(tmp_path / "straight")]) == 0
    step = _kill_at_first_checkpoint([*base, "--out", str(tmp_path / "killed")], tmp_path / "killed")
    assert 0 < step < 12 and not (tmp_path / "killed" / "test_metrics.json").exists()
    assert main([*base, "--out", str(tmp_path / "killed")]) == 1  # not without --resume
    assert main([*base, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    for name in ("checkpoints/last.pt", "best.pt"):
        _same_weights(tmp_path / "straight" / name, tmp_path / "killed" / name)


def test_a_resume_that_changes_the_split_is_refused(tiny_ct, tmp_path, capsys):
    base = ["finetune", str(tiny_ct / "cache"), "--out", str(tmp_path / "ft"), *FINETUNE, "finetune.steps=2"]
    assert main(base) == 0
    before = (tmp_path / "ft" / "checkpoints" / "last.pt").read_bytes()
    capsys.readouterr()
    assert main([*base, "--resume", "finetune.train_cases=[ct_0]"]) == 1
    err = capsys.readouterr().err
    assert "split.json" in err and "splits the cases differently" in err and "Traceback" not in err
    assert (tmp_path / "ft" / "checkpoints" / "last.pt").read_bytes() == before


def test_pretraining_killed_mid_run_and_resumed_equals_the_uninterrupted_run(corpus, tmp_path):
    base = pretrain_cli(corpus, *tiny_overrides(steps=20), "pretrain.checkpoint_every=2")
    assert main([*base, "--out", str(tmp_path / "straight")]) == 0
    step = _kill_at_first_checkpoint([*base, "--out", str(tmp_path / "killed")], tmp_path / "killed")
    assert 0 < step < 20 and not (tmp_path / "killed" / "encoder.pt").exists()
    assert main([*base, "--out", str(tmp_path / "killed"), "--resume"]) == 0
    _same_weights(tmp_path / "straight" / "checkpoints" / "last.pt", tmp_path / "killed" / "checkpoints" / "last.pt")
