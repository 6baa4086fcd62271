"""The describe captioner is grounded: different content -> different text, same patch+seed -> same."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from gtgm.data.boxes import make_patch
from gtgm.data.measure import measure
from gtgm.data.patches import VolumeCache
from gtgm.text.captioners.describe import DescribeCaptioner
from gtgm.text.captions import distinct_share, read_captions

FINDINGS = ("tumour", "tumor", "lesion", "mass", "nodule", "abnormal", "patholog", "malignan", "metasta", "cyst")


@pytest.fixture(scope="module")
def cache(corpus):
    return VolumeCache(corpus / "cache")


def _case(cache, case_id):
    return next(i for i, e in enumerate(cache.entries) if e["id"] == case_id)


def _patch_at(cache, case_id, center, size=(32, 32, 32)):
    i = _case(cache, case_id)
    start = [int(c) - s // 2 for c, s in zip(center, size)]
    return make_patch(cache, i, start, list(size), cache.meta(i))


def test_different_tissue_gives_different_grounded_text(cache):
    i = _case(cache, "mni152_t1")
    label = np.asarray(cache.label(i))
    wm_share = ndimage.uniform_filter((label == 3).astype(np.float32), 16)
    wm_core = np.unravel_index(np.argmax(wm_share), label.shape)  # the most purely white-matter 16^3 block
    wm = _patch_at(cache, "mni152_t1", wm_core, (16, 16, 16))
    background = _patch_at(cache, "mni152_t1", (16, 16, 16))
    em = _patch_at(cache, "em_000", (64, 64, 16), size=(64, 64, 16))
    texts = DescribeCaptioner().caption([wm, background, em], seed=0)
    assert len(set(texts)) == 3
    assert "MR" in texts[0] and ("100%" in texts[0] or "95%" in texts[0])  # tissue fills the WM core patch
    assert "background" in texts[1] and ("EM" in texts[2] or "Electron microscopy" in texts[2])
    assert "embrane" in texts[2]
    m_wm, m_bg = measure(wm), measure(background)
    assert m_wm["mri"]["background"] < 0.05 < 0.9 < m_bg["mri"]["background"]
    assert m_wm["mri"]["tissue_mean"] > 0.5  # T1 white matter is bright


def test_ct_text_reports_measured_hounsfield_bands(cache):
    i = _case(cache, "phantom_000")
    label = np.asarray(cache.label(i))
    lung = _patch_at(cache, "phantom_000", np.argwhere(label == 6).mean(0).astype(int), (16, 16, 8))
    liver = _patch_at(cache, "phantom_000", np.argwhere(label == 1).mean(0).astype(int), (16, 16, 8))
    t_lung, t_liver = DescribeCaptioner().caption([lung, liver], seed=0)
    assert "low-density (-900 to -500 HU)" in t_lung.split(".")[1]  # the content clause names the measured band
    assert "soft-tissue" in t_liver.split(".")[1]
    for text in (t_lung, t_liver):  # ... by density, never by an organ or an agent it did not measure
        assert not any(word in text.lower() for word in ("lung", "contrast", "bone ", "liver"))
    shares = measure(liver)["ct"]
    assert shares["soft-tissue or fluid density"] > 0.6


def test_same_patch_same_seed_same_text(cache):
    patch = _patch_at(cache, "phantom_003", (64, 64, 32))
    cap = DescribeCaptioner()
    assert cap.caption([patch], seed=3) == cap.caption([patch], seed=3)
    variants = {cap.caption([patch], seed=s)[0] for s in range(12)}
    assert len(variants) > 1  # wording varies with the seed...
    numbers = {tuple(w for w in t.replace(",", " ").replace(")", " ").split() if w.endswith("%")) for t in variants}
    assert len({tuple(sorted(n)) for n in numbers}) == 1  # ...the measured figures do not


def test_corpus_captions_distinct_and_finding_free(corpus):
    records = read_captions(corpus / "captions.jsonl")
    assert len(records) > 100
    assert {r["modality"] for r in records} == {"CT", "MRI", "EM"}
    assert distinct_share(records) >= 0.5
    for r in records:
        low = r["text"].lower()
        assert not any(word in low for word in FINDINGS), r["text"]


def test_content_controls_keep_only_their_part(cache):
    i = _case(cache, "phantom_000")
    label = np.asarray(cache.label(i))
    liver = _patch_at(cache, "phantom_000", np.argwhere(label == 1).mean(0).astype(int), (16, 16, 8))
    full, position, intensity = (
        DescribeCaptioner(c).caption([liver], seed=0)[0] for c in ("full", "position", "intensity")
    )
    assert full.startswith(position[:-1])  # the opening sentence, word for word
    assert position.count(".") == 1 and "HU" not in position and "edges" not in position
    assert "density" in intensity and full.split(".")[1] == intensity.split(".")[1]  # the same measured bands
    assert not any(w in intensity for w in ("region of", "part of", "portion of", "edges"))  # no position, no extras
    assert DescribeCaptioner("position").name == "describe:position" and DescribeCaptioner().name == "describe"
