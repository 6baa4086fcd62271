"""nnU-Net v2: raw datasets that nnU-Net's own checks accept, and resenc weights that its own loader takes.

Everything nnU-Net-side is done by nnunetv2 itself, driven by ``gtgm.export.nnunet_run``:
``verify_dataset_integrity``, the fingerprint and the ResEnc-M planner, preprocessing, the network built from the
plans (``get_network_from_plans``), ``load_pretrained_weights``, a few training iterations and a prediction.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from gtgm.cli import main
from gtgm.data.phantom_ct import CT_LABELS, make_ct_phantom
from gtgm.demo.exports import PLANS_NAME
from gtgm.errors import GtgmError
from gtgm.export.nnunet import (
    architecture_mismatches,
    dataset_orientation,
    nnunet_axes,
    nnunet_flips,
    resenc_overrides,
    to_gtgm_axes,
    to_nnunet_order,
)
from gtgm.export.nnunet_run import NnUNetWork, _child, plan, predict, preprocess, raw_dataset, train, write_split
from gtgm.fsutil import write_json
from tests.conftest import save_nifti
from tests.train.test_pretrain import tiny_overrides


def _export(dataset: Path, out: Path, dataset_id: int, *extra: str) -> int:
    return main(["data", "export-nnunet", str(dataset), "--id", str(dataset_id), "--out", str(out), *extra])


@pytest.mark.slow
def test_example_groups_pass_nnunets_own_integrity_check(corpus, tmp_path):
    examples = corpus / "examples"
    for group, dataset_id in (("ct_phantom", 501), ("mni152_tissue", 502)):
        assert _export(examples, tmp_path, dataset_id, "--group", group) == 0
        folder = next(tmp_path.glob(f"Dataset{dataset_id}_*"))
        verify_dataset_integrity(str(folder), 1)  # nnU-Net's check: raises on any problem
        meta = json.loads((folder / "dataset.json").read_text())
        assert meta["labels"]["background"] == 0 and meta["file_ending"] == ".nii.gz"
        assert meta["numTraining"] == len(list((folder / "labelsTr").iterdir()))
    ct = json.loads((tmp_path / "Dataset501_ct_phantom" / "dataset.json").read_text())
    assert ct["channel_names"] == {"0": "CT"}  # nnU-Net's CT normalisation
    assert list(ct["labels"]) == ["background", *list(CT_LABELS.values())[1:]]
    # geometry kept: the exported image has its source's affine and voxels
    src = json.loads((examples / "dataset.json").read_text())
    entry = next(e for e in src["training"] if e.get("group") == "ct_phantom")
    case = entry.get("id") or Path(entry["image"]).name.replace(".nii.gz", "")
    a = nib.load(examples / entry["image"])
    b = nib.load(tmp_path / "Dataset501_ct_phantom" / "imagesTr" / f"{case}_0000.nii.gz")
    np.testing.assert_allclose(a.affine, b.affine)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))


def _tiny_raw(root: Path, n: int = 5, bad_label: bool = False) -> Path:
    training = []
    for seed in range(n):
        hu, lab, affine = make_ct_phantom(seed, (24, 24, 12), (16.0, 24.0))
        if bad_label and seed == n - 1:
            lab[0, 0, 0] = 42
        save_nifti(root / "imagesTr" / f"ct_{seed}.nii.gz", hu, affine)
        save_nifti(root / "labelsTr" / f"ct_{seed}.nii.gz", lab, affine)
        training.append({"image": f"imagesTr/ct_{seed}.nii.gz", "label": f"labelsTr/ct_{seed}.nii.gz"})
    labels = {str(k): v for k, v in CT_LABELS.items()}
    write_json(root / "dataset.json", {"modality": {"0": "CT"}, "labels": labels, "training": training})
    return root


def test_export_refuses_taken_ids_unknown_groups_and_undeclared_labels(tmp_path, capsys):
    raw = _tiny_raw(tmp_path / "raw", n=2)
    out = tmp_path / "nnUNet_raw"
    assert _export(raw, out, 7) == 0
    assert _export(raw, out, 7, "--name", "Other") == 1
    assert "id 7 is already used by Dataset007_default" in capsys.readouterr().err
    assert _export(raw, out, 8, "--group", "liver_only") == 1
    assert "no labelled cases in group 'liver_only'" in capsys.readouterr().err
    bad = _tiny_raw(tmp_path / "bad", n=2, bad_label=True)
    assert _export(bad, out, 9) == 1
    err = capsys.readouterr().err
    assert "labelsTr/ct_1.nii.gz" in err and "[42]" in err
    assert sorted(p.name for p in out.iterdir()) == ["Dataset007_default"]  # nothing half-written


def test_axis_order_and_mismatch_messages():
    # SimpleITK arrays are (z, y, x); transpose_forward [0, 1, 2] keeps them: nnU-Net axis 0 is gtgm's z
    assert nnunet_axes({"image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2]}) == [2, 1, 0]
    # nnU-Net's nibabel readers transpose to SimpleITK's order too
    assert nnunet_axes({"image_reader_writer": "NibabelIO", "transpose_forward": [2, 0, 1]}) == [0, 2, 1]
    assert to_gtgm_axes([[1, 2, 2]], [2, 1, 0]) == [[2, 2, 1]]
    w = torch.arange(2 * 3 * 4).reshape(1, 1, 2, 3, 4).float()
    assert to_nnunet_order(w, [2, 1, 0]).shape == (1, 1, 4, 3, 2)
    assert torch.equal(to_nnunet_order(w, [2, 1, 0])[0, 0, 3, 2, 1], w[0, 0, 1, 2, 3])
    encoder = {"in_channels": 1, "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 32]}}
    plans = {"network_class_name": "x.PlainConvUNet", "arch_kwargs": {"n_stages": 3, "features_per_stage": [8, 16, 64]}}
    wrong = architecture_mismatches(encoder, plans, [2, 1, 0], in_channels=2)
    assert any(w.startswith("network class: plans x.PlainConvUNet") for w in wrong)
    assert "features_per_stage: plans [8, 16, 64], encoder [8, 16, 32]" in wrong
    assert "input channels: dataset.json 2, encoder 1" in wrong


def _plan_with_nnunet(raw: Path, work: Path, dataset_id: int) -> tuple[NnUNetWork, Path]:
    """nnU-Net's own fingerprint + ResEnc-M planner (through gtgm.export.nnunet_run) on the exported raw dataset,
    its last case held out for prediction; returns the working folder and the plans file."""
    nn = NnUNetWork(work, dataset_id)
    held = raw_dataset(nn, raw, None, ["ct_4"])
    assert [p.name for p in held.iterdir()] == ["ct_4_0000.nii.gz"]
    return nn, plan(nn, "nnUNetResEncUNetMPlans")


@pytest.mark.slow
def test_resenc_encoder_loads_into_the_network_nnunet_builds(corpus, tmp_path, capsys):
    nn, plans_path = _plan_with_nnunet(_tiny_raw(tmp_path / "raw"), tmp_path, 503)
    arch = resenc_overrides(plans_path, "3d_fullres")
    run = tmp_path / "pretrain"
    args = [f"--cache={corpus / 'cache'}", f"--captions={corpus / 'captions.jsonl'}"]
    args += [f"--text-cache={corpus / 'text'}", f"--out={run}"]
    tiny = [o for o in tiny_overrides(steps=2) if not o.startswith(("model.channels", "pretrain.patch_size"))]
    assert main(["pretrain", *args, *tiny, "pretrain.patch_size=[32,32,32]", "pretrain.batch_size=2", *arch]) == 0
    assert json.loads((run / "encoder.json").read_text())["encoder"] == "resenc"

    out = tmp_path / "export"
    assert main(["export", "nnunet", str(run / "encoder.pt"), "--plans", str(plans_path), "--out", str(out)]) == 0
    pm = PlansManager(str(plans_path))
    cm = pm.get_configuration("3d_fullres")
    kw = cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import
    net = get_network_from_plans(cm.network_arch_class_name, *kw, 1, len(CT_LABELS), deep_supervision=True)
    load_pretrained_weights(net, str(out / "pretrained_weights.pth"))  # nnU-Net's loader: asserts every key
    state, pretrained = net.state_dict(), torch.load(run / "encoder.pt", weights_only=True)
    plans = json.loads(plans_path.read_text())
    orientation = dataset_orientation(plans_path)[0]
    axes, flips = nnunet_axes(plans, orientation), nnunet_flips(plans, orientation)
    assert pretrained and all(torch.equal(state[k], to_nnunet_order(v, axes, flips)) for k, v in pretrained.items())
    nnssl = torch.load(out / "nnssl_checkpoint.pth", weights_only=True)
    plan = nnssl["nnssl_adaptation_plan"]
    assert plan["key_to_encoder"] == "encoder.stages" and plan["key_to_stem"] == "encoder.stem"
    assert plan["pretrain_num_input_channels"] == 1
    assert next(iter(plan["pretrain_plan"]["configurations"].values()))["patch_size"] == [32, 32, 32]
    assert all(f"{k}.weight" in nnssl["network_weights"] for k in plan["keys_to_in_proj"])
    again = tmp_path / "export_again"  # reproducible: the decoder's initialisation is seeded too
    assert main(["export", "nnunet", str(run / "encoder.pt"), "--plans", str(plans_path), "--out", str(again)]) == 0
    first, second = (
        torch.load(d / "pretrained_weights.pth", weights_only=True)["network_weights"] for d in (out, again)
    )
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    # nnU-Net trains from them on CPU (2 epochs of 3 iterations, a snapshot after the first) and predicts the
    # held-out case with that snapshot; a failing step is one error naming it
    preprocess(nn, "nnUNetResEncUNetMPlans")
    write_split(nn, ["ct_0", "ct_1", "ct_2"], ["ct_3"])
    trained = train(nn, "nnUNetResEncUNetMPlans", "nnUNetTrainer", 2, 3, seed=0,
                    pretrained=out / "pretrained_weights.pth", snapshots=[1])  # fmt: skip
    folder = Path(trained["folder"])
    assert [a["epoch"] for a in trained["anytime"]] == [1] and 0 < trained["anytime"][0]["elapsed_s"] < trained[
        "train_s"
    ]
    assert (folder / "checkpoint_ep1.pth").is_file() and (folder / "checkpoint_final.pth").is_file()
    log = next(folder.glob("training_log_*.txt")).read_text()
    assert log.count("train_loss") == 2
    predict(nn, "nnUNetResEncUNetMPlans", "nnUNetTrainer", [(nn.root / "nnunet_test_images", tmp_path / "pred",
                                                               "checkpoint_ep1.pth")])  # fmt: skip
    pred = nib.load(tmp_path / "pred" / "ct_4.nii.gz")
    assert pred.shape == nib.load(tmp_path / "raw" / "imagesTr" / "ct_4.nii.gz").shape
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= set(CT_LABELS)
    with pytest.raises(GtgmError, match="nnU-Net plan in .* failed .*missing"):  # (fails before nnU-Net loads)
        _child(nn, "plan")

    # a plans file for another network is refused, each mismatch named, nothing written
    other = json.loads(plans_path.read_text())
    other["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"][-1] *= 2
    other["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["n_blocks_per_stage"][0] += 1
    (tmp_path / "other").mkdir()
    write_json(tmp_path / "other" / "plans.json", other)
    refused = tmp_path / "refused"
    args = ["export", "nnunet", str(run / "encoder.pt"), "--plans", str(tmp_path / "other" / "plans.json")]
    assert main([*args, "--out", str(refused)]) == 1
    err = capsys.readouterr().err
    assert "features_per_stage: plans" in err and "n_blocks_per_stage: plans" in err
    assert not refused.exists()


@pytest.mark.slow
def test_demo_exports_a_resenc_encoder_planned_by_nnunet(demo_run):
    """The demo's nnU-Net route: nnU-Net's ResEnc-M plans (CPU memory target) -> resenc pretraining -> export,
    loaded by nnU-Net's own loader into the network nnU-Net builds from those plans; the report links it."""
    plans_path = next((demo_run / "exports" / "nnUNet_preprocessed").glob("Dataset501_*")) / f"{PLANS_NAME}.json"
    plans = json.loads(plans_path.read_text())
    assert plans["experiment_planner_used"] == "nnUNetPlannerResEncM"
    cm = PlansManager(str(plans_path)).get_configuration("3d_fullres")
    kw = cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import
    net = get_network_from_plans(cm.network_arch_class_name, *kw, 1, len(CT_LABELS), deep_supervision=True)
    load_pretrained_weights(net, str(demo_run / "exports" / "nnunet_resenc" / "pretrained_weights.pth"))
    state = net.state_dict()
    pretrained = torch.load(demo_run / "exports" / "resenc_pretrain" / "encoder.pt", weights_only=True)
    orientation, where = dataset_orientation(plans_path)  # the phantoms are LPS: x and y kernels mirrored
    axes, flips = nnunet_axes(plans, orientation), nnunet_flips(plans, orientation)
    assert "labelsTr" in where and flips == [False, True, True]
    assert pretrained and all(torch.equal(state[k], to_nnunet_order(v, axes, flips)) for k, v in pretrained.items())
    report = (demo_run / "report.md").read_text()
    for link in ("exports/nnunet_resenc", "exports/resenc_pretrain", f"{PLANS_NAME}.json", "exports/ct_bundle"):
        assert f"]({link}" in report or f"{link})" in report
    assert f"-p {PLANS_NAME} -pretrained_weights" in report


def test_export_errors_name_the_file_and_the_cause(demo_run, tmp_path, capsys):
    plans = tmp_path / "plans.json"
    write_json(plans, {"configurations": {"2d": {}}})
    encoder = str(demo_run / "pretrain" / "encoder.pt")  # a resunet, which nnU-Net has no network for
    assert main(["export", "nnunet", encoder, "--plans", str(plans), "--out", str(tmp_path / "o")]) == 1
    assert "pretrained as 'resunet', but nnU-Net needs a 'resenc' encoder" in capsys.readouterr().err
    assert main(["export", "resenc-config", "--plans", str(plans)]) == 1
    assert "no configuration '3d_fullres' in the plans (has: 2d)" in capsys.readouterr().err
    assert main(["export", "bundle", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 1
    assert "missing.pt" in capsys.readouterr().err
    em = next((demo_run / "study" / "em_synthetic").rglob("best.pt"))
    assert main(["export", "bundle", str(em), "--out", str(tmp_path / "b")]) == 1
    assert "trained for task 'em'; bundles are written for segmentation models" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    "plans_body, field",
    [
        ({"configurations": {"3d_fullres": {"architecture": "ResEncUNet"}}}, "configurations.3d_fullres.architecture"),
        ({"configurations": {"3d_fullres": {}}, "transpose_forward": ["a", "b", "c"]}, "transpose_forward["),
        ({"configurations": []}, "configurations"),
    ],
)
def test_plans_fields_are_checked_against_their_schema(tmp_path, capsys, plans_body, field):
    plans = tmp_path / "plans.json"
    write_json(plans, plans_body)
    assert main(["export", "resenc-config", "--plans", str(plans)]) == 1
    err = capsys.readouterr().err
    assert "plans.json" in err and f"field '{field}" in err and "Traceback" not in err


@pytest.mark.parametrize("change", [{"arch_kwargs": []}, {"in_channels": None}])
def test_encoder_json_fields_are_checked_against_their_schema(demo_run, tmp_path, capsys, change):
    src = demo_run / "exports" / "resenc_pretrain"
    shutil.copy2(src / "encoder.pt", tmp_path / "encoder.pt")
    meta = json.loads((src / "encoder.json").read_text())
    meta = {k: v for k, v in (meta | change).items() if v is not None}
    write_json(tmp_path / "encoder.json", meta)
    plans = next((demo_run / "exports" / "nnUNet_preprocessed").glob("Dataset501_*")) / f"{PLANS_NAME}.json"
    argv = ["export", "nnunet", str(tmp_path / "encoder.pt"), "--plans", str(plans), "--out", str(tmp_path / "o")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "encoder.json" in err and ("arch_kwargs" in err or "in_channels" in err) and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def _two_stage_plans(tmp_path, **change) -> Path:
    kwargs = {
        "features_per_stage": [8, 16],
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2]],
        "n_blocks_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
    }
    arch = {"network_class_name": "ResidualEncoderUNet", "arch_kwargs": {**kwargs, **change}}
    plans = tmp_path / "plans.json"
    write_json(plans, {"configurations": {"3d_fullres": {"architecture": arch}}})
    return plans


def test_resenc_config_refuses_stage_lists_that_disagree(tmp_path, capsys):
    assert main(["export", "resenc-config", "--plans", str(_two_stage_plans(tmp_path))]) == 0
    assert "model.strides=[[1,1,1],[2,2,2]]" in capsys.readouterr().out
    for change, needle in [
        ({"strides": [[1, 1, 1]]}, "arch_kwargs.strides needs 2 entries, got 1"),
        ({"kernel_sizes": [[3, 3], [3, 3, 3]]}, "kernel_sizes must be 3 positive integers"),
        ({"n_conv_per_stage_decoder": [1, 1]}, "n_conv_per_stage_decoder needs 1 entries"),
    ]:
        assert main(["export", "resenc-config", "--plans", str(_two_stage_plans(tmp_path, **change))]) == 1
        err = capsys.readouterr().err
        assert "plans.json" in err and needle in err and "Traceback" not in err


@pytest.mark.parametrize("shape", [(8, 8), (8, 8, 1), (8, 8, 8, 2)])
def test_a_reference_must_be_a_3d_image(tmp_path, capsys, shape):
    ref = save_nifti(tmp_path / "ref.nii.gz", np.zeros(shape, np.float32))
    argv = ["export", "resenc-config", "--plans", str(_two_stage_plans(tmp_path)), "--reference", str(ref)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "ref.nii.gz" in err and f"shape {shape}" in err and "3D image" in err
