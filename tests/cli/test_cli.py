"""End-to-end: the CLI's help, and `gtgm demo` (shared session run) writing corpus, cache and report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np

from gtgm.cli import build_parser, main
from tests.conftest import TINY_PREPROCESS


def test_help_lists_every_stage():
    text = build_parser().format_help()
    for stage in ("data", "demo", "config"):
        assert stage in text
    out = subprocess.run([sys.executable, "-m", "gtgm", "data", "--help"], capture_output=True, text=True, check=True)
    for action in ("examples", "check", "preprocess"):
        assert action in out.stdout


def test_a_missing_input_is_reported_before_torch_loads(tmp_path):
    """A mistyped input path is named in one line, without the seconds of torch + MONAI imports."""
    probe = (
        "import sys; from gtgm.cli import main; rc = main(sys.argv[1:]); "
        "print('loaded' if {'torch', 'monai'} & set(sys.modules) else 'light', rc)"
    )
    gone, out = tmp_path / "gone", ["--out", str(tmp_path / "o")]
    for argv, message in (
        (["evaluate", str(gone), str(tmp_path)], f"{gone}: prediction folder not found"),
        (["predict", str(gone), str(tmp_path), *out], f"{gone}: checkpoint not found"),
        (["predict", str(tmp_path), str(gone), *out], f"{gone}: input not found"),
        (["query", str(tmp_path), "CT patch.", str(gone), *out], f"{gone}: input not found"),
        (["finetune", str(gone), *out], f"{gone}: cache folder not found"),
        (["finetune", str(tmp_path), "--pretrained", str(gone), *out], f"{gone}: pretrained encoder not found"),
        (["export", "bundle", str(gone), *out], f"{gone}: checkpoint not found"),
        (["export", "nnunet", str(tmp_path), "--plans", str(gone), *out], f"{gone}: plans file not found"),
    ):
        run = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, check=True)
        assert run.stdout.split() == ["light", "1"] and run.stderr.strip() == f"gtgm: error: {message}", argv
        assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_demo_writes_corpus_cache_and_report(demo_run):
    index = json.loads((demo_run / "cache" / "index.json").read_text())
    corpus = json.loads((demo_run / "examples" / "dataset.json").read_text())
    assert len(index["cases"]) == len(corpus["training"]) >= 14
    for case in index["cases"]:
        image = np.load(demo_run / "cache" / "volumes" / case["files"]["image"], mmap_mode="r")
        assert list(image.shape[1:]) == case["shape"] and image.dtype == np.float32
    report = (demo_run / "report.md").read_text()
    assert "mni152_t1" in report and "phantom_000" in report and "em_000" in report
    assert (demo_run / "report.html").stat().st_size > 1000
    headline = report[: report.index("## Example corpus")]  # the report opens with the per-class test figures
    for name in ("liver", "kidney_left", "grey_matter", "voi"):  # CT, MRI and EM, as make demo writes them
        assert name in headline
    # real CT first (the fixture's stand-in for the fetched data), with its figures and the share outside the body
    assert headline.index("| real CT (silver labels) | liver |") < headline.index("| CT phantoms (raw NIfTI) | liver |")
    assert "| real CT (silver labels) | predicted voxels outside the body | 0.00% |" in headline
    assert (demo_run / "predictions_real" / "metrics.csv").is_file() and "Real CT: not in this run" not in headline
    assert (demo_run / "figures" / "overlays.png").is_file() and "overlays.png" in headline
    assert "scratch" not in headline  # make demo runs the pretrained arm only: no paired gain is claimed
    assert (demo_run / "figures" / "corpus.png").stat().st_size > 10_000
    # the exports, linked from the report: the main CT model as a MONAI bundle, the phantoms for nnU-Net
    assert (demo_run / "exports" / "ct_bundle" / "models" / "model.pt").is_file()
    assert (demo_run / "exports" / "nnUNet_raw" / "Dataset501_ct_phantom" / "dataset.json").is_file()
    assert "(exports/ct_bundle)" in report and "(exports/nnUNet_raw/Dataset501_ct_phantom)" in report


def test_check_and_rerun_preprocess(demo_run, capsys, tmp_path):
    assert main(["data", "check", str(demo_run / "examples")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("mni152_t1: MRI 1ch (197, 233, 189) RAS") for line in lines)
    # the demo run's own preprocessing settings (preset demo, MNI152 at 2 mm): nothing is redone. Other settings
    # would rebuild the shared demo cache under the captions of every later test (it once did, with the default config).
    cache = shutil.copytree(demo_run / "cache", tmp_path / "cache")  # a copy: the shared demo output stays as made
    before = {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").iterdir()}
    index = (cache / "index.json").read_bytes()
    argv = ["data", "preprocess", str(demo_run / "examples"), "--out", str(cache), "--config", "demo", *TINY_PREPROCESS]
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (cache / "volumes").iterdir()} == before  # nothing redone
    assert (cache / "index.json").read_bytes() == index


def test_demo_goes_on_without_the_real_data_when_the_index_does_not_answer(tmp_path, monkeypatch, capsys):
    """The demo's corpus step: the real data when it can be fetched, else the embedded data after one note."""
    from gtgm.demo import run as demo_run_module
    from gtgm.errors import GtgmError

    calls = []

    def fake_write_examples(out, progress=True, real=False, real_phantoms=0):
        calls.append(real)
        assert real_phantoms == (3 if real else 0)  # the phantoms go with the real CT only
        if real:
            raise GtgmError("cannot download totalsegmentator==2.18.0 from the package index")
        return {}

    monkeypatch.setattr(demo_run_module, "write_examples", fake_write_examples)
    assert demo_run_module.write_corpus(tmp_path, real=True, progress=False, real_phantoms=3) is False
    assert calls == [True, False]
    out = capsys.readouterr().out
    assert "real CT/MR not added (cannot download totalsegmentator" in out and "goes on" in out
    calls.clear()
    assert demo_run_module.write_corpus(tmp_path, real=False, progress=False) is False and calls == [False]
