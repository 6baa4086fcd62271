"""One writer per output: while another process holds an output folder's lock (as a running stage does), every
stage that writes a folder stops at once with one error naming the folder, and writes nothing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import held_lock
from tests.reliability.conftest import fails_cleanly, finetune_argv, pretrain_argv, tree


def _argv(stage: str, inp, out: Path) -> list[str]:
    if stage == "preprocess":
        return ["data", "preprocess", str(inp.raw), "--out", str(out)]
    if stage == "pretrain":
        return pretrain_argv(inp, out)
    if stage == "finetune":
        return finetune_argv(inp, out)
    if stage == "study":
        return ["study", str(inp.demo_cache), "--out", str(out), "study.arms=[scratch]", "finetune.steps=1"]
    return ["demo", "--out", str(out), "--no-real"]


@pytest.mark.parametrize("stage", ["preprocess", "pretrain", "finetune", "study", "demo"])
def test_a_second_writer_of_an_output_folder_stops_at_once(stage, inputs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with held_lock(out / ".gtgm.lock"):
        before = tree(tmp_path)
        fails_cleanly(capsys, _argv(stage, inputs, out), str(out), "another gtgm process is writing it")
        assert tree(tmp_path) == before


def test_locks_are_removed_when_the_writer_ends(tmp_path):
    """A finished writer leaves no lock file (also for odd names); a killed one's stale file blocks nothing."""
    from gtgm.fsutil import lock_folder, single_writer

    out = tmp_path / "d" / "cäp tions.jsonl"
    with single_writer(out):
        out.write_text("x")
        assert (out.parent / ".cäp tions.jsonl.lock").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["cäp tions.jsonl"]
    lock = lock_folder(tmp_path / "d")
    lock.release()
    assert not (tmp_path / "d" / ".gtgm.lock").exists()
    (tmp_path / "d" / ".gtgm.lock").write_text("")  # what kill -9 leaves: a file nobody holds
    lock_folder(tmp_path / "d").release()
    assert not (tmp_path / "d" / ".gtgm.lock").exists()


def test_a_failed_folder_writer_removes_the_folder_it_created(tmp_path):
    from gtgm.fsutil import single_writer

    with pytest.raises(RuntimeError):
        with single_writer(tmp_path / "text", folder=True):
            raise RuntimeError("encoder missing")
    assert not (tmp_path / "text").exists()
