"""Declared shapes of the JSON files gtgm reads from other tools or earlier stages (JSON Schema, checked with the
``jsonschema`` library by :func:`gtgm.fsutil.read_json`), so that a well-formed file with a wrong field is one
error naming the file, the field and what was expected, not a ``KeyError`` deep inside a stage.

Only what the readers rely on is declared; other fields are free (files from newer versions keep working).
"""

from __future__ import annotations

from typing import Any

INT = {"type": "integer"}
POSITIVE_INT = {"type": "integer", "minimum": 1}
XYZ = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 3, "maxItems": 3}
# nnU-Net plans hold 2D and 3D configurations: per-axis values have 2 or 3 entries
PER_AXIS = {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 2, "maxItems": 3}
PER_STAGE_AXES = {"type": "array", "items": {"type": "array", "items": POSITIVE_INT, "minItems": 2, "maxItems": 3}}
INTS = {"type": "array", "items": POSITIVE_INT}

# nnU-Net v2 plans (nnUNetPlans.json, nnUNetResEncUNet*Plans.json): what gtgm export nnunet / resenc-config read
NNUNET_PLANS: dict[str, Any] = {
    "type": "object",
    "required": ["configurations"],
    "properties": {
        "transpose_forward": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 2},
            "minItems": 3,
            "maxItems": 3,
            "uniqueItems": True,
        },
        "image_reader_writer": {"type": "string"},
        "dataset_name": {"type": "string"},
        "plans_name": {"type": "string"},
        "configurations": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "inherits_from": {"type": "string"},
                    "patch_size": INTS,
                    "spacing": PER_AXIS,
                    "architecture": {
                        "type": "object",
                        "properties": {
                            "network_class_name": {"type": "string"},
                            "arch_kwargs": {
                                "type": "object",
                                "properties": {
                                    "features_per_stage": INTS,
                                    "kernel_sizes": PER_STAGE_AXES,
                                    "strides": PER_STAGE_AXES,
                                    "n_blocks_per_stage": INTS,
                                    "n_conv_per_stage_decoder": INTS,
                                },
                            },
                            "_kw_requires_import": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}

# encoder.json, written beside encoder.pt by gtgm pretrain (and the study's supervised control)
ENCODER_JSON: dict[str, Any] = {
    "type": "object",
    "required": ["encoder"],
    "properties": {
        "encoder": {"type": "string"},
        "in_channels": POSITIVE_INT,
        "channels": INTS,
        "patch_size": INTS,
        "steps": {"type": "integer", "minimum": 0},
        "segmenter_prefix": {"type": "string"},
        "spacing": {"anyOf": [XYZ, {"type": "null"}]},
        "spacing_by_modality": {"type": "object", "additionalProperties": XYZ},
        "preprocess": {"type": "object"},
        "text_encoder": {"type": "object"},
        "arch_kwargs": {"type": "object"},
    },
}

# what gtgm export nnunet needs of a resenc encoder's encoder.json (its network is rebuilt from these fields)
RESENC_ENCODER_JSON: dict[str, Any] = {"allOf": [ENCODER_JSON, {"required": ["arch_kwargs", "in_channels"]}]}
