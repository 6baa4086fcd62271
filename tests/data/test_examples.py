"""The embedded example corpus: real MRI, synthetic CT phantoms and EM, readable by gtgm's readers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gtgm.data.datasets import load_dataset
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.data.preprocess import read_case
from gtgm.data.synthetic_em import make_em_volume
from gtgm.errors import GtgmError


@pytest.fixture(scope="module")
def corpus(demo_run):
    return load_dataset(demo_run / "examples")


def test_corpus_counts_and_provenance(corpus, demo_run):
    real_mri = [c for c in corpus.cases if c.modality == "MRI" and not c.synthetic]
    ct = [c for c in corpus.cases if c.modality == "CT" and c.synthetic and c.label is not None]
    em = [c for c in corpus.cases if c.modality == "EM" and c.synthetic and c.label is not None]
    assert len(real_mri) >= 4 and len(ct) >= 8 and len(em) >= 2
    assert any(c.id == "mni152_t1" and c.label is not None for c in real_mri)
    assert all(c.source for c in corpus.cases)
    raw = json.loads((demo_run / "examples" / "dataset.json").read_text())
    assert all({"modality", "synthetic", "source"} <= set(e) for e in raw["training"])


def test_every_volume_reads_back(corpus):
    for case in corpus.cases:
        image, label, channels = read_case(case)
        assert image.ndim == 4 and min(image.shape[1:]) > 1, case.id
        assert np.isfinite(image).all()
        if label is not None:
            assert label.shape == image.shape[1:]


def test_mni152_tissue_shares_are_plausible(corpus):
    case = next(c for c in corpus.cases if c.id == "mni152_t1")
    image, label, _ = read_case(case)
    values, counts = np.unique(label, return_counts=True)
    assert values.tolist() == [0, 1, 2, 3]
    brain = counts[1:].sum()
    share = dict(zip(["other", "gm", "wm"], counts[1:] / brain))
    assert 0.03 < share["other"] < 0.35, share
    assert 0.35 < share["gm"] < 0.65, share
    assert 0.2 < share["wm"] < 0.5, share
    assert 1.0e6 < brain < 2.5e6  # 1 mm voxels: a brain is 1.0-2.5 litres (mask includes CSF)
    t1 = image[0]
    assert t1[label == 3].mean() > t1[label == 2].mean() > t1[label == 0].mean()  # T1: WM > GM > background


def test_ct_phantoms_are_plausible_and_vary():
    hu_a, lab_a, aff_a = make_ct_phantom(1)
    hu_b, lab_b, aff_b = make_ct_phantom(2)
    assert set(np.unique(lab_a)) == set(CT_LABELS)  # every organ present
    assert abs(np.median(hu_a[lab_a == 6]) + 850) < 80  # lungs: air
    assert 40 < np.median(hu_a[lab_a == 1]) < 90  # liver: soft tissue
    assert np.median(hu_a[lab_a == 7]) > 200  # bone
    assert np.median(hu_a[:2, :2, :]) < -900  # outside the body: air
    assert aff_a[2, 2] > 1.3 * abs(aff_a[0, 0])  # anisotropic: thick slices
    assert not np.allclose(aff_a, aff_b) and (lab_a != lab_b).mean() > 0.01
    np.testing.assert_array_equal(make_ct_phantom(1)[1], lab_a)  # deterministic per seed


def test_em_volumes_have_neurons_and_membranes():
    raw, ids = make_em_volume(5, shape=(64, 64, 12), n_cells=20)
    assert raw.dtype == np.uint8 and ids.dtype == np.uint64 and ids.min() >= 1
    assert 15 <= len(np.unique(ids)) <= 60
    boundary = np.zeros(ids.shape, bool)
    boundary[:-1] |= ids[:-1] != ids[1:]
    boundary[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    assert raw[boundary].mean() < raw[~boundary].mean() - 40  # membranes are dark


def test_sealed_phantoms_come_from_their_own_seeds(tmp_path):
    from gtgm.data.examples import write_examples

    write_examples(tmp_path, n_ct=2, n_em=0, n_ct_sealed=2, progress=False)
    cases = {c.id: c for c in load_dataset(tmp_path).cases if c.group == "ct_phantom"}
    assert {"sealed_000", "sealed_001"} <= set(cases) and len(cases) == 4
    assert all(cases[k].label is not None for k in cases)  # labelled, like the phantoms they test
    images = [read_case(cases[k])[0] for k in sorted(cases)]
    assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1 :] if a.shape == b.shape)
    assert "seed 4000 (sealed)" in cases["sealed_000"].source
    assert cases["sealed_000"].split == "test" and cases["phantom_000"].split == "train"  # declared test cases
    write_examples(tmp_path / "fresh", n_ct=0, n_em=0, n_ct_sealed=1, progress=False, mri=False, sealed_seed=5000)
    (fresh,) = [c for c in load_dataset(tmp_path / "fresh").cases if c.group == "ct_phantom"]
    assert fresh.id == "sealed5000_000" and "seed 5000 (sealed)" in fresh.source and fresh.split == "test"
    for bad in (3000, 4001):  # the unlabelled phantoms' seeds; the default sealed set's under new ids
        with pytest.raises(GtgmError, match=f"--sealed-seed must be a multiple of 1000 from 4000 on, got {bad}"):
            write_examples(tmp_path / "x", n_ct=0, n_em=0, n_ct_sealed=1, progress=False, sealed_seed=bad)
