"""One bad input per row, at every stage: exit code 1, one ``gtgm: error:`` line naming the file or key and the
cause, no traceback, and the test folder (inputs and ``--out``) byte-identical to before — nothing half-written,
nothing outside ``--out``. Each row runs ``gtgm.cli.main`` in-process.

A row is ``kind -> make(tmp, inputs) -> (argv, needles)``; ``inputs`` gives the shared, read-only inputs
(:func:`inputs`: a tiny labelled MRI dataset, its cache, the demo run's captions, text cache, encoder and
fine-tuned checkpoint), and copies any of them into ``tmp`` before changing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from gtgm.fsutil import write_json
from tests.conftest import save_nifti
from tests.data.test_io import write_dicom_series
from tests.reliability.conftest import fails_cleanly, finetune_argv, pretrain_argv, tree


# ------------------------------------------------------------------------------------------------ data stage
def _dataset(tmp: Path, body: dict) -> Path:
    save_nifti(tmp / "ds" / "img.nii.gz", np.zeros((8, 8, 8), np.float32))
    write_json(tmp / "ds" / "dataset.json", body)
    return tmp / "ds"


def k_preprocess_out_is_a_file(tmp, inp):
    (tmp / "cache").write_text("a file")
    return ["data", "preprocess", str(inp.raw), "--out", str(tmp / "cache")], [str(tmp / "cache"), "not a folder"]


def k_training_is_a_dict(tmp, inp):
    ds = _dataset(tmp, {"modality": {"0": "MRI"}, "training": {"image": "img.nii.gz"}})
    return ["data", "check", str(ds)], ["dataset.json", "'training'", "not of type 'array'"]


def k_groups_is_a_list(tmp, inp):
    ds = _dataset(tmp, {"groups": [{"modality": "MRI", "training": [{"image": "img.nii.gz"}]}]})
    return ["data", "check", str(ds)], ["dataset.json", "'groups'"]


def k_declared_case_id_twice(tmp, inp):
    entries = [{"id": "a", "image": "img.nii.gz"}, {"id": "a", "image": "img.nii.gz"}]
    ds = _dataset(tmp, {"modality": {"0": "MRI"}, "training": entries})
    return ["data", "check", str(ds)], ["dataset.json", "training[1]", "id 'a' is already used"]


def k_empty_case_id(tmp, inp):
    ds = _dataset(tmp, {"modality": {"0": "MRI"}, "training": [{"image": "img.nii.gz", "id": ""}]})
    return ["data", "preprocess", str(ds), "--out", str(tmp / "c")], ["dataset.json", "training[0].id: ''"]


def k_nnunet_num_training_not_a_number(tmp, inp):
    save_nifti(tmp / "nn" / "imagesTr" / "a_0000.nii.gz", np.zeros((8, 8, 8), np.float32))
    save_nifti(tmp / "nn" / "labelsTr" / "a.nii.gz", np.zeros((8, 8, 8), np.uint8))
    body = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0},
        "numTraining": "three",
        "file_ending": ".nii.gz",
    }
    write_json(tmp / "nn" / "dataset.json", body)
    return ["data", "check", str(tmp / "nn")], ["dataset.json", "numTraining", "'three'"]


def k_singular_affine(tmp, inp):
    aff = np.eye(4)
    aff[2, 2] = 0.0
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((8, 8, 8))
    hdr.set_data_dtype(np.float32)
    hdr.set_sform(aff, code=1)  # a singular sform (nibabel refuses to build one from an affine)
    (tmp / "sing").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), None, header=hdr), str(tmp / "sing" / "a.nii.gz"))
    return ["data", "check", str(tmp / "sing"), "--modality", "MRI"], ["a.nii.gz", "affine"]


def k_zero_length_axis(tmp, inp):
    save_nifti(tmp / "zero" / "a.nii.gz", np.zeros((8, 0, 8), np.float32))
    return ["data", "check", str(tmp / "zero"), "--modality", "MRI"], ["a.nii.gz", "(8, 0, 8)", "empty"]


def k_hdf5_raw_of_strings(tmp, inp):
    (tmp / "em").mkdir()
    with h5py.File(tmp / "em" / "s.hdf", "w") as f:
        f.create_dataset("volumes/raw", data=np.array([[["a", "b"]] * 2] * 2, dtype=h5py.string_dtype()))
    return ["data", "check", str(tmp / "em" / "s.hdf")], ["s.hdf", "volumes/raw", "numeric"]


def k_truncated_dicom_slice(tmp, inp):
    folder = write_dicom_series(tmp / "dcm", [np.zeros((16, 16), np.int16)] * 3)
    last = sorted(folder.glob("*.dcm"))[-1]
    last.write_bytes(last.read_bytes()[:-200])
    return ["data", "check", str(folder), "--modality", "CT"], [last.name]


def k_dataset_json_binary_garbage(tmp, inp):
    (tmp / "ds").mkdir()
    (tmp / "ds" / "dataset.json").write_bytes(b"\x89PNG\x00\xff\xfe garbage")
    return ["data", "check", str(tmp / "ds")], ["dataset.json", "JSON"]


def k_missing_image_file(tmp, inp):
    ds = _dataset(tmp, {"modality": {"0": "MRI"}, "training": [{"image": "nope.nii.gz"}]})
    return ["data", "preprocess", str(ds), "--out", str(tmp / "cache")], ["nope.nii.gz"]


def k_em_float64_overflow(tmp, inp):
    raw = np.zeros((8, 8, 8), np.float64)
    raw[1, 1, 1] = 1e200  # finite as float64, inf as float32
    (tmp / "em").mkdir()
    with h5py.File(tmp / "em" / "s.hdf", "w") as f:
        f.create_dataset("volumes/raw", data=raw)
    return ["data", "check", str(tmp / "em" / "s.hdf")], ["s.hdf", "float32"]


def k_check_missing_path(tmp, inp):
    return ["data", "check", str(tmp / "nothing")], [str(tmp / "nothing")]


def k_examples_negative_count(tmp, inp):
    return ["data", "examples", "--out", str(tmp / "ex"), "--n-em", "-2"], ["--n-em"]


# --------------------------------------------------------------------------------------------------- caption
def k_caption_out_is_a_folder(tmp, inp):
    (tmp / "caps.jsonl").mkdir()
    return ["caption", str(inp.cache), "--out", str(tmp / "caps.jsonl")], [str(tmp / "caps.jsonl"), "folder"]


def k_caption_cache_without_index(tmp, inp):
    (tmp / "empty").mkdir()
    return ["caption", str(tmp / "empty"), "--out", str(tmp / "c.jsonl")], ["index.json", "no cache index"]


def k_caption_cache_index_garbage(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    (cache / "index.json").write_text('{"cases": [')
    return ["caption", str(cache), "--out", str(tmp / "c.jsonl")], ["index.json", "not valid JSON"]


def k_caption_case_json_garbage(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    (cache / "volumes" / "c0.json").write_text("not json")
    return ["caption", str(cache), "--out", str(tmp / "c.jsonl")], ["c0.json", "not valid JSON"]


def k_caption_resume_binary_garbage(tmp, inp):
    (tmp / "c.jsonl").write_bytes(b"\xff\xfe\x00garbage\n")
    return ["caption", str(inp.cache), "--out", str(tmp / "c.jsonl")], ["c.jsonl", "line 1"]


def k_caption_resume_without_captioner(tmp, inp):
    rec = json.loads(inp.captions.read_text().splitlines()[0])
    rec.pop("captioner", None)
    (tmp / "c.jsonl").write_text(json.dumps(rec) + "\n")
    return ["caption", str(inp.cache), "--out", str(tmp / "c.jsonl")], ["c.jsonl", "captioner"]


def _truncated_cache(tmp, inp) -> Path:
    cache = inp.copy(inp.cache, tmp / "cache")
    image = cache / "volumes" / "c0.npy"
    image.write_bytes(image.read_bytes()[:-100])
    return cache


def k_caption_truncated_cached_array(tmp, inp):
    return ["caption", str(_truncated_cache(tmp, inp)), "--out", str(tmp / "c.jsonl")], ["c0", "damaged cached array"]


def k_audit_truncated_cached_array(tmp, inp):
    cache = _truncated_cache(tmp, inp)
    argv = ["audit", str(inp.captions), str(cache), "--out", str(tmp / "a")]
    return argv, ["c0", "damaged cached array"]


def k_caption_bad_shard(tmp, inp):
    return ["caption", str(inp.cache), "--out", str(tmp / "c.jsonl"), "--shard", "3/2"], ["--shard", "3/2"]


def k_caption_zero_box(tmp, inp):
    argv = ["caption", str(inp.cache), "--out", str(tmp / "c.jsonl"), "caption.patch_size={MRI: [0, 16, 16]}"]
    return argv, ["caption.patch_size"]


# ------------------------------------------------------------------------------------------------ embed-text
def k_embed_missing_captions(tmp, inp):
    return ["embed-text", str(tmp / "none.jsonl"), "--out", str(tmp / "text")], ["none.jsonl", "not found"]


def k_embed_garbage_line(tmp, inp):
    (tmp / "c.jsonl").write_text('{"key": "a", "text": "fine"}\n{oops\n')
    return ["embed-text", str(tmp / "c.jsonl"), "--out", str(tmp / "text")], ["c.jsonl", "line 2"]


def k_embed_out_is_a_file(tmp, inp):
    (tmp / "text").write_text("a file")
    return ["embed-text", str(inp.captions), "--out", str(tmp / "text")], [str(tmp / "text"), "not a folder"]


def k_embed_existing_index_garbage(tmp, inp):
    text = inp.copy(inp.text, tmp / "text")
    (text / "index.json").write_text("[1, 2")
    return ["embed-text", str(inp.captions), "--out", str(text)], ["index.json", "not valid JSON"]


def k_embed_existing_array_truncated(tmp, inp):
    text = inp.copy(inp.text, tmp / "text")
    data = (text / "embeddings.npy").read_bytes()
    (text / "embeddings.npy").write_bytes(data[: len(data) // 2])
    return ["embed-text", str(inp.captions), "--out", str(text)], ["embeddings.npy"]


# -------------------------------------------------------------------------------------------------- pretrain
def k_pretrain_text_cache_reordered(tmp, inp):
    text = inp.copy(inp.text, tmp / "text")
    index = json.loads((text / "index.json").read_text())
    index["hashes"] = index["hashes"][1:] + index["hashes"][:1]
    write_json(text / "index.json", index)
    return pretrain_argv(inp, tmp / "run", text=text), ["index.json", "embeddings.npy", "do not match"]


def k_pretrain_text_cache_truncated(tmp, inp):
    text = inp.copy(inp.text, tmp / "text")
    data = (text / "embeddings.npy").read_bytes()
    (text / "embeddings.npy").write_bytes(data[: len(data) - 1000])
    return pretrain_argv(inp, tmp / "run", text=text), ["embeddings.npy"]


def _caption_change(tmp, inp, change) -> Path:
    lines = inp.captions.read_text().splitlines()
    (tmp / "c.jsonl").write_text("\n".join([json.dumps(json.loads(lines[0]) | change), *lines[1:]]) + "\n")
    return tmp / "c.jsonl"


def k_pretrain_caption_zero_size(tmp, inp):
    return pretrain_argv(inp, tmp / "run", captions=_caption_change(tmp, inp, {"size": [0, 0, 0]})), ["size"]


def k_audit_box_beyond_memory(tmp, inp):
    captions = _caption_change(tmp, inp, {"size": [100000, 100000, 100000]})
    return ["audit", str(captions), str(inp.demo_cache), "--out", str(tmp / "a")], ["c.jsonl", "GB to read"]


def k_audit_captions_of_another_voxel_size(tmp, inp):
    captions = _caption_change(tmp, inp, {"spacing": [9.0, 9.0, 9.0]})
    return ["audit", str(captions), str(inp.demo_cache), "--out", str(tmp / "a")], ["c.jsonl", "voxel size"]


def k_pretrain_captions_of_another_voxel_size(tmp, inp):
    captions = _caption_change(tmp, inp, {"spacing": [9.0, 9.0, 9.0]})
    return pretrain_argv(inp, tmp / "run", captions=captions), ["voxel size [9.0, 9.0, 9.0]"]


def k_pretrain_caption_binary_garbage(tmp, inp):
    (tmp / "c.jsonl").write_bytes(inp.captions.read_bytes() + b"\x00\xff\xfe\x80\n")
    return pretrain_argv(inp, tmp / "run", captions=tmp / "c.jsonl"), ["c.jsonl", "UTF-8"]


def k_pretrain_out_is_a_file(tmp, inp):
    (tmp / "run").write_text("a file")
    return pretrain_argv(inp, tmp / "run"), [str(tmp / "run"), "not a folder"]


def k_pretrain_patch_below_network_minimum(tmp, inp):
    argv = pretrain_argv(inp, tmp / "run", None, None, "pretrain.patch_size=[4,4,4]")
    return argv, ["pretrain.patch_size", "multiples of"]


def k_pretrain_checkpoint_every_zero(tmp, inp):
    return pretrain_argv(inp, tmp / "run", None, None, "pretrain.checkpoint_every=0"), ["pretrain.checkpoint_every"]


# -------------------------------------------------------------------------------------------------- finetune
def _encoder_file(tmp: Path, obj) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    torch.save(obj, tmp / "encoder.pt")
    return tmp / "encoder.pt"


def k_encoder_is_a_list(tmp, inp):
    enc = _encoder_file(tmp / "enc", [1, 2, 3])
    return finetune_argv(inp, tmp / "ft", f"finetune.pretrained={enc}"), ["encoder.pt", "state dict"]


def k_encoder_is_a_tensor(tmp, inp):
    enc = _encoder_file(tmp / "enc", torch.zeros(3))
    return finetune_argv(inp, tmp / "ft", f"finetune.pretrained={enc}"), ["encoder.pt", "state dict"]


def k_encoder_binary_garbage(tmp, inp):
    (tmp / "enc").mkdir()
    (tmp / "enc" / "encoder.pt").write_bytes(b"\x00garbage" * 50)
    return finetune_argv(inp, tmp / "ft", f"finetune.pretrained={tmp / 'enc' / 'encoder.pt'}"), ["encoder.pt"]


def k_encoder_json_malformed(tmp, inp):
    enc = inp.copy(inp.encoder, tmp / "enc" / "encoder.pt")
    (tmp / "enc" / "encoder.json").write_text("{encoder: resunet")
    return finetune_argv(inp, tmp / "ft", f"finetune.pretrained={enc}"), ["encoder.json", "not valid JSON"]


def k_finetune_unknown_group(tmp, inp):
    argv = ["finetune", str(inp.demo_cache), "--group", "nope", "--out", str(tmp / "ft")]
    return argv, ["group=nope"]


def k_finetune_patch_below_network_minimum(tmp, inp):
    return finetune_argv(inp, tmp / "ft", "finetune.patch_size=[4,4,4]"), ["finetune.patch_size", "multiples of"]


def k_finetune_foreground_index_truncated(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    fg = cache / "volumes" / "c1.fg.npz"
    fg.write_bytes(fg.read_bytes()[:40])
    argv = ["finetune", str(cache), "--out", str(tmp / "ft"), "finetune.steps=1"]
    return argv, ["c1.fg.npz", "damaged foreground index", "gtgm data preprocess"]


def k_finetune_foreground_index_of_objects(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    np.savez(cache / "volumes" / "c1.fg.npz", class_1=np.array([{"a": 1}, None], dtype=object))
    argv = ["finetune", str(cache), "--out", str(tmp / "ft"), "finetune.steps=1"]
    return argv, ["c1.fg.npz", "damaged foreground index"]


# --------------------------------------------------------------------------------------------------- predict
def k_predict_best_without_preprocess(tmp, inp):
    ckpt = torch.load(inp.best, weights_only=True)
    ckpt.pop("preprocess")
    torch.save(ckpt, tmp / "best.pt")
    img = inp.copy(inp.raw / "imagesTr" / "c0.nii.gz", tmp / "in" / "c0.nii.gz")
    return ["predict", str(tmp / "best.pt"), str(img), "--out", str(tmp / "pred")], ["best.pt", "preprocess"]


def k_predict_em_best_without_em_settings(tmp, inp):
    ckpt = torch.load(inp.best, weights_only=True)
    ckpt["task"] = "em"
    torch.save(ckpt, tmp / "best.pt")
    img = inp.copy(inp.raw / "imagesTr" / "c0.nii.gz", tmp / "in" / "c0.nii.gz")
    return ["predict", str(tmp / "best.pt"), str(img), "--out", str(tmp / "pred")], ["best.pt", "EM settings lack"]


def k_bundle_architecture_not_the_weights(tmp, inp):
    ckpt = torch.load(inp.best, weights_only=True)
    ckpt["model_config"]["channels"] = [c * 2 for c in ckpt["model_config"]["channels"]]
    torch.save(ckpt, tmp / "best.pt")
    return ["export", "bundle", str(tmp / "best.pt"), "--out", str(tmp / "b")], ["best.pt", "do not fit"]


def _predict_input(tmp, inp, img) -> list[str]:
    nib.save(img, str(tmp / "in.nii.gz"))
    return ["predict", str(inp.best), str(tmp / "in.nii.gz"), "--out", str(tmp / "pred")]


def k_predict_zero_voxel_size(tmp, inp):
    img = nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), None)
    img.header.set_zooms((0.0, 1.0, 1.0))  # no qform / sform: the voxel size is pixdim's
    return _predict_input(tmp, inp, img), ["in.nii.gz", "pixdim", "zero or negative"]


def k_predict_micrometre_voxels(tmp, inp):
    img = nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), np.diag([0.001, 0.001, 0.001, 1.0]))
    return _predict_input(tmp, inp, img), ["in.nii.gz", "voxels of 0.001 x 0.001 x 0.001 mm", "100x off"]


def k_predict_complex_voxels(tmp, inp):
    img = nib.Nifti1Image(np.zeros((16, 16, 16), np.complex64), np.eye(4))
    return _predict_input(tmp, inp, img), ["in.nii.gz", "complex"]


def k_predict_best_garbage(tmp, inp):
    (tmp / "best.pt").write_bytes(b"not a checkpoint")
    img = inp.raw / "imagesTr" / "c0.nii.gz"
    return ["predict", str(tmp / "best.pt"), str(img), "--out", str(tmp / "pred")], ["best.pt"]


def k_predict_missing_input(tmp, inp):
    return ["predict", str(inp.best), str(tmp / "no.nii.gz"), "--out", str(tmp / "pred")], ["no.nii.gz"]


def k_predict_out_is_a_file(tmp, inp):
    (tmp / "pred").write_text("a file")
    img = inp.raw / "imagesTr" / "c0.nii.gz"
    return ["predict", str(inp.best), str(img), "--out", str(tmp / "pred")], [str(tmp / "pred"), "not a folder"]


def k_predict_unsupported_input(tmp, inp):
    (tmp / "notes.txt").write_text("hello")
    return ["predict", str(inp.best), str(tmp / "notes.txt"), "--out", str(tmp / "pred")], ["notes.txt"]


# -------------------------------------------------------------------------------------------------- evaluate
def _pred_and_ref(tmp: Path, ref_shape=(8, 8, 8), ref_name="a.nii.gz") -> tuple[Path, Path]:
    save_nifti(tmp / "pred" / "a.nii.gz", np.ones((8, 8, 8), np.uint8))
    save_nifti(tmp / "ref" / ref_name, np.ones(ref_shape, np.uint8))
    return tmp / "pred", tmp / "ref"


def k_evaluate_missing_predictions(tmp, inp):
    (tmp / "ref").mkdir()
    return ["evaluate", str(tmp / "none"), str(tmp / "ref"), "--out", str(tmp / "m")], [str(tmp / "none")]


def k_evaluate_shape_mismatch(tmp, inp):
    pred, ref = _pred_and_ref(tmp, ref_shape=(8, 8, 9))
    return ["evaluate", str(pred), str(ref), "--out", str(tmp / "m")], ["a.nii.gz", "shape"]


def k_evaluate_no_matching_names(tmp, inp):
    pred, ref = _pred_and_ref(tmp, ref_name="b.nii.gz")
    return ["evaluate", str(pred), str(ref), "--out", str(tmp / "m")], ["a.nii.gz"]


def k_evaluate_out_is_a_file(tmp, inp):
    pred, ref = _pred_and_ref(tmp)
    (tmp / "m").write_text("a file")
    return ["evaluate", str(pred), str(ref), "--out", str(tmp / "m")], [str(tmp / "m"), "not a folder"]


# ------------------------------------------------------------- files an earlier stage wrote (see test_schemas)
def _rewrite(path: Path, change) -> Path:
    doc = json.loads(path.read_text())
    change(doc)
    write_json(path, doc)
    return path


def k_cache_index_case_without_files(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    _rewrite(cache / "index.json", lambda d: d["cases"][0].pop("files"))
    return ["caption", str(cache), "--out", str(tmp / "c.jsonl")], ["index.json", "field 'cases[0]'", "'files'"]


def k_case_meta_normalization_not_a_list(tmp, inp):
    cache = inp.copy(inp.cache, tmp / "cache")
    _rewrite(cache / "volumes" / "c0.json", lambda d: d.update(normalization="z-score"))
    return ["caption", str(cache), "--out", str(tmp / "c.jsonl")], ["c0.json", "field 'normalization'"]


def k_text_index_dim_not_a_number(tmp, inp):
    text = inp.copy(inp.text, tmp / "text")
    _rewrite(text / "index.json", lambda d: d.update(dim="384"))
    return pretrain_argv(inp, tmp / "pre", text=text), ["index.json", "field 'dim'"]


def k_finetune_resume_split_box_not_numbers(tmp, inp):
    run = inp.copy(inp.best.parent, tmp / "ft")
    _rewrite(run / "split.json", lambda d: d["train"][0].update(lo="0,0,0"))
    return [*finetune_argv(inp, run), "--resume"], ["split.json", "field 'train[0].lo'"]


def k_bundle_metrics_of_another_metric(tmp, inp):
    best = inp.copy(inp.best, tmp / "run" / "best.pt")
    write_json(
        tmp / "run" / "test_metrics.json",
        {"test": {"metric": "accuracy", "summary": {}}, "train_cases": [], "labelled_slices": []},
    )
    return ["export", "bundle", str(best), "--out", str(tmp / "b")], ["test_metrics.json", "field 'test.metric'"]


def _bundle_run_config(tmp, inp, text: str):
    best = inp.copy(inp.best, tmp / "run" / "best.pt")
    (tmp / "run" / "config.yaml").write_text(text)
    return ["export", "bundle", str(best), "--out", str(tmp / "b")]


def k_bundle_config_not_yaml(tmp, inp):
    return _bundle_run_config(tmp, inp, "finetune: [unclosed\n"), ["config.yaml", "not valid YAML"]


def k_bundle_config_a_list(tmp, inp):
    return _bundle_run_config(tmp, inp, "- finetune\n- steps\n"), ["config.yaml", "holds a list"]


def k_bundle_config_finetune_a_string(tmp, inp):
    return _bundle_run_config(tmp, inp, "finetune: fast\n"), ["config.yaml", "'finetune' section is a str"]


def _bundle_field(tmp, inp, key, value):
    ckpt = torch.load(inp.best, weights_only=True)
    ckpt[key] = value
    torch.save(ckpt, tmp / "best.pt")
    return ["export", "bundle", str(tmp / "best.pt"), "--out", str(tmp / "b")]


def k_bundle_patch_size_a_string(tmp, inp):
    return _bundle_field(tmp, inp, "patch_size", "32,32,32"), ["best.pt", "patch_size '32,32,32'"]


def k_bundle_em_modality(tmp, inp):
    return _bundle_field(tmp, inp, "modality", "EM"), ["best.pt", "modality 'EM'", "CT and MRI"]


def k_dataset_entry_spacing_not_numbers(tmp, inp):
    ds = _dataset(tmp, {"modality": {"0": "MRI"}, "training": [{"image": "img.nii.gz", "spacing": "1 mm"}]})
    return ["data", "check", str(ds)], ["dataset.json", "field 'training[0].spacing'"]


# --------------------------------------------------------------------------------------------- study, probe
def k_study_unknown_arm(tmp, inp):
    return ["study", str(inp.demo_cache), "--out", str(tmp / "st"), "study.arms=[scratch, magic]"], ["magic"]


def k_study_pretrained_arm_without_file(tmp, inp):
    argv = ["study", str(inp.demo_cache), "--out", str(tmp / "st"), "study.arms=[pretrained]"]
    return argv, ["--pretrained"]


def k_probe_missing_encoder(tmp, inp):
    argv = ["probe", str(inp.demo_cache), "--encoder", str(tmp / "e.pt"), "--group", "ct_phantom"]
    return [*argv, "--out", str(tmp / "p")], ["e.pt", "not found"]


def k_probe_unknown_group(tmp, inp):
    argv = ["probe", str(inp.demo_cache), "--encoder", "random", "--group", "nope", "--out", str(tmp / "p")]
    return argv, ["group=nope"]


# ------------------------------------------------------------------------------------------ query, environment
def k_query_unknown_device(tmp, inp):
    volume = str(inp.raw / "imagesTr" / "c0.nii.gz")
    argv = ["query", str(inp.demo / "pretrain"), "bone", volume, "--out", str(tmp / "q"), "--device", "bogus"]
    return argv, ["device 'bogus'", "cuda:N"]


KINDS = {name[2:]: fn for name, fn in sorted(globals().items()) if name.startswith("k_")}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bad_input_is_one_clear_error_and_writes_nothing(kind, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    argv, needles = KINDS[kind](work, inputs)
    capsys.readouterr()
    before = tree(tmp_path), tree(inputs.raw.parent)
    fails_cleanly(capsys, argv, *needles)
    assert (tree(tmp_path), tree(inputs.raw.parent)) == before


@pytest.mark.parametrize("value", ["abc", "nan", "inf", "0", "-1"])
def test_a_nonsense_memory_budget_names_the_variable(value, inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GTGM_MEMORY_GB", value)
    before = tree(inputs.raw.parent)
    fails_cleanly(capsys, ["data", "preprocess", str(inputs.raw), "--out", str(tmp_path / "c")], "GTGM_MEMORY_GB")
    assert tree(inputs.raw.parent) == before and not (tmp_path / "c").exists()
