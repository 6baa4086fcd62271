"""DDP with 2 gloo processes under torchrun equals one process with the doubled batch."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from gtgm.config import LossConfig
from gtgm.errors import GtgmError
from gtgm.train.losses import GTGMLoss
from tests.train.ddp_worker import make_batch, make_model
from tests.train.test_pretrain import pretrain_cli, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.xdist_group("ddp")  # under xdist, one torchrun at a time


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; none elsewhere). torchrun starts each worker in a session
    of its own, so signalling torchrun's process group does not reach them."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                found += kids
                todo += kids
    return found


def _torchrun(args: list[str], tmp_path: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    """``torchrun --standalone`` (its own free rendezvous port: no port picked here and lost to a race) with 2
    processes. A hang fails after ``timeout`` seconds with every process's Python stack: each gets SIGABRT, which
    ``PYTHONFAULTHANDLER`` turns into a traceback of each of its threads on stderr; none is left running."""
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "PYTHONFAULTHANDLER": "1",
    }
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    no_core = ["bash", "-c", 'ulimit -c 0 && exec "$@"', "torchrun"]  # SIGABRT leaves no core file (exec: same pid)
    proc = subprocess.Popen(
        no_core + cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = [*_descendants(proc.pid), proc.pid]
        for sig in (signal.SIGABRT, signal.SIGKILL):  # the stacks first, then the end of whatever is left
            for pid in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(5 if sig == signal.SIGABRT else 0)
        out, err = proc.communicate(timeout=30)
        (tmp_path / "torchrun_stderr.txt").write_text(err)
        pytest.fail(f"torchrun did not finish in {timeout} s; stacks in {tmp_path}/torchrun_stderr.txt:\n{err[-8000:]}")
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    if "could not leave the process group" in err:  # pytorch#75097 again: the run went on, say so
        warnings.warn(f"torchrun: a rank could not leave the process group: {err[-1000:]}", stacklevel=2)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


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


def test_cleanup_goes_on_when_leaving_the_group_hangs(monkeypatch, capsys):
    """A destroy_process_group that never returns (pytorch#75097) costs ``timeout_s``, with a warning that names the
    rank (read before leaving: a half-destroyed group has none), not the run; a later run in this process is
    refused."""
    import threading

    from gtgm import runtime

    release, calls, state = threading.Event(), [], {"group": True}

    def rank():
        if not state["group"]:
            raise ValueError("Default process group has not been initialized")
        return 1

    def destroy_and_hang():
        calls.append("destroy")
        state["group"] = False  # as torch does before the backend's destructor, where the hang sits
        release.wait(10)

    monkeypatch.setattr(runtime, "is_distributed", lambda: True)
    monkeypatch.setattr(runtime.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(runtime.dist, "destroy_process_group", destroy_and_hang)
    monkeypatch.setattr(runtime.dist, "get_rank", rank)
    monkeypatch.setattr(runtime, "_STUCK", [])
    try:
        assert runtime.cleanup(timeout_s=0.2) is False
    finally:
        release.set()
    assert calls == ["barrier", "destroy"]
    assert "rank 1 could not leave the process group in 0 s" in capsys.readouterr().err
    with pytest.raises(GtgmError, match="could not leave its process group"):
        runtime.setup(torch.device("cpu"))
    monkeypatch.setattr(runtime, "_STUCK", [])
    state["group"] = True
    monkeypatch.setattr(runtime.dist, "destroy_process_group", lambda: calls.append("destroy"))
    assert runtime.cleanup(timeout_s=5) is True


@pytest.mark.parametrize("world", ["1", "2"])
def test_a_torchrun_worker_ends_without_python_teardown(world):
    """``gtgm``'s entry point: under torchrun (WORLD_SIZE 2) a worker ends at once with its code and its printed
    output, even with a thread that would hold Python's teardown forever; outside torchrun, a normal exit."""
    script = (
        "import os, threading; from gtgm import cli\n"
        "if os.environ['WORLD_SIZE'] == '2': threading.Thread(target=threading.Event().wait, daemon=False).start()\n"
        "cli.main = lambda: print('outputs written') or 3\n"
        "cli.entry()\n"
    )
    env = {**os.environ, "WORLD_SIZE": world, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (3, "outputs written\n"), proc.stderr


@pytest.mark.parametrize("world", ["1", "2"])
def test_trainers_are_held_until_a_torchrun_worker_ends(world, monkeypatch):
    """Under torchrun the DDP wrapper and the trainer are never destroyed (their destructors can hang once the
    group is gone); outside it nothing is held."""
    from gtgm import runtime

    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setattr(runtime, "_KEPT", [])
    obj = object()
    assert runtime.keep_until_exit(obj) is obj
    assert runtime._KEPT == ([obj] if world == "2" else [])
