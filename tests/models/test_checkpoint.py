import os

import pytest
import torch

from gtgm.cli import main
from gtgm.errors import GtgmError
from gtgm.models.checkpoint import load_checkpoint


class _Payload:
    """A pickle that would run a command if it were unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_a_pickle_payload_is_refused_in_one_line_without_unsafe_advice(tmp_path, capsys):
    path = tmp_path / "encoder.pt"
    torch.save({"w": torch.zeros(2), "x": _Payload()}, path)
    with pytest.raises(GtgmError, match="encoder.pt: not a plain tensor checkpoint") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    assert main(["export", "bundle", str(path), "--out", str(tmp_path / "bundle")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only" not in err and "not a plain tensor checkpoint" in err
    assert not (tmp_path / "bundle").exists()


def test_cpu_models_run_channels_last_and_save_in_the_default_order(tmp_path):
    """``to_device`` on the CPU stores 3D-convolution weights channels-last (the speed-up of
    benchmarks/bench_cpu_layout.py) without changing what the network computes, and a checkpoint of it holds
    tensors in the default order, as other tools expect."""
    from gtgm.models.checkpoint import save_checkpoint
    from gtgm.models.segmenters import ResUNet
    from gtgm.runtime import to_device

    torch.manual_seed(0)
    plain = ResUNet(1, 3, [4, 8, 16])
    fast = to_device(ResUNet(1, 3, [4, 8, 16]), torch.device("cpu"))
    fast.load_state_dict(plain.state_dict())
    conv = fast.encoder.stages[1].conv1.conv.weight  # (8, 4, 3, 3, 3)
    assert conv.dim() == 5 and conv.is_contiguous(memory_format=torch.channels_last_3d) and not conv.is_contiguous()
    x = torch.rand(2, 1, 16, 16, 8)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    opt = torch.optim.Adam(fast.parameters())
    fast(x).mean().backward()
    opt.step()
    save_checkpoint(tmp_path / "c.pt", {"model": fast.state_dict(), "optimizer": opt.state_dict(), "ids": (1, [2])})
    back = load_checkpoint(tmp_path / "c.pt")
    tensors = [*back["model"].values(), *(t for s in back["optimizer"]["state"].values() for t in s.values())]
    assert all(t.is_contiguous() for t in tensors) and back["ids"] == (1, [2])
    assert all(torch.equal(back["model"][k], v) for k, v in fast.state_dict().items())
    assert back["model"]._metadata == fast.state_dict()._metadata  # module versions, as torch.save keeps them
