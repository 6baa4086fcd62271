"""``gtgm export nnunet``: a pretrained ``resenc`` encoder as weights nnU-Net v2 loads as they are.

Two files, one per route nnU-Net offers:

1. ``pretrained_weights.pth`` for the stable release's ``nnUNetv2_train ... -pretrained_weights FILE``:
   ``{"network_weights": state_dict}`` holding every tensor of the ResidualEncoderUNet that nnU-Net builds
   from the plans (``nnunetv2.run.load_pretrained_weights`` requires all keys except ``.seg_layers.``): the
   stem and encoder stages are the pretrained ones (also under ``decoder.encoder.``, where the decoder keeps
   a reference to the encoder), the decoder is freshly initialised as nnU-Net initialises it. No
   ``module.`` / ``_orig_mod.`` prefixes. Convolution kernels are permuted from gtgm's (x, y, z) axis order to
   nnU-Net's (SimpleITK's (z, y, x), then the plans' ``transpose_forward``), so each kernel axis keeps seeing
   the anatomical axis it was trained on, and mirrored along the axes where the dataset's files run against
   RAS (gtgm reorients to RAS, nnU-Net keeps the files' orientation; e.g. the first two axes of LPS files), so
   that nnU-Net's network computes on the file's grid what gtgm's encoder computes on the RAS grid.
2. ``nnssl_checkpoint.pth`` in the format of MIC-DKFZ/nnssl (for ``nnUNetv2_train_pretrained`` of the nnU-Net
   versions that have it): the same ``network_weights`` plus ``nnssl_adaptation_plan`` (architecture plans,
   the pretraining plan with its spacing and patch size, input channels, ``key_to_encoder``, ``key_to_stem``,
   ``keys_to_in_proj``); also written alone as ``adaptation_plan.json``.

The plans' architecture must be the encoder's (class, stages, features, kernel sizes, strides, blocks, conv /
norm / nonlinearity, input channels when ``dataset.json`` sits beside the plans); otherwise every mismatch is
named and nothing is written.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import check_schema, read_json, write_json, write_text
from gtgm.models.checkpoint import load_state_dict, save_checkpoint
from gtgm.models.resenc import ARCH_CLASS, REQUIRES_IMPORT, build_resenc_unet
from gtgm.schemas import ENCODER_JSON, NNUNET_PLANS, RESENC_ENCODER_JSON

KEY_TO_ENCODER, KEY_TO_STEM = "encoder.stages", "encoder.stem"
KEYS_TO_IN_PROJ = ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"]
# arch_kwargs that decide the encoder's tensors (the decoder's are re-initialised, dropout holds none)
ENCODER_KEYS = (
    "n_stages",
    "features_per_stage",
    "conv_op",
    "kernel_sizes",
    "strides",
    "n_blocks_per_stage",
    "conv_bias",
    "norm_op",
    "norm_op_kwargs",
    "nonlin",
)


def plans_configuration(plans: dict[str, Any], name: str, where: Path) -> dict[str, Any]:
    """``plans["configurations"][name]`` with ``inherits_from`` resolved (as nnU-Net's PlansManager does)."""
    configs = plans.get("configurations")
    if not isinstance(configs, dict) or name not in configs:
        known = ", ".join(configs) if isinstance(configs, dict) else "none"
        raise GtgmError(f"{where}: no configuration '{name}' in the plans (has: {known})")
    conf = copy.deepcopy(configs[name])
    seen = {name}
    while "inherits_from" in conf:
        parent = conf.pop("inherits_from")
        if parent in seen or parent not in configs:
            raise GtgmError(f"{where}: configuration '{name}' inherits from missing or looping '{parent}'")
        seen.add(parent)
        conf = {**copy.deepcopy(configs[parent]), **conf}
    if "architecture" not in conf:
        raise GtgmError(
            f"{where}: configuration '{name}' has no 'architecture' entry (plans of nnU-Net < 2.4?); "
            "plan again with nnU-Net >= 2.4"
        )
    return conf


def nnunet_axes(plans: dict[str, Any], orientation: np.ndarray | None = None) -> list[int]:
    """For each axis of nnU-Net's arrays, the gtgm axis (0 = x, 1 = y, 2 = z) it holds.

    nnU-Net reads NIfTI with SimpleITK, whose arrays are (z, y, x) of the file's voxel axes (its nibabel readers
    transpose to the same order; NibabelIOWithReorient first reorients to RAS), then applies the plans'
    ``transpose_forward``.
    gtgm's arrays are RAS: ``orientation`` (nibabel's ``io_orientation`` of the dataset's files, 3 × 2: per
    file axis, its RAS axis and sign; ``None`` = RAS files) maps file axes to gtgm's."""
    file_axes = _file_axes(plans)
    if orientation is None or "Reorient" in str(plans.get("image_reader_writer", "")):
        return file_axes
    return [int(orientation[f][0]) for f in file_axes]


def nnunet_flips(plans: dict[str, Any], orientation: np.ndarray | None = None) -> list[bool]:
    """For each axis of nnU-Net's arrays, whether it runs against gtgm's RAS direction (a file axis pointing
    L, P or I, e.g. the first two axes of an LPS file): kernels must be mirrored along it (:func:`to_nnunet_order`)
    for nnU-Net's network to compute on the file's grid what gtgm's encoder computes on the RAS grid."""
    if orientation is None or "Reorient" in str(plans.get("image_reader_writer", "")):
        return [False, False, False]
    return [bool(orientation[f][1] < 0) for f in _file_axes(plans)]


def _file_axes(plans: dict[str, Any]) -> list[int]:
    """For each axis of nnU-Net's arrays, the file's voxel axis (0 = i, 1 = j, 2 = k) it holds: every 3D reader of
    nnU-Net v2 gives (k, j, i) arrays (SimpleITK's order; the nibabel readers transpose to it), then the plans'
    ``transpose_forward`` applies."""
    return [2 - int(t) for t in plans.get("transpose_forward", [0, 1, 2])]


def dataset_orientation(plans_path: Path, reference: Path | None = None) -> tuple[np.ndarray | None, str]:
    """The voxel-axis orientation (nibabel ``io_orientation``, 3 × 2) of the images nnU-Net will read, and
    where it was read: ``reference`` (an image of the dataset), else the plans' ``gt_segmentations/`` (written
    by ``nnUNetv2_preprocess``), else the raw dataset's ``labelsTr/`` (``nnUNet_raw`` beside
    ``nnUNet_preprocessed``, or the ``nnUNet_raw`` environment variable). ``(None, why)`` when none is found.
    Files of several orientations: the most common one, and the reason says so."""
    import os

    import nibabel as nib

    if reference is not None:
        if not reference.is_file():
            raise GtgmError(f"{reference}: reference image not found")
        check_reference(reference)
        files = [reference]
    else:
        name = plans_path.parent.name
        folders = [plans_path.parent / "gt_segmentations", plans_path.parent.parent.parent / "nnUNet_raw" / name]
        folders += [Path(os.environ["nnUNet_raw"]) / name] if os.environ.get("nnUNet_raw") else []
        found = [
            sorted(p for p in (f if f.name == "gt_segmentations" else f / "labelsTr").glob("*") if p.is_file())
            for f in folders
        ]
        files = next((f for f in found if f), [])
        if files and not any(p.name.endswith((".nii", ".nii.gz")) for p in files):
            raise GtgmError(
                f"{files[0].parent}: the orientation is read from NIfTI headers, and these are "
                f"'{''.join(files[0].suffixes)}' files; give --reference with a NIfTI image of the same orientation"
            )
        files = [p for p in files if p.name.endswith((".nii", ".nii.gz"))]
    if not files:
        return None, "no image of the dataset found (give --reference); kernels are not mirrored (RAS files assumed)"
    try:
        codes = [tuple(map(tuple, nib.orientations.io_orientation(nib.load(f).affine))) for f in files]
    except Exception as exc:  # nibabel raises many kinds for a file it cannot read
        raise GtgmError(f"{files[0].parent}: cannot read an image header ({exc})") from None
    common = max(set(codes), key=codes.count)
    where = f"{files[0] if len(files) == 1 else files[0].parent} ({nib.orientations.ornt2axcodes(common)})"
    if len(set(codes)) > 1:
        where += f"; {len(codes) - codes.count(common)} of {len(codes)} files have another orientation"
    return np.asarray(common, dtype=float), where


def check_reference(reference: Path) -> None:
    """A reference must be one 3D image of the dataset (nnU-Net's images are 3D, one file per channel), at least 2
    voxels along every axis: a 2D, one-slice or 4D file says nothing reliable about the dataset's voxel axes."""
    import nibabel as nib

    try:
        shape = tuple(nib.load(reference).shape)
    except Exception as exc:  # nibabel raises many kinds for a file it cannot read
        raise InputError(reference, f"cannot read the reference image's header ({exc})") from None
    core = shape[:3] if len(shape) >= 3 and all(s == 1 for s in shape[3:]) else shape
    if len(core) != 3 or min(core) < 2:
        raise InputError(
            reference, f"shape {shape}: a reference must be a 3D image of the dataset with 2 or more voxels per axis"
        )


def to_gtgm_axes(per_axis: list[list[int]], axes: list[int]) -> list[list[int]]:
    """Per-stage (a0, a1, a2) lists in nnU-Net's axis order -> gtgm's (x, y, z) order."""
    out = []
    for v in per_axis:
        xyz = [0, 0, 0]
        for i, a in enumerate(axes):
            xyz[a] = int(v[i])
        out.append(xyz)
    return out


def _norm(value: Any) -> Any:
    """Lists / tuples compared as lists; class paths compared by their last name (nnU-Net writes both
    ``torch.nn.LeakyReLU`` and ``torch.nn.modules.activation.LeakyReLU``)."""
    if isinstance(value, (list, tuple)):
        return [_norm(v) for v in value]
    if isinstance(value, str) and value.startswith("torch."):
        return value.rsplit(".", 1)[-1]
    return value


def architecture_mismatches(
    encoder: dict[str, Any], plans_arch: dict[str, Any], axes: list[int], in_channels: int | None
) -> list[str]:
    """Human-readable differences between the encoder's ``arch_kwargs`` (and input channels) and the plans'.

    Kernel sizes and strides are compared in gtgm's (x, y, z) order (``axes``: :func:`nnunet_axes`)."""
    out = []
    cls = str(plans_arch.get("network_class_name", ""))
    if cls.rsplit(".", 1)[-1] != ARCH_CLASS.rsplit(".", 1)[-1]:
        out.append(f"network class: plans {cls or 'missing'}, encoder {ARCH_CLASS}")
    kwargs = dict(plans_arch.get("arch_kwargs") or {})
    for key in ("kernel_sizes", "strides"):
        if isinstance(kwargs.get(key), (list, tuple)) and all(len(v) == 3 for v in kwargs[key]):
            kwargs[key] = to_gtgm_axes(kwargs[key], axes)
    for key in ENCODER_KEYS:
        if _norm(kwargs.get(key)) != _norm(encoder["arch_kwargs"].get(key)):
            out.append(f"{key}: plans {kwargs.get(key)}, encoder {encoder['arch_kwargs'].get(key)}")
    if in_channels is not None and in_channels != encoder["in_channels"]:
        out.append(f"input channels: dataset.json {in_channels}, encoder {encoder['in_channels']}")
    return out


def _encoder_meta(encoder_pt: Path) -> dict[str, Any]:
    meta_path = encoder_pt.with_suffix(".json")
    if not meta_path.is_file():
        raise GtgmError(f"{encoder_pt}: no {meta_path.name} beside it (write both with gtgm pretrain)")
    meta = read_json(meta_path, schema=ENCODER_JSON)
    if meta.get("encoder") != "resenc":
        raise GtgmError(
            f"{encoder_pt}: pretrained as '{meta.get('encoder')}', but nnU-Net needs a 'resenc' encoder "
            "(pretrain with model.encoder=resenc, e.g. --config pretrain/cpu-resenc)"
        )
    check_schema(meta, RESENC_ENCODER_JSON, meta_path)
    return meta


def _plans_channels(plans_path: Path) -> int | None:
    dataset_json = plans_path.parent / "dataset.json"
    if not dataset_json.is_file():
        return None
    meta = read_json(dataset_json)
    names = meta.get("channel_names") or meta.get("modality")
    return len(names) if isinstance(names, dict) else None


def to_nnunet_order(tensor: torch.Tensor, axes: list[int], flips: list[bool] | None = None) -> torch.Tensor:
    """A 3D convolution kernel (out, in, kx, ky, kz) -> (out, in, k_a0, k_a1, k_a2) in nnU-Net's axis order,
    mirrored along the axes in ``flips`` (cross-correlation with a mirrored kernel on a mirrored grid gives the
    mirrored features); other tensors unchanged."""
    if tensor.ndim != 5:
        return tensor
    out = tensor.permute(0, 1, *(2 + a for a in axes))
    mirrored = [2 + n for n, f in enumerate(flips or []) if f]
    return (out.flip(mirrored) if mirrored else out).contiguous()


def network_weights(
    encoder_pt: Path,
    arch: dict[str, Any],
    axes: list[int],
    in_channels: int,
    classes: int = 2,
    flips: list[bool] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The state dict of nnU-Net's network for ``arch`` with the pretrained stem and stages put in (kernels
    permuted to nnU-Net's axis order and mirrored along ``flips``, :func:`to_nnunet_order`). The decoder, which
    nnU-Net's ``load_pretrained_weights`` loads too (all but the segmentation layers), is initialised from
    ``seed``: the same encoder gives the same file, and the caller's random state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_resenc_unet(arch["arch_kwargs"], in_channels, classes, deep_supervision=True)
    pretrained = load_state_dict(encoder_pt)
    encoder_state = {}
    for key, own in net.state_dict().items():
        if key.startswith("encoder."):
            value = to_nnunet_order(pretrained[key], axes, flips) if key in pretrained else None
            if value is None or value.shape != own.shape:
                raise GtgmError(f"{encoder_pt}: has no tensor {key} of the plans' shape {tuple(own.shape)}")
            encoder_state[key] = value.float()
    net.load_state_dict(encoder_state, strict=False)  # decoder.encoder.* is the same module: it follows
    # tensors that share storage (encoder.* and decoder.encoder.*, conv and all_modules.0) are saved once
    return {k: v.detach() for k, v in net.state_dict().items()}


def export_nnunet(
    encoder_pt: str | Path,
    plans_path: str | Path,
    configuration: str,
    out: str | Path,
    reference: str | Path | None = None,
) -> dict[str, Path]:
    """Write both routes' files under ``out``; returns their paths. Refuses a plans architecture that is not
    the encoder's (each mismatch named) before writing anything. The kernels follow the orientation of the
    dataset's files (:func:`dataset_orientation`; ``reference``: one of its images)."""
    encoder_pt, plans_path, out = Path(encoder_pt), Path(plans_path), Path(out)
    for path in (encoder_pt, plans_path):
        if not path.is_file():
            raise GtgmError(f"{path}: file not found")
    meta = _encoder_meta(encoder_pt)
    plans = read_json(plans_path, schema=NNUNET_PLANS)
    conf = plans_configuration(plans, configuration, plans_path)
    orientation, where = dataset_orientation(plans_path, Path(reference) if reference else None)
    axes, flips = nnunet_axes(plans, orientation), nnunet_flips(plans, orientation)
    print(f"[export] orientation of the dataset's files: {where}; kernels mirrored along nnU-Net axes {flips}")
    wrong = architecture_mismatches(meta, conf["architecture"], axes, _plans_channels(plans_path))
    if wrong:
        raise GtgmError(f"{plans_path} ({configuration}) does not match {encoder_pt}: " + "; ".join(wrong))
    state = network_weights(encoder_pt, conf["architecture"], axes, int(meta["in_channels"]), flips=flips)
    plan = adaptation_plan(plans, configuration, conf, meta)
    written = {
        "pretrained_weights": out / "pretrained_weights.pth",
        "nnssl_checkpoint": out / "nnssl_checkpoint.pth",
        "adaptation_plan": out / "adaptation_plan.json",
        "readme": out / "README.md",
    }
    provenance = {
        "encoder": str(encoder_pt),
        "plans": str(plans_path),
        "configuration": configuration,
        "orientation": where,
        "nnunet_axes": axes,
        "mirrored_axes": flips,
    }
    save_checkpoint(written["pretrained_weights"], {"network_weights": state, "gtgm": provenance})
    nnssl = {"network_weights": state, "nnssl_adaptation_plan": plan, "trainer_name": "gtgm", "gtgm": provenance}
    save_checkpoint(written["nnssl_checkpoint"], nnssl)
    write_json(written["adaptation_plan"], plan)
    write_text(written["readme"], _readme(plans, configuration, written))
    return written


def adaptation_plan(
    plans: dict[str, Any], configuration: str, conf: dict[str, Any], meta: dict[str, Any]
) -> dict[str, Any]:
    """nnssl's ``AdaptationPlan``, serialised: the downstream plans with the pretraining patch size and spacing."""
    pretrain_plan = copy.deepcopy(plans)
    pre_conf = copy.deepcopy(conf)
    pre_conf["patch_size"] = list(meta.get("patch_size") or conf.get("patch_size"))
    if meta.get("spacing"):
        pre_conf["spacing"] = list(meta["spacing"])
    pretrain_plan["configurations"] = {configuration: pre_conf}
    arch = conf["architecture"]
    return {
        "architecture_plans": {
            "arch_class_name": arch["network_class_name"],
            "arch_kwargs": arch["arch_kwargs"],
            "arch_kwargs_requiring_import": list(arch.get("_kw_requires_import", REQUIRES_IMPORT)),
        },
        "pretrain_plan": pretrain_plan,
        "recommended_downstream_patchsize": list(conf.get("patch_size", pre_conf["patch_size"])),
        "pretrain_num_input_channels": int(meta["in_channels"]),
        "key_to_encoder": KEY_TO_ENCODER,
        "key_to_stem": KEY_TO_STEM,
        "keys_to_in_proj": KEYS_TO_IN_PROJ,
        "key_to_lpe": None,
    }


def _readme(plans: dict[str, Any], configuration: str, written: dict[str, Path]) -> str:
    dataset = plans.get("dataset_name", "DatasetXXX_Name")
    name = plans.get("plans_name", "nnUNetResEncUNetMPlans")
    return (
        f"# gtgm encoder for nnU-Net ({dataset}, {name}, {configuration})\n\n"
        "Stable nnU-Net v2 (stem and encoder pretrained, decoder initialised by nnU-Net's scheme):\n\n"
        f"    nnUNetv2_train {dataset} {configuration} 0 -p {name} "
        f"-pretrained_weights {written['pretrained_weights'].resolve()}\n\n"
        "nnU-Net versions with nnssl fine-tuning (`nnUNetv2_train_pretrained`): use "
        f"`{written['nnssl_checkpoint'].name}` (it carries its `nnssl_adaptation_plan`).\n"
    )


def check_stage_lists(kwargs: dict[str, Any], plans_path: Path, configuration: str) -> None:
    """The plans' per-stage lists must agree with ``features_per_stage`` (S stages): S kernel sizes, S strides and
    S block counts of 3 / 3 / 1 positive integers, and S - 1 decoder conv counts."""
    stages = kwargs.get("features_per_stage")
    if not isinstance(stages, list) or not stages:
        return  # not a ResidualEncoderUNet's arch_kwargs: resenc_overrides names it
    want = {"kernel_sizes": len(stages), "strides": len(stages), "n_blocks_per_stage": len(stages)}
    want["n_conv_per_stage_decoder"] = len(stages) - 1
    for key, n in want.items():
        value = kwargs.get(key)
        if not isinstance(value, list) or len(value) != n:
            got = len(value) if isinstance(value, list) else repr(value)
            raise GtgmError(
                f"{plans_path}: configuration '{configuration}' has {len(stages)} stages (features_per_stage), "
                f"so arch_kwargs.{key} needs {n} entries, got {got}"
            )
    for key in ("kernel_sizes", "strides"):
        if any(
            not isinstance(v, list) or len(v) != 3 or any(type(x) is not int or x < 1 for x in v) for v in kwargs[key]
        ):
            raise GtgmError(f"{plans_path}: arch_kwargs.{key} must be 3 positive integers per stage, got {kwargs[key]}")


def resenc_overrides(
    plans_path: str | Path, configuration: str = "3d_fullres", reference: str | Path | None = None
) -> list[str]:
    """``key=value`` config overrides that make gtgm's ``resenc`` encoder the one these plans describe
    (kernel sizes and strides turned to gtgm's (x, y, z) order)."""
    plans_path = Path(plans_path)
    plans = read_json(plans_path, schema=NNUNET_PLANS)
    conf = plans_configuration(plans, configuration, plans_path)
    orientation = dataset_orientation(plans_path, Path(reference) if reference else None)[0]
    kwargs, axes = conf["architecture"].get("arch_kwargs") or {}, nnunet_axes(plans, orientation)

    def compact(value: Any) -> str:
        return str(value).replace(" ", "")

    check_stage_lists(kwargs, plans_path, configuration)
    try:
        return [
            "model.encoder=resenc",
            f"model.channels={compact(list(kwargs['features_per_stage']))}",
            f"model.kernel_sizes={compact(to_gtgm_axes(kwargs['kernel_sizes'], axes))}",
            f"model.strides={compact(to_gtgm_axes(kwargs['strides'], axes))}",
            f"model.blocks_per_stage={compact(list(kwargs['n_blocks_per_stage']))}",
            f"model.decoder_convs={compact(list(kwargs['n_conv_per_stage_decoder']))}",
        ]
    except (KeyError, TypeError, IndexError) as exc:
        what = f"configuration '{configuration}' is not a 3D ResidualEncoderUNet"
        raise GtgmError(f"{plans_path}: {what} ({exc})") from None
