"""DDP with 2 gloo processes under torchrun equals one process with the doubled batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gtgm.config import LossConfig
from gtgm.train.losses import GTGMLoss
from tests.train.ddp_worker import make_batch, make_model
from tests.train.test_pretrain import pretrain_cli, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("ddp")  # under xdist, one torchrun at a time


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (its own free rendezvous port: no port picked here and lost to a race) with 2
    processes; a hang fails after 5 minutes with the processes' output."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"torchrun did not finish in 300 s: {str(exc.stdout)[-2000:]} {str(exc.stderr)[-3000:]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_two_processes_match_one_with_double_batch(tmp_path):
    _torchrun([str(ROOT / "tests" / "train" / "ddp_worker.py"), str(tmp_path)], tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    model = make_model()
    v1, v2, t = make_batch()
    losses = GTGMLoss(LossConfig())(**model(v1, v2, t))
    total = sum(losses.values())
    total.backward()
    for r in ranks:
        torch.testing.assert_close(r["loss"], total.detach(), rtol=1e-5, atol=1e-6)
        for k, v in losses.items():
            torch.testing.assert_close(r["terms"][k], v.detach(), rtol=1e-5, atol=1e-6)
    for name, p in model.named_parameters():
        for r in ranks:  # DDP has averaged the gradients: both ranks hold the global-batch gradient
            # atol 1e-3 against gradients up to ~60: float32 reduction-order noise only (some stage-0
            # residual weights have a true gradient of ~0 because instance norm cancels their scale)
            torch.testing.assert_close(
                r["grads"][name], p.grad, rtol=1e-4, atol=1e-3, msg=lambda m, n=name: f"{n}: {m}"
            )


@pytest.mark.slow
def test_gtgm_pretrain_under_torchrun_matches_single_process(corpus, tmp_path):
    common = pretrain_cli(corpus, *tiny_overrides(steps=3), "pretrain.log_every=1")
    _torchrun(["-m", "gtgm", *common, "--out", str(tmp_path / "ddp"), "pretrain.batch_size=2"], tmp_path)
    from gtgm.cli import main

    assert main([*common, "--out", str(tmp_path / "single"), "pretrain.batch_size=4"]) == 0

    def losses(run):
        rows = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert len(losses("ddp")) == 3
    assert losses("ddp") == pytest.approx(losses("single"), rel=1e-4)
    a = torch.load(tmp_path / "ddp" / "encoder.pt", weights_only=True)
    b = torch.load(tmp_path / "single" / "encoder.pt", weights_only=True)
    for k in a:  # Adam's g / sqrt(v) turns float-rounding noise of a near-zero gradient into an update of up to
        # lr (1e-3): a few such weights may differ by ~1e-4; a missing all-reduce would move most of them by ~1e-3
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-4, msg=k)
        assert ((a[k] - b[k]).abs() > 1e-5 + 1e-4 * b[k].abs()).float().mean() < 0.01, k


@pytest.mark.slow
def test_gtgm_finetune_under_torchrun_matches_single_process(tiny_ct, tmp_path):
    """2 processes at batch 1 take the same samples as one at batch 2 (StepSampler), and DDP averages their
    gradients: the weights after 3 steps are the same. (Without class weights and ignored voxels, the mean of the
    two ranks' losses is the loss of the whole batch; with them, each rank normalises by its own share.)"""
    common = [
        "finetune",
        str(tiny_ct / "cache"),
        "finetune.steps=3",
        "finetune.val_every=3",
        "finetune.split=cases",
        "finetune.train_cases=[ct_0,ct_1]",
        "finetune.val_cases=[ct_2]",
        "finetune.test_cases=[ct_3]",
        "finetune.class_weight_power=0",
        "finetune.patch_size=[16,16,16]",
        "finetune.tensorboard=false",
        "model.channels=[4,8,16]",
    ]
    _torchrun(["-m", "gtgm", *common, "--out", str(tmp_path / "ddp"), "finetune.batch_size=1"], tmp_path)
    from gtgm.cli import main

    assert main([*common, "--out", str(tmp_path / "single"), "finetune.batch_size=2"]) == 0
    assert json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())["steps"] == 3
    a = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "single" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for k in a:  # AdamW turns rounding noise of a near-zero gradient into an update of up to lr (see above)
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=2e-4, msg=k)
        assert ((a[k] - b[k]).abs() > 1e-5 + 1e-4 * b[k].abs()).float().mean() < 0.01, k
