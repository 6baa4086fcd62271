"""Caption files: grid, resume after a kill, shards, malformed lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from gtgm.cli import main
from gtgm.config import CaptionConfig
from gtgm.data.patches import VolumeCache, grid_starts
from gtgm.errors import GtgmError, InputError
from gtgm.text.captioners.describe import DescribeCaptioner
from gtgm.text.captions import plan_locations, read_captions, run_captioning
from tests.conftest import held_lock

SMALL = ["caption.step.MRI=[24,24,24]", "caption.step.CT=[24,24,16]", "caption.step.EM=[32,32,8]"]


def test_grid_covers_the_volume():
    starts = grid_starts([100, 40, 10], [48, 48, 48], [48, 48, 48])
    assert sorted({s[0] for s in starts}) == [0, 48, 52]  # last box flush with the far edge
    assert {s[1] for s in starts} == {0} and {s[2] for s in starts} == {0}  # shorter axes: one box


def _cfg(**kw):
    cfg = CaptionConfig(**kw)
    cfg.step = {"MRI": [24, 24, 24], "CT": [24, 24, 16], "EM": [32, 32, 8]}
    return cfg


def test_kill_and_resume_leaves_no_duplicate_or_broken_line(corpus, tmp_path):
    out = tmp_path / "captions.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "gtgm",
        "caption",
        str(corpus / "cache"),
        "--out",
        str(out),
        *SMALL,
        "caption.batch_size=1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 30):
        assert proc.poll() is None, "gtgm caption ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = out.read_text().count("\n")
    assert partial >= 30
    with open(out, "a") as fh:  # an interruption in the middle of a line
        fh.write('{"key": "torn-line", "text": "half a capt')
    plan = plan_locations(VolumeCache(corpus / "cache"), _cfg())
    assert partial < len(plan), "the run finished before it could be killed; make the job bigger"
    assert main(["caption", str(corpus / "cache"), "--out", str(out), *SMALL]) == 0
    records = read_captions(out)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == len(plan)
    assert "torn-line" not in keys
    reference = tmp_path / "reference.jsonl"
    run_captioning(VolumeCache(corpus / "cache"), DescribeCaptioner(), reference, _cfg(), progress=False)
    assert {r["key"]: r["text"] for r in records} == {r["key"]: r["text"] for r in read_captions(reference)}


def test_shards_partition_the_work(corpus, tmp_path):
    out = tmp_path / "captions.jsonl"
    cache = VolumeCache(corpus / "cache")
    for i in range(2):
        stats = run_captioning(cache, DescribeCaptioner(), out, _cfg(), shard=(i, 2), progress=False)
        assert stats["path"].endswith(f"captions.shard-{i}-of-2.jsonl")
    assert not out.exists()
    keys = [r["key"] for r in read_captions(out)]
    assert len(keys) == len(set(keys)) == len(plan_locations(cache, _cfg()))
    again = run_captioning(cache, DescribeCaptioner(), out, _cfg(), progress=False)  # unsharded: all done
    assert again["written"] == 0


def test_malformed_lines_are_named(tmp_path, capsys):
    good = {"key": "a", "text": "fine"}
    path = tmp_path / "captions.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "key": "b"}) + "\n{broken\n")
    with pytest.raises(InputError, match=r"captions.jsonl: line 3: malformed JSON"):
        read_captions(path)
    path.write_text(json.dumps(good) + "\n" + json.dumps({"key": "c", "text": 5}) + "\n")
    with pytest.raises(InputError, match="line 2: a caption record needs"):
        read_captions(path)
    assert main(["embed-text", str(path), "--out", str(tmp_path / "text")]) == 1
    assert "line 2" in capsys.readouterr().err


def test_refuses_to_mix_captioners(corpus, tmp_path):
    out = tmp_path / "captions.jsonl"
    out.write_text(json.dumps({"key": "x", "text": "t", "captioner": "hf"}) + "\n")
    with pytest.raises(GtgmError, match="holds captions by"):
        run_captioning(VolumeCache(corpus / "cache"), DescribeCaptioner(), out, _cfg(), progress=False)


def test_shard_flag_and_torchrun_env(monkeypatch):
    from gtgm.cli.text import parse_shard as _parse_shard

    assert _parse_shard("1/4") == (1, 4)
    with pytest.raises(GtgmError):
        _parse_shard("4/4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _parse_shard(None) == (2, 3)
    os.environ.pop("RANK")


def test_a_second_writer_is_refused_and_repeated_keys_are_named(corpus, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    argv = ["caption", str(corpus / "cache"), "--out", str(out), *SMALL]
    with held_lock(tmp_path / ".captions.jsonl.lock"):  # another process holds it, as a running gtgm caption does
        assert main(argv) == 1
        assert "another gtgm process is writing it" in capsys.readouterr().err and not out.exists()
    assert main(argv) == 0  # the lock is free again once its holder is gone
    first = out.read_text().splitlines()[0]
    with open(out, "a") as fh:  # what two writers without a lock would have left
        fh.write(first + "\n")
    capsys.readouterr()
    assert len(read_captions(out)) == len(set(r["key"] for r in read_captions(out))) + 1
    assert "1 repeated caption key(s)" in capsys.readouterr().out


def test_a_second_embed_text_on_one_cache_is_refused(tmp_path, capsys):
    captions = tmp_path / "c.jsonl"
    captions.write_text(json.dumps({"key": "v:0,0,0:8,8,8", "text": "CT patch. It is mostly air-density."}) + "\n")
    (tmp_path / "text").mkdir()
    with held_lock(tmp_path / "text" / ".gtgm.lock"):  # the folder holds its own lock
        assert main(["embed-text", str(captions), "--out", str(tmp_path / "text")]) == 1
        assert "another gtgm process is writing it" in capsys.readouterr().err
        assert not (tmp_path / "text" / "index.json").exists()
    assert main(["embed-text", str(captions), "--out", str(tmp_path / "text")]) == 0
    # the lock is gone once it ends, and nothing was written beside the folder (a read-only parent is fine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "text"]
    assert not list((tmp_path / "text").glob("*.lock"))


def test_captions_that_record_no_voxel_size_are_flagged(tmp_path, capsys):
    f = tmp_path / "c.jsonl"
    lines = [{"key": "v:0,0,0:8,8,8", "text": "a"}, {"key": "v:8,0,0:8,8,8", "text": "b", "spacing": [1.0, 1.0, 1.0]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert len(read_captions(f)) == 2
    assert "1 caption(s) record no voxel size" in capsys.readouterr().out
    f.write_text(json.dumps(lines[1]) + "\n")
    read_captions(f)
    assert "voxel size" not in capsys.readouterr().out
