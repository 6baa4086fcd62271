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


def _maybe(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` (one with a ``type``) or JSON null, for a reader that treats null as absent."""
    kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": [*kinds, "null"]}


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
        "spacing": _maybe(XYZ),
        "spacing_by_modality": {"type": "object", "additionalProperties": XYZ},
        "preprocess": {"type": "object"},
        "text_encoder": {"type": "object"},
        "arch_kwargs": {"type": "object"},
    },
}

# what gtgm export nnunet needs of a resenc encoder's encoder.json (its network is rebuilt from these fields)
RESENC_ENCODER_JSON: dict[str, Any] = {"allOf": [ENCODER_JSON, {"required": ["arch_kwargs", "in_channels"]}]}

NONNEG_INT = {"type": "integer", "minimum": 0}
SHAPE = {"type": "array", "items": POSITIVE_INT, "minItems": 3, "maxItems": 3}
XYZ_INT = {"type": "array", "items": NONNEG_INT, "minItems": 3, "maxItems": 3}
CORNER = {"type": "array", "items": NONNEG_INT, "minItems": 3, "maxItems": 3}
TEXT = {"type": "string"}
NAMES = {"type": "object", "additionalProperties": TEXT}  # class value or channel number -> name


# dataset.json as gtgm reads it: MSD (modality, labels, training, test; gtgm's groups) or nnU-Net v2 (channel_names,
# file_ending, numTraining, labels as name -> value). Paths are checked by the reader (inside the folder, present).
DATASET_ENTRY = {  # a path, or an object (minLength applies to a path, properties to an object)
    "type": ["string", "object"],
    "minLength": 1,
    "properties": {
        "image": TEXT,
        "label": _maybe(TEXT),
        "id": {"type": ["string", "integer", "null"]},
        "group": {"type": ["string", "integer"]},
        "modality": TEXT,
        "channel": NONNEG_INT,
        "image_key": _maybe(TEXT),
        "label_key": _maybe(TEXT),
        "synthetic": {"type": "boolean"},
        "source": TEXT,
        "spacing": _maybe(XYZ),
        "label_classes": _maybe({"type": "array", "items": TEXT, "minItems": 1}),
    },
}
DATASET_JSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": TEXT,
        "modality": {"type": ["string", "object", "null"], "additionalProperties": TEXT},  # one name, or per channel
        "labels": _maybe({"type": "object"}),
        "training": _maybe({"type": "array", "items": DATASET_ENTRY}),
        "test": _maybe({"type": "array", "items": DATASET_ENTRY}),
        "groups": _maybe(
            {
                "type": "object",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"modality": TEXT, "labels": {"type": "object"}},
                },
            }
        ),
        "channel_names": _maybe({"type": "object", "propertyNames": {"pattern": "^[0-9]+$"}, "minProperties": 1}),
        "file_ending": _maybe(TEXT),
        "numTraining": _maybe(NONNEG_INT),
    },
}

# index.json of a preprocessed cache (gtgm data preprocess): one entry per cached case
CACHE_INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["cases"],
    "properties": {
        "version": INT,
        "config": {"type": "object"},
        "groups": {"type": "object", "additionalProperties": {"type": "object", "properties": {"labels": NAMES}}},
        "cases": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "group", "split", "shape", "files", "meta"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "group": TEXT,
                    "split": TEXT,
                    "modality": TEXT,
                    "shape": SHAPE,
                    "spacing": XYZ,
                    "channels": _maybe(POSITIVE_INT),
                    "files": {
                        "type": "object",
                        "required": ["image"],
                        "additionalProperties": {"type": "string", "minLength": 1},
                    },
                    "meta": {"type": "string", "minLength": 1},
                    "body_box": {"type": "array", "items": XYZ_INT, "minItems": 2, "maxItems": 2},
                    "label_classes": {"type": "array", "items": NONNEG_INT, "minItems": 1},
                },
            },
        },
    },
}

# volumes/<id>.json of a preprocessed cache: how the case was cached (what predict, caption and query redo)
CASE_META: dict[str, Any] = {
    "type": "object",
    "properties": {
        "modality": TEXT,
        "preprocess": {"type": "object", "properties": {"target_spacing": _maybe(XYZ)}},
        "normalization": {"type": "array", "items": {"type": "object"}},
        "files": {"type": "object", "additionalProperties": TEXT},
        "num_labels": NONNEG_INT,
        "label_values": _maybe({"type": "array", "items": INT}),
        "label_input": _maybe({"type": "object"}),
    },
}

# index.json of a text-embedding cache (gtgm embed-text)
TEXT_INDEX: dict[str, Any] = {
    "type": "object",
    "required": ["hashes", "count", "dim"],
    "properties": {
        "encoder": {"type": "object"},
        "dim": POSITIVE_INT,
        "count": NONNEG_INT,
        "dtype": TEXT,
        "digest": TEXT,
        "hashes": {"type": "array", "items": TEXT},
    },
}

# split.json of a fine-tuning run: the parts of each split (case index into the cache, box [lo, hi), slices)
SPLIT_JSON: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["case", "lo", "hi"],
            "properties": {
                "case": NONNEG_INT,
                "lo": CORNER,
                "hi": CORNER,
                "slices": _maybe({"type": "array", "items": NONNEG_INT}),
                "id": TEXT,
            },
        },
    },
}

# test_metrics.json of a fine-tuning run: what the study reuses instead of training again
TEST_METRICS: dict[str, Any] = {
    "type": "object",
    "required": ["test", "train_cases", "labelled_slices"],
    "properties": {
        "task": TEXT,
        "test": {
            "type": ["object", "null"],  # null: a selection run that named no test case
            "required": ["metric", "summary"],
            "properties": {
                "metric": {"enum": ["mean_dice", "voi"]},
                "summary": {"type": "object"},
                "mean_dice": {"type": "number"},
                "voi": {"type": "number"},
                "cases": {"type": "array", "items": {"type": "object", "required": ["case"]}},
            },
            "allOf": [
                {"if": {"properties": {"metric": {"const": "mean_dice"}}}, "then": {"required": ["mean_dice"]}},
                {"if": {"properties": {"metric": {"const": "voi"}}}, "then": {"required": ["voi"]}},
            ],
        },
        "best_val": _maybe({"type": "number"}),
        "steps": NONNEG_INT,
        "encoder_drift": _maybe({"type": "object"}),
        "train_cases": {"type": "array", "items": TEXT},
        "labelled_slices": {"type": "array", "items": _maybe(NONNEG_INT)},
    },
}

# one frozen-encoder probe's result (study/probes/<group>/*.json; gtgm probe writes the same fields)
PROBE_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["encoder", "voxel", "presence"],
    "properties": {
        "arm": TEXT,
        "encoder": TEXT,
        "voxel": {
            "type": "object",
            "required": ["mean_dice", "train_voxels"],
            "properties": {"mean_dice": {"type": "number"}, "train_voxels": NONNEG_INT},
        },
        "presence": {
            "type": "object",
            "required": ["mean_auc", "windows"],
            "properties": {
                "mean_auc": {"type": "number"},
                "windows": {"type": "array", "items": NONNEG_INT, "minItems": 2, "maxItems": 2},
            },
        },
    },
}

# reserved.json of a pretraining run: the fine-tuning validation / test regions it kept out
RESERVED_JSON: dict[str, Any] = {
    "type": "object",
    "required": ["regions"],
    "properties": {
        "regions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["volume", "group", "lo", "hi"],
                "properties": {"volume": TEXT, "group": TEXT, "split": TEXT, "lo": CORNER, "hi": CORNER},
            },
        },
        "unsplittable": {"type": "object"},
    },
}

# study.json of a study folder: one row per run and arm (what the demo's report reads back)
STUDY_JSON: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "object",
            "additionalProperties": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["arm", "ratio", "seed", "metric", "score"],
                    "properties": {
                        "arm": TEXT,
                        "ratio": {"type": "number"},
                        "seed": INT,
                        "metric": TEXT,
                        "score": {"type": "number"},
                    },
                },
            },
        },
        "readouts": {"type": "object"},
        "baselines": {"type": "object"},
        "probes": {"type": "object"},
        "seconds": {"type": "number"},
    },
}
