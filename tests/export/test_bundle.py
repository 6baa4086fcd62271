"""``gtgm export bundle``: MONAI's own tools read the bundle, and its inference equals ``gtgm predict``."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata

from gtgm.cli import main
from gtgm.data.phantom_ct import make_ct_phantom
from tests.conftest import save_nifti

# The MONAI bundle specification's mandatory metadata (docs.monai.io, "MONAI Bundle Specification"), as a JSON
# schema: verify_metadata downloads the official schema named in metadata.json, which this machine cannot reach.
IO_ITEM = {
    "type": "object",
    "required": [
        "type",
        "format",
        "num_channels",
        "spatial_shape",
        "dtype",
        "value_range",
        "is_patch_data",
        "channel_def",
    ],
    "properties": {
        "num_channels": {"type": "integer", "minimum": 1},
        "spatial_shape": {"type": "array"},
        "value_range": {"type": "array"},
        "is_patch_data": {"type": "boolean"},
        "channel_def": {"type": "object"},
    },
}
SPEC_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": [
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ],
    "properties": {
        "version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+$"},
        "changelog": {"type": "object"},
        "network_data_format": {
            "type": "object",
            "required": ["inputs", "outputs"],
            "properties": {
                "inputs": {"type": "object", "additionalProperties": IO_ITEM},
                "outputs": {"type": "object", "additionalProperties": IO_ITEM},
            },
        },
    },
}


@pytest.fixture(scope="module")
def bundle(demo_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("bundle")
    best = next(p for p in sorted((demo_run / "study").rglob("best.pt")) if "ct_phantom" in str(p))
    assert main(["export", "bundle", str(best), "--out", str(root / "bundle")]) == 0
    return best, root


def test_metadata_passes_monai_verify_and_names_the_classes(bundle, tmp_path):
    best, root = bundle
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SPEC_SCHEMA))
    meta_file = root / "bundle" / "configs" / "metadata.json"
    verify_metadata(meta_file=str(meta_file), filepath=str(schema))  # raises on a violation
    meta = json.loads(meta_file.read_text())
    ckpt = torch.load(best, weights_only=True)
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == ckpt["labels"]
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == ckpt["patch_size"]
    for name in ("LICENSE", "docs/README.md", "models/model.pt"):
        assert (root / "bundle" / name).is_file()
    bad = dict(meta)
    del bad["network_data_format"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(Exception, match="network_data_format"):  # the check can fail
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(schema))


def test_config_builds_the_network_and_loads_plain_weights(bundle):
    best, root = bundle
    parser = ConfigParser()
    parser.read_config(str(root / "bundle" / "configs" / "inference.json"))
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(root / "bundle" / "models" / "model.pt", weights_only=True))  # strict
    ckpt = torch.load(best, weights_only=True)
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in net.state_dict().items())


@pytest.mark.slow
def test_bundle_inference_equals_gtgm_predict(bundle, tmp_path):
    best, root = bundle
    spacing = torch.load(best, weights_only=True)["preprocess"]["target_spacing"]
    data = tmp_path / "data"
    hu, _, affine = make_ct_phantom(901, (48, 48, 24), (8.0, 12.0))  # resampled to the model's grid and back
    save_nifti(data / "resampled.nii.gz", hu, affine)
    hu, _, affine = make_ct_phantom(902, (40, 40, 30), (spacing[0], spacing[2]))  # only reoriented (LPS)
    save_nifti(data / "same_grid.nii.gz", hu, affine)
    assert main(["predict", str(best), str(data), "--out", str(tmp_path / "gtgm")]) == 0
    workflow = ConfigWorkflow(
        config_file=str(root / "bundle" / "configs" / "inference.json"),
        meta_file=str(root / "bundle" / "configs" / "metadata.json"),
        workflow_type="inference",
        bundle_root=str(root / "bundle"),
        dataset_dir=str(data),
        output_dir=str(tmp_path / "bundle_out"),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    for name in ("resampled", "same_grid"):
        ours = nib.load(tmp_path / "gtgm" / f"{name}.nii.gz")
        theirs = nib.load(tmp_path / "bundle_out" / f"{name}.nii.gz")
        # the bundle runs the network with MONAI's default weight layout, gtgm predict channels-last on the CPU
        # (gtgm.runtime.to_device): equal logits up to float rounding, so a rare argmax tie may flip
        differ = np.asarray(ours.dataobj) != np.asarray(theirs.dataobj)
        assert ours.shape == theirs.shape and differ.mean() <= 1e-3, f"{name}: {int(differ.sum())} voxels differ"
        np.testing.assert_allclose(ours.affine, theirs.affine)
        assert len(np.unique(np.asarray(ours.dataobj))) > 2  # a real segmentation, not all background
