"""Bad inputs end in one clear line (exit code 1, no traceback) and nothing is written outside ``--out``.

A first part of the hardening issue: names from data, duplicate prediction names, path flags, system errors,
value ranges. Each case runs ``gtgm.cli.main`` in-process.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gtgm.cli import main
from gtgm.fsutil import write_json
from tests.conftest import save_nifti
from tests.reliability.conftest import fails_cleanly


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("case_id", ["../../../escaped_case", "sub/dir", ".hidden", "tab\there"])
def test_case_ids_that_are_not_file_names_are_refused(tmp_path, capsys, case_id):
    root = tmp_path / "a" / "b" / "c"
    save_nifti(root / "data" / "img.nii.gz", np.zeros((8, 8, 8), np.float32))
    write_json(
        root / "data" / "dataset.json", {"modality": {"0": "MRI"}, "training": [{"image": "img.nii.gz", "id": case_id}]}
    )
    before = _files(tmp_path)
    fails_cleanly(
        capsys, ["data", "preprocess", str(root / "data"), "--out", str(root / "cache")], "dataset.json", "case id"
    )
    assert _files(tmp_path) == before  # nothing written, inside or outside --out


def test_inputs_of_the_same_name_get_distinct_predictions(demo_run, tmp_path, capsys):
    best = next((demo_run / "study").rglob("ct_phantom/*/ratio1_seed0/best.pt"))
    a, b = tmp_path / "a" / "scan.nii.gz", tmp_path / "b" / "scan.nii.gz"
    for path, seed in ((a, 0), (b, 1)):
        img = nib.load(demo_run / "examples" / "ct" / f"phantom_00{seed}.nii.gz")
        save_nifti(path, np.asarray(img.dataobj)[:40, :40, :20], img.affine)
    assert main(["predict", str(best), str(a), str(b), "--out", str(tmp_path / "pred")]) == 0
    assert "written as 'scan_2'" in capsys.readouterr().out
    assert _files(tmp_path / "pred") == ["scan.nii.gz", "scan_2.nii.gz"]


def test_path_flags_are_not_yaml(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    err = fails_cleanly(capsys, ["finetune", "on", "--out", "007"], "on")
    assert "expected str" not in err  # '007' and 'on' stay strings (YAML would make them 7 and True)


def test_system_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    fails_cleanly(capsys, ["data", "examples", "--out", str(tmp_path / "file" / "sub")], str(tmp_path / "file"))
    assert main(["--debug", "data", "examples", "--out", str(tmp_path / "file" / "sub")]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override, key",
    [
        ("finetune.label_ratio=0", "finetune.label_ratio"),
        ("finetune.label_ratio=2", "finetune.label_ratio"),
        ("finetune.steps=0", "finetune.steps"),
        ("finetune.val_every=0", "finetune.val_every"),
        ("finetune.checkpoint_every=0", "finetune.checkpoint_every"),
        ("finetune.patch_size=[0,16,16]", "finetune.patch_size"),
        ("finetune.patch_size=[16,16]", "finetune.patch_size"),
        ("pretrain.steps=0", "pretrain.steps"),
        ("pretrain.batch_size=0", "pretrain.batch_size"),
        ("pretrain.patch_size=[-8,16,16]", "pretrain.patch_size"),
        ("preprocess.ct_window=[100,100]", "preprocess.ct_window"),
        ("preprocess.ct_window=[300,-200]", "preprocess.ct_window"),
        ("preprocess.target_spacing=[0,1,1]", "preprocess.target_spacing"),
        ("preprocess.group_spacing={ct_phantom: [1, 1]}", "preprocess.group_spacing.ct_phantom"),
        ("study.seeds=[]", "study.seeds"),
        ("study.ratios=[0]", "study.ratios"),
    ],
)
def test_out_of_range_settings_name_their_key(capsys, override, key):
    fails_cleanly(capsys, ["config", override], f"'{key}'")


def test_label_ratio_flag_is_checked(tmp_path, capsys):
    fails_cleanly(capsys, ["finetune", str(tmp_path), "--label-ratio", "-1"], "finetune.label_ratio")
    assert json.dumps(_files(tmp_path)) == "[]"


def _tiny_labelled(root, label_value=1):
    lab = np.zeros((16, 16, 16), np.uint8)
    lab[4:10, 4:10, 4:10] = label_value
    training = []
    for i in range(3):
        save_nifti(
            root / "imagesTr" / f"c{i}.nii.gz", np.random.default_rng(i).normal(size=(16, 16, 16)).astype(np.float32)
        )
        save_nifti(root / "labelsTr" / f"c{i}.nii.gz", lab)
        training.append({"image": f"imagesTr/c{i}.nii.gz", "label": f"labelsTr/c{i}.nii.gz"})
    labels = {"0": "background", "1": "lesion"}
    write_json(root / "dataset.json", {"modality": {"0": "MRI"}, "labels": labels, "training": training})
    return root


def test_a_truncated_cached_array_is_rebuilt(tmp_path, capsys):
    raw = _tiny_labelled(tmp_path / "raw")
    assert main(["data", "preprocess", str(raw), "--out", str(tmp_path / "cache")]) == 0
    npy = tmp_path / "cache" / "volumes" / "c0.npy"
    whole = npy.read_bytes()
    npy.write_bytes(whole[: len(whole) // 2])
    assert main(["data", "preprocess", str(raw), "--out", str(tmp_path / "cache")]) == 0
    assert npy.read_bytes() == whole  # rebuilt, not kept as "cached"


def test_label_values_outside_dataset_json_are_refused(tmp_path, capsys):
    raw = _tiny_labelled(tmp_path / "raw", label_value=9)
    assert main(["data", "preprocess", str(raw), "--out", str(tmp_path / "cache")]) == 0
    argv = [
        "finetune",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "ft"),
        "finetune.patch_size=[16,16,16]",
        "model.channels=[4,8,16]",
    ]
    fails_cleanly(capsys, argv, "case c0", "[9]", "does not declare")
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    "change, shown",
    [({"start": [9999, 0, 0]}, "[9999, 0, 0]"), ({"start": "abc"}, "start 'abc'"), ({"volume": None}, "volume None")],
)
def test_caption_box_outside_its_volume_is_refused(demo_run, tmp_path, capsys, change, shown):
    lines = (demo_run / "captions.jsonl").read_text().splitlines()
    bad = json.loads(lines[0]) | change
    (tmp_path / "captions.jsonl").write_text("\n".join([json.dumps(bad), *lines[1:]]) + "\n")
    argv = [
        "pretrain",
        "--cache",
        str(demo_run / "cache"),
        "--captions",
        str(tmp_path / "captions.jsonl"),
        "--text-cache",
        str(demo_run / "text"),
        "--out",
        str(tmp_path / "run"),
        "pretrain.steps=1",
    ]
    fails_cleanly(capsys, argv, bad["key"], shown)


def test_headers_and_spacings_beyond_memory_are_refused_before_allocating(tmp_path, capsys):
    hdr = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.copy()
    hdr.set_data_shape((20000, 20000, 20000))  # ~32 TB as float32, in a 416-byte file
    (tmp_path / "big").mkdir()
    (tmp_path / "big" / "big.nii").write_bytes(hdr.binaryblock + bytes(352 - len(hdr.binaryblock) + 64))
    argv = ["data", "preprocess", str(tmp_path / "big"), "--modality", "MRI", "--out", str(tmp_path / "c1")]
    fails_cleanly(capsys, argv, "big.nii", "(20000, 20000, 20000)")
    save_nifti(tmp_path / "small" / "a.nii.gz", np.zeros((8, 8, 8), np.float32))
    argv = ["data", "preprocess", str(tmp_path / "small"), "--modality", "MRI", "--out", str(tmp_path / "c2")]
    fails_cleanly(capsys, [*argv, "preprocess.target_spacing=[0.001,0.001,0.001]"], "preprocess.target_spacing")
    assert not list((tmp_path / "c2").rglob("*.npy"))


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), OSError("Not enough free space to write 46137344 bytes")],
)
def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch, error):
    from gtgm.cli import _describe
    from gtgm.fsutil import write_json

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as caught:
        write_json(tmp_path / "out" / "summary.json", {"a": 1})
    message = _describe(caught.value)
    assert message.startswith(f"{tmp_path / 'out' / 'summary.json'}: ") and "space" in message
    assert [p.name for p in (tmp_path / "out").iterdir()] == []  # no temporary file left behind
