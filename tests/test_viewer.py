"""The report's 3D viewer, without a browser: what is embedded, how it is oriented and downsampled, the page's
states as a headless browser reads them back (the browser run itself: benchmarks/check_report_viewer.py)."""

from __future__ import annotations

import hashlib
import json
import re

import nibabel as nib
import numpy as np

from gtgm.report import write_report
from gtgm.viewer import LIBRARY, decode_nifti, downsample_steps, viewer_case, viewer_html, write_assets
from gtgm.viewer.check import failures, read_states

# the vendored NiiVue 0.69.0 build (npm @niivue/niivue, dist/niivue.umd.js), unchanged
NIIVUE_SHA256 = "47b896b77ec4a5be3ef1949c33ad393b6f45629921f326c279000bcf51bdb4af"


def _case(shape=(300, 40, 20)):
    rng = np.random.default_rng(0)
    image = rng.normal(0, 100, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[100:200, 10:30, 5:15] = 2
    pred = np.roll(label, 3, axis=0)
    affine = np.diag([-0.8, 1.0, 3.0, 1.0])  # x stored right-to-left (L -> R flipped): reoriented to RAS
    affine[:3, 3] = [100.0, -20.0, 5.0]
    return nib.Nifti1Image(image, affine), label, pred


def test_a_case_is_embedded_in_ras_downsampled_with_its_geometry():
    img, label, pred = _case()
    case = viewer_case("t", img, label, pred, {"1": "liver", "2": "spleen"}, (-200, 300))
    assert downsample_steps((300, 40, 20)) == [3, 1, 1] and case["steps"] == [3, 1, 1]
    out_img, out_ref = decode_nifti(case["image"]), decode_nifti(case["reference"])
    assert nib.aff2axcodes(out_img.affine) == ("R", "A", "S") and out_img.shape == (100, 40, 20)
    assert out_img.get_data_dtype() == np.uint8 and np.asarray(out_img.dataobj).max() <= 255
    canon = nib.as_closest_canonical(nib.Nifti1Image(label, img.affine))
    np.testing.assert_array_equal(np.asarray(out_ref.dataobj), np.asarray(canon.dataobj)[::3])
    # a kept voxel is at the same world point as in the input
    world = out_ref.affine @ [7, 5, 3, 1]
    np.testing.assert_allclose(world, canon.affine @ [21, 5, 3, 1])
    assert [c[:2] for c in case["classes"]] == [[1, "liver"], [2, "spleen"]]
    assert all(re.fullmatch(r"#[0-9a-f]{6}", c[2]) for c in case["classes"])
    assert all(0 < f < 1 for f in case["focus"])


def test_the_page_fragment_loads_the_vendored_library_and_embeds_the_cases(tmp_path):
    img, label, pred = _case((40, 40, 20))
    cases = [viewer_case(f"case {i}", img, label, pred, {"2": "spleen"}, (-200, 300)) for i in range(2)]
    library = write_assets(tmp_path / "figures" / "viewer")
    assert hashlib.sha256(library.read_bytes()).hexdigest() == NIIVUE_SHA256
    assert (library.parent / "LICENSE-niivue.txt").read_text().count("BSD 2-Clause License") == 1
    fragment = viewer_html(cases, "figures/viewer/" + LIBRARY)
    _, page = write_report(tmp_path, "r", [("html", (fragment, "viewer: see report.html"))])
    text = page.read_text()
    assert '<script src="figures/viewer/niivue.umd.js">' in text and "RADIOLOGICAL" not in text
    assert "setRadiologicalConvention(true)" in text
    data = json.loads(re.search(r'id="gtgm-viewer-data">(.*?)</script>', text, re.S).group(1))
    assert [c["title"] for c in data] == ["case 0", "case 1"] and data[0]["reference"] == cases[0]["reference"]
    assert text.count('class="gtgm-viewer"') == 2 and text.count('data-class="2"') == 2
    assert "viewer: see report.html" in (tmp_path / "report.md").read_text()


def test_states_read_back_from_the_dom():
    ok = '<body><div class="gtgm-viewer" id="gtgm-viewer-0" data-case="0" data-status="ok" data-lit="5000"></div>'
    assert failures(read_states(ok)) == []
    blank = ok.replace('data-lit="5000"', 'data-lit="12"')
    assert failures(read_states(blank)) == ["viewer 0: blank canvas (12 lit pixels)"]
    err = '<body data-console-errors="WebGL2 missing"><div class="gtgm-viewer" data-case="0" data-status="error: x">'
    assert failures(read_states(err)) == ["viewer 0: status 'error: x'", "console errors: WebGL2 missing"]
    assert failures(read_states("<body></body>")) == ["no viewer in the page"]


def test_the_demo_report_has_a_viewer_per_held_out_case(demo_run):
    text = (demo_run / "report.html").read_text()
    data = json.loads(re.search(r'id="gtgm-viewer-data">(.*?)</script>', text, re.S).group(1))
    titles = [c["title"] for c in data]  # real CT first (the fixture's stand-in), then the phantoms, then the MRI slab
    assert titles[0] == "real CT ts_abdomen_ct (test)" and titles[-1].startswith("MRI mni152"), titles
    assert sum(t.startswith("CT phantom") for t in titles) == len(titles) - 2
    assert (demo_run / "figures" / "viewer" / LIBRARY).is_file()
    assert "report.html" in (demo_run / "report.md").read_text()
