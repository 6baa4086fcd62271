"""Every JSON file gtgm reads back has a declared schema (:mod:`gtgm.schemas`): what gtgm itself writes follows it,
and the same file with one field of the wrong type or value is refused in one error naming the file and the field.
(The command-line rows of ``test_stage_inputs.py`` show that the readers apply them.)"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from gtgm import schemas
from gtgm.errors import InputError
from gtgm.fsutil import check_schema

RUN = "study/ct_phantom/pretrained/ratio1_seed0"
PLANS = "exports/nnUNet_preprocessed/Dataset501_ct_phantom/nnUNetResEncUNetCPUPlans.json"
# schema -> (a file the demo wrote, the key path of a field to break, a wrong value, the field as the error names it)
WRITTEN = {
    "DATASET_JSON": ("examples/dataset.json", ["training", 0, "spacing"], "1 mm", "training[0].spacing"),
    "CACHE_INDEX": ("cache/index.json", ["cases", 0, "shape", 0], 0, "cases[0].shape[0]"),
    "CASE_META": ("cache/volumes/{case}.json", ["label_values"], "1,2", "label_values"),
    "TEXT_INDEX": ("text/index.json", ["dim"], "384", "dim"),
    "SPLIT_JSON": (f"{RUN}/split.json", ["test", 0, "hi"], [8, 8], "test[0].hi"),
    "TEST_METRICS": (f"{RUN}/test_metrics.json", ["test", "metric"], "accuracy", "test.metric"),
    "RESERVED_JSON": ("pretrain/reserved.json", ["regions", 0, "lo"], None, "regions[0].lo"),
    "STUDY_JSON": ("study/study.json", ["results", "ct_phantom", 0, "score"], "0.9", "results.ct_phantom[0].score"),
    "ENCODER_JSON": ("pretrain/encoder.json", ["in_channels"], 0, "in_channels"),
    "NNUNET_PLANS": (PLANS, ["transpose_forward"], [0, 0, 1], "transpose_forward"),
}


def _set(obj, keys: list, value) -> None:
    for k in keys[:-1]:
        obj = obj[k]
    obj[keys[-1]] = value


@pytest.mark.parametrize("name", sorted(WRITTEN))
def test_what_gtgm_writes_follows_its_schema_and_a_wrong_field_is_named(demo_run: Path, name: str):
    rel, keys, bad, field = WRITTEN[name]
    labelled = next(
        e for e in json.loads((demo_run / "cache" / "index.json").read_text())["cases"] if "label" in e["files"]
    )
    path = demo_run / rel.format(case=labelled["id"])
    doc = json.loads(path.read_text())
    check_schema(doc, getattr(schemas, name), path)  # as written: accepted
    broken = copy.deepcopy(doc)
    _set(broken, keys, bad)
    with pytest.raises(InputError, match=re.escape(f"{path.name}: field '{field}'")) as err:
        check_schema(broken, getattr(schemas, name), path)
    assert "\n" not in str(err.value)


def test_every_schema_is_valid_json_schema():
    import jsonschema

    declared = {n: s for n, s in vars(schemas).items() if n.isupper() and isinstance(s, dict)}
    for schema in declared.values():
        jsonschema.Draft202012Validator.check_schema(schema)
    assert set(WRITTEN) | {"PROBE_RESULT", "RESENC_ENCODER_JSON"} <= set(declared)
