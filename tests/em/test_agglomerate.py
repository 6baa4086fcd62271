import numpy as np
import pytest

from gtgm.data.synthetic_em import make_em_volume
from gtgm.em.affinities import affinities
from gtgm.em.agglomerate import segment, threshold_baseline
from gtgm.metrics import neuron_scores


@pytest.fixture(scope="module")
def em_volume():
    raw, ids = make_em_volume(seed=5, shape=(48, 48, 12), n_cells=12)
    return raw, ids.astype(np.int64)


@pytest.mark.parametrize("method", ["waterz", "watershed"])
def test_ground_truth_affinities_agglomerate_back(em_volume, method):
    _, ids = em_volume
    aff, _ = affinities(ids)
    seg = segment(aff, [0.5], method)[0]
    assert seg.shape == ids.shape and seg.dtype == np.uint64
    s = neuron_scores(seg, ids)
    assert s["voi"] < 0.05 and s["arand"] < 0.01, s


def test_more_threshold_merges_more(em_volume):
    raw, ids = em_volume
    aff, _ = affinities(ids)
    noisy = np.clip(aff * 0.7 + 0.3 * np.random.default_rng(0).random(aff.shape), 0, 1).astype(np.float32)
    low, high = segment(noisy, [0.2, 0.9], "waterz")
    assert len(np.unique(high)) < len(np.unique(low))


def test_offsets_must_start_with_nearest_neighbours(em_volume):
    aff, _ = affinities(em_volume[1])
    with pytest.raises(ValueError, match="first three"):
        segment(aff, [0.5], "waterz", offsets_zyx=[[0, -1, 0], [-1, 0, 0], [0, 0, -1]])


def test_threshold_baseline_is_a_segmentation(em_volume):
    raw, ids = em_volume
    seg = threshold_baseline(raw / 255.0, 0.4)
    assert seg.shape == ids.shape and seg.min() >= 1
    assert len(np.unique(seg)) > 1
