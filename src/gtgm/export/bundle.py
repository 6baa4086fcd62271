"""``gtgm export bundle``: a fine-tuned segmenter (``best.pt``) as a MONAI bundle.

    BUNDLE/configs/metadata.json    MONAI's mandatory fields, labels, network_data_format (input / output)
    BUNDLE/configs/inference.json   network, gtgm preprocessing, sliding-window inference, restoration, writer
    BUNDLE/models/model.pt          the network's plain state dict
    BUNDLE/LICENSE, docs/README.md  licence; provenance (pretraining, fine-tuning, test figures)

``inference.json`` is a standard MONAI inference workflow (``ConfigWorkflow(..., workflow_type="inference")``:
dataset, ``SupervisedEvaluator``, ``SlidingWindowInferer`` with Gaussian blending, ``CheckpointLoader``); its
pre- and postprocessing are gtgm's own (``gtgm.export.bundle_transforms``), so the label maps it writes are
those of ``gtgm predict`` with the same checkpoint. The bundle needs gtgm installed (listed in the metadata).
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch

from gtgm import __version__
from gtgm.errors import GtgmError, InputError
from gtgm.fsutil import read_json, write_json, write_text
from gtgm.infer.sliding import SW_BATCH, SW_OVERLAP
from gtgm.models.checkpoint import load_checkpoint, save_checkpoint
from gtgm.schemas import TEST_METRICS

SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"


def export_bundle(checkpoint: str | Path, out: str | Path) -> dict[str, Path]:
    """Write the bundle of ``checkpoint`` (a segmentation ``best.pt``) to ``out``; returns the files."""
    checkpoint, out = Path(checkpoint), Path(out)
    keys = ("model", "model_config", "num_classes", "preprocess", "patch_size", "modality")
    ckpt = load_checkpoint(checkpoint, keys=keys)
    if ckpt.get("task", "segmentation") != "segmentation":
        raise GtgmError(f"{checkpoint}: trained for task '{ckpt['task']}'; bundles are written for segmentation models")
    _check_fields(checkpoint, ckpt)
    from gtgm.infer.predict import load_segmenter

    load_segmenter(checkpoint, torch.device("cpu"))  # the recorded network must take the weights, as predict needs
    meta = {k: ckpt[k] for k in ("preprocess", "modality", "patch_size")}
    meta["postprocess"] = ckpt.get("postprocess") or {}  # applied by GtgmRestored as gtgm predict applies it
    meta["body_crop"] = ckpt.get("body_crop")  # CT: the network sees the body's box; background outside the body
    labels = {str(k): str(v) for k, v in (ckpt.get("labels") or {}).items()} or {
        str(k): f"class {k}" for k in range(ckpt["num_classes"])
    }
    files = {
        "metadata": out / "configs" / "metadata.json",
        "inference": out / "configs" / "inference.json",
        "model": out / "models" / "model.pt",
        "license": out / "LICENSE",
        "readme": out / "docs" / "README.md",
    }
    readme = _readme(checkpoint, ckpt, labels)  # reads the run's config.yaml and test_metrics.json: before writing
    save_checkpoint(files["model"], {k: v.detach().cpu() for k, v in ckpt["model"].items()})
    write_json(files["inference"], inference_config(ckpt, meta))
    write_json(files["metadata"], metadata(ckpt, labels))
    write_text(files["license"], LICENSE)
    write_text(files["readme"], readme)
    return files


def _check_fields(checkpoint: Path, ckpt: dict[str, Any]) -> None:
    """The fields a bundle's inference config is written from: a patch of 3 positive integers and a CT or MRI
    modality (EM models segment neurons through affinities and agglomeration, which a bundle does not run)."""
    patch = ckpt["patch_size"]
    if not (isinstance(patch, (list, tuple)) and len(patch) == 3 and all(type(p) is int and p > 0 for p in patch)):
        raise InputError(checkpoint, f"patch_size {patch!r} is not 3 positive integers; the checkpoint is damaged")
    if ckpt["modality"] not in ("CT", "MRI"):
        raise InputError(
            checkpoint, f"modality {ckpt['modality']!r}: bundles are written for CT and MRI segmentation models"
        )


def network_def(ckpt: dict[str, Any]) -> dict[str, Any]:
    """``create_segmenter`` with the checkpoint's architecture, as a MONAI config component."""
    from gtgm.config import ModelConfig, from_dict
    from gtgm.models.registry import architecture_kwargs

    m = from_dict(ModelConfig, ckpt["model_config"])
    m.use_checkpoint = False
    return {
        "_target_": "gtgm.models.registry.create_segmenter",
        "name": m.encoder,
        "num_classes": int(ckpt["num_classes"]),
        "task": "segmentation",
        **architecture_kwargs(m),
    }


def inference_config(ckpt: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    transforms = "gtgm.export.bundle_transforms"
    return {
        "imports": ["$import glob", "$import os", "$import gtgm.export.bundle_transforms"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*'))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "gtgm": meta,
        "network_def": network_def(ckpt),
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": f"{transforms}.GtgmPreprocessd", "keys": "image", "meta": "@gtgm"}],
        },
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "num_workers": 0},
        "inferer": {
            "_target_": "SlidingWindowInferer",
            "roi_size": list(meta["patch_size"]),
            "sw_batch_size": SW_BATCH,
            "overlap": SW_OVERLAP,
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": f"{transforms}.GtgmRestored", "keys": "pred", "meta": "@gtgm", "output_dir": "@output_dir"}
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            }
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _normalisation(ckpt: dict[str, Any]) -> str:
    pre, modality = ckpt["preprocess"], ckpt["modality"]
    if modality == "CT":
        lo, hi = pre["ct_window"]
        return f"HU clipped to [{lo:g}, {hi:g}] and scaled to [0, 1]"
    if modality == "EM":
        return "scaled to [0, 1]"
    return f"z-score over the foreground after clipping to the {pre['mri_percentiles']} percentiles"


def metadata(ckpt: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """MONAI bundle metadata: the mandatory fields plus gtgm's preprocessing."""
    modality, patch = ckpt["modality"], list(ckpt["patch_size"])
    spacing = ckpt["preprocess"].get("target_spacing")
    channels = int(ckpt["model_config"].get("in_channels", 1))
    where = f"RAS, resampled to {spacing} mm" if spacing else "RAS, at the input's spacing"
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": f"exported by gtgm {__version__}"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {
            "gtgm": __version__,
            "nibabel": _version("nibabel"),
            "pytorch-ignite": _version("pytorch-ignite"),
        },
        "name": f"gtgm {modality} segmentation",
        "task": f"3D {modality} segmentation of {', '.join(v for k, v in labels.items() if k != '0')}",
        "description": "A segmenter fine-tuned by gtgm (generative text-guided 3D pretraining), see docs/README.md",
        "authors": "gtgm",
        "copyright": "the authors of the fine-tuned model",
        "data_source": "see docs/README.md",
        "data_type": "nibabel",
        "image_classes": f"{channels} channel(s) of {modality}, {where}; intensities {_normalisation(ckpt)}",
        "label_classes": ", ".join(f"{k}: {v}" for k, v in labels.items()),
        "pred_classes": f"{len(labels)} channels of logits, one per class; the label map is their argmax",
        "eval_metrics": _eval_metrics(ckpt),
        "intended_use": "research; not for clinical use",
        "references": ["GTGM: arXiv 2306.04811"],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield" if modality == "CT" else "magnitude",
                    "modality": "MR" if modality == "MRI" else modality,
                    "num_channels": channels,
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [0, 1] if modality in ("CT", "EM") else [],
                    "is_patch_data": True,
                    "channel_def": {str(i): modality for i in range(channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": len(labels),
                    "spatial_shape": patch,
                    "dtype": "float32",
                    "value_range": [],
                    "is_patch_data": True,
                    "channel_def": labels,
                }
            },
        },
        "gtgm": {"preprocess": ckpt["preprocess"], "modality": modality, "platform": platform.platform()},
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _readme(checkpoint: Path, ckpt: dict[str, Any], labels: dict[str, str]) -> str:
    run = checkpoint.parent
    lines = [
        f"# gtgm {ckpt['modality']} segmentation (MONAI bundle)",
        "",
        f"Exported by `gtgm export bundle` from `{checkpoint}` (gtgm {__version__}).",
        "",
        "## Inference",
        "",
        "    python -m monai.bundle run --config_file configs/inference.json --meta_file configs/metadata.json \\",
        "        --bundle_root . --dataset_dir DIR_WITH_NIFTI --output_dir OUT",
        "",
        "Each `*.nii` / `*.nii.gz` of DIR gets `OUT/<case>.nii.gz`: a label map with its input's shape and affine,",
        "the same as `gtgm predict` with the fine-tuned checkpoint (requires gtgm installed).",
        "",
        "## Model",
        "",
        f"- network: `{ckpt['model_config'].get('encoder')}` {ckpt['model_config'].get('channels')}",
        f"- classes: {', '.join(f'{k} {v}' for k, v in labels.items())}",
        f"- patch {ckpt['patch_size']}, preprocessing {ckpt['preprocess']}",
        f"- best validation mean Dice {ckpt.get('val_score')} at step {ckpt.get('step')}",
    ]
    config = run / "config.yaml"
    if config.is_file():
        ft = _finetune_section(config)
        lines += [
            f"- pretrained encoder: `{ft.get('pretrained') or 'none (from scratch)'}`",
            f"- fine-tuning: label ratio {ft.get('label_ratio')}, {ft.get('steps')} steps, lr {ft.get('lr')}",
        ]
    metrics = run / "test_metrics.json"
    if metrics.is_file():
        test = read_json(metrics, schema=TEST_METRICS)["test"]
        lines.append(f"- test mean Dice {test.get('mean_dice')} per class {test.get('dice')}")
    return "\n".join(lines) + "\n"


def _finetune_section(config: Path) -> dict[str, Any]:
    """The ``finetune`` section of a run's ``config.yaml``; a file that is not YAML, not a mapping, or whose
    ``finetune`` is not a mapping is an error naming it."""
    import yaml

    try:
        data = yaml.safe_load(config.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(config, f"not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise InputError(config, f"holds a {type(data).__name__}, not the run's configuration (a mapping of sections)")
    ft = data.get("finetune") or {}
    if not isinstance(ft, dict):
        raise InputError(config, f"its 'finetune' section is a {type(ft).__name__}, not a mapping of settings")
    return ft


LICENSE = """Apache License, Version 2.0 (https://www.apache.org/licenses/LICENSE-2.0)

The model weights and configuration files of this bundle were produced with gtgm and are provided under the
Apache License 2.0. The licence of the data the model was trained on applies in addition (see docs/README.md).
"""


def _eval_metrics(ckpt: dict[str, Any]) -> dict[str, float]:
    """The validation mean Dice ``best.pt`` was chosen with; none when it had no validation cases."""
    score = ckpt.get("val_score")
    return {"mean_dice": float(score)} if score is not None and math.isfinite(score) else {}
