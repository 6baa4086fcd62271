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
