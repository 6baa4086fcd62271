"""The nnU-Net export follows the dataset files' orientation: nnU-Net's network, loaded from the export and run on
a file as nnU-Net reads it (each of its 3D readers, then ``transpose_forward``), computes the features gtgm's
encoder computes on the same voxels reoriented to RAS — for an LPS file and an oblique, anisotropic one with
permuted axes.

Strides are put on the axes that are not mirrored: nnU-Net's residual blocks need lengths divisible by the stride,
and a stride-2 layer on a mirrored even-length axis samples the other half of the voxels, so there the features
agree only up to that half-voxel shift (inherent to strided networks, not to the export).
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from nnunetv2.imageio.nibabel_reader_writer import NibabelIO, NibabelIOWithReorient
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

from gtgm.data.geometry import to_ras
from gtgm.export.nnunet import export_nnunet, nnunet_axes, nnunet_flips, to_gtgm_axes
from gtgm.fsutil import write_json
from gtgm.models.resenc import ARCH_CLASS, REQUIRES_IMPORT, build_resenc_unet, resenc_arch_kwargs

TOLERANCE = 1e-4  # max |difference| of instance-normalised features (float32 sums in another order)


def _rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


CASES = {
    # file axes i -> L, j -> P, k -> S (the CT phantoms' and DICOM's LPS); strides on z only
    "lps": (np.diag([-1.0, -1.0, 1.0]), (1.0, 1.0, 1.0), [0, 1, 2], [[1, 1, 1], [1, 1, 2], [1, 1, 2]], (17, 15, 8)),
    # oblique (10 degrees), anisotropic, axes permuted: i -> P, j -> R, k -> S; strides on x and z (not mirrored)
    "oblique": (
        _rotation_z(10) @ np.array([[0.0, 1, 0], [-1, 0, 0], [0, 0, 1]]),
        (0.8, 1.0, 3.0),
        [2, 0, 1],
        [[1, 1, 1], [2, 1, 2], [2, 1, 1]],
        (16, 17, 10),
    ),
}


def _to_gtgm(feature: torch.Tensor, axes: list[int], flips: list[bool]) -> torch.Tensor:
    """nnU-Net's (B, C, a0, a1, a2) -> gtgm's (B, C, x, y, z): undo the mirroring, then the permutation."""
    mirrored = [2 + n for n, f in enumerate(flips) if f]
    feature = feature.flip(mirrored) if mirrored else feature
    return feature.permute(0, 1, *(2 + axes.index(g) for g in range(3)))


READERS = {"SimpleITKIO": SimpleITKIO, "NibabelIO": NibabelIO, "NibabelIOWithReorient": NibabelIOWithReorient}


@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_exported_network_computes_gtgms_features_on_the_files_grid(tmp_path, case, reader):
    directions, spacing, transpose, strides_xyz, shape = CASES[case]
    affine = np.eye(4)
    affine[:3, :3] = directions @ np.diag(spacing)
    affine[:3, 3] = [12.0, -30.0, 7.5]
    rng = np.random.default_rng(0)
    ras = rng.normal(size=shape).astype(np.float32)  # the RAS array gtgm sees (x, y, z)
    ornt = nib.orientations.io_orientation(affine)
    # the file array whose reorientation to RAS is `ras`
    to_file = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    data = nib.orientations.apply_orientation(ras, to_file).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "case_0000.nii.gz")
    assert np.array_equal(to_ras(data, affine)[0], ras)

    kwargs_xyz = resenc_arch_kwargs([4, 8, 8], kernel_sizes=[[3, 3, 1], [3, 3, 3], [1, 3, 3]], strides=strides_xyz)
    torch.manual_seed(0)
    gtgm_net = build_resenc_unet(kwargs_xyz, 1, 2).eval()
    torch.save({k: v for k, v in gtgm_net.state_dict().items() if k.startswith("encoder.")}, tmp_path / "encoder.pt")
    write_json(tmp_path / "encoder.json", {"encoder": "resenc", "in_channels": 1, "arch_kwargs": kwargs_xyz})

    plans = {"image_reader_writer": reader, "transpose_forward": transpose, "configurations": {}}
    axes, flips = nnunet_axes(plans, ornt), nnunet_flips(plans, ornt)
    inverse = [axes.index(g) for g in range(3)]  # per gtgm axis, the nnU-Net axis: to_gtgm_axes's inverse
    kwargs_nn = {
        **kwargs_xyz,
        **{k: [[v[a] for a in axes] for v in kwargs_xyz[k]] for k in ("kernel_sizes", "strides")},
    }
    assert to_gtgm_axes(kwargs_nn["kernel_sizes"], axes) == kwargs_xyz["kernel_sizes"] and len(inverse) == 3
    arch = {"network_class_name": ARCH_CLASS, "arch_kwargs": kwargs_nn, "_kw_requires_import": REQUIRES_IMPORT}
    plans["configurations"]["3d_fullres"] = {"architecture": arch, "patch_size": [16, 16, 16]}
    (tmp_path / "plans").mkdir()
    write_json(tmp_path / "plans" / "plans.json", plans)
    out = tmp_path / "export"
    export_nnunet(
        tmp_path / "encoder.pt", tmp_path / "plans" / "plans.json", "3d_fullres", out, tmp_path / "case_0000.nii.gz"
    )

    nn_net = get_network_from_plans(ARCH_CLASS, kwargs_nn, REQUIRES_IMPORT, 1, 2, deep_supervision=True).eval()
    load_pretrained_weights(nn_net, str(out / "pretrained_weights.pth"))  # nnU-Net's own loader
    image, _ = READERS[reader]().read_images([str(tmp_path / "case_0000.nii.gz")])  # (C, z, y, x) of the file
    image = image.transpose([0, *(t + 1 for t in transpose)])  # nnU-Net's transpose_forward
    with torch.no_grad():
        ours = gtgm_net.encoder(torch.from_numpy(ras)[None, None])
        theirs = nn_net.encoder(torch.from_numpy(np.ascontiguousarray(image))[None].float())
        no_mirror = build_resenc_unet(kwargs_nn, 1, 2).eval()  # the export without mirroring, as before the fix
        no_mirror.load_state_dict(_unmirrored(torch.load(out / "pretrained_weights.pth", weights_only=True), flips))
        before = no_mirror.encoder(torch.from_numpy(np.ascontiguousarray(image))[None].float())
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert (a - _to_gtgm(b, axes, flips)).abs().max() < TOLERANCE
    if any(flips):  # the test can fail: without the mirroring the features are not gtgm's
        assert max((a - _to_gtgm(b, axes, flips)).abs().max() for a, b in zip(ours, before)) > 0.1
    assert (
        json.loads(json.dumps(torch.load(out / "pretrained_weights.pth", weights_only=True)["gtgm"]["mirrored_axes"]))
        == flips
    )


def _unmirrored(checkpoint: dict, flips: list[bool]) -> dict:
    """The exported state with every kernel mirrored back (the export as it was without orientation)."""
    mirrored = [2 + n for n, f in enumerate(flips) if f]
    return {k: v.flip(mirrored) if v.ndim == 5 and mirrored else v for k, v in checkpoint["network_weights"].items()}
