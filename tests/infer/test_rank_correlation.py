"""The ρ behind the query figures (gtgm.demo.queries), on hand-made windows with known answers."""

import numpy as np
import pytest

from gtgm.data.measure import HU_BANDS
from gtgm.demo.queries import rank_statistics, window_shares

BANDS = list(HU_BANDS)
PROMPTS = {"bone-like density": "bone", "air-density": "air"}


def test_window_shares_count_the_voxels_of_each_band():
    hu = np.full((4, 4, 2), 40.0)  # soft tissue, then one window's first half bone, one voxel of air
    hu[2:, :, :] = 500.0
    hu[0, 0, 0] = -1000.0
    image = (hu + 1000.0) / 2000.0  # normalised with the [-1000, 1000] HU window
    shares = window_shares(image, [-1000.0, 1000.0], [[0, 0, 0], [2, 0, 0]], [2, 4, 2])
    assert shares.shape == (2, len(BANDS))
    assert shares[0, BANDS.index("air-density")] == pytest.approx(1 / 16)
    assert shares[0, BANDS.index("soft-tissue or fluid density")] == pytest.approx(15 / 16)
    assert shares[1, BANDS.index("bone-like density")] == pytest.approx(1.0)
    np.testing.assert_allclose(shares.sum(1), 1.0)  # these voxels fall in the bands (none between them)


def test_rho_is_one_when_the_score_ranks_windows_by_the_share_and_minus_one_reversed():
    share = np.zeros((6, len(BANDS)))
    share[:, BANDS.index("bone-like density")] = [0.0, 0.1, 0.2, 0.4, 0.7, 0.9]
    share[:, BANDS.index("air-density")] = [0.9, 0.7, 0.5, 0.3, 0.2, 0.0]
    score = np.stack([share[:, BANDS.index("bone-like density")] ** 2, -np.arange(6.0)], 1)  # monotone in both
    out = rank_statistics(score, share, 10.0, PROMPTS)
    assert out["bone-like density"]["rho"] == pytest.approx(1.0)
    assert out["air-density"]["rho"] == pytest.approx(1.0)  # −index falls as air's share falls
    assert out["bone-like density"]["n"] == 6
    reversed_score = score.copy()
    reversed_score[:, 0] = -reversed_score[:, 0]
    assert rank_statistics(reversed_score, share, 10.0, PROMPTS)["bone-like density"]["rho"] == pytest.approx(-1.0)


def test_softmax_rho_and_the_margin_over_the_other_prompts():
    share = np.zeros((5, len(BANDS)))
    share[:, BANDS.index("bone-like density")] = [0.0, 0.2, 0.4, 0.6, 0.8]
    share[:, BANDS.index("air-density")] = [0.5, 0.1, 0.3, 0.2, 0.4]
    score = np.stack([np.linspace(0, 1, 5), np.zeros(5)], 1)  # the air prompt says nothing
    out = rank_statistics(score, share, 10.0, PROMPTS)["bone-like density"]
    # p(bone) rises with the bone score, p(air) = 1 − p(bone) falls: ρ +1 and −1, so the margin is 1 − (−1) = 2
    assert out["rho_softmax"] == pytest.approx(1.0) and out["margin"] == pytest.approx(2.0)


def test_a_constant_share_gives_no_rho():
    share = np.zeros((4, len(BANDS)))
    share[:, BANDS.index("air-density")] = [0.1, 0.2, 0.3, 0.4]
    out = rank_statistics(np.random.default_rng(0).random((4, 2)), share, 10.0, PROMPTS)
    assert out["bone-like density"] == {"prompt": "bone", "rho": None, "rho_softmax": None, "margin": None, "n": 4}
