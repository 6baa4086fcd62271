"""The registry knows no model: importing any module of gtgm.models registers every builder (models/__init__)."""

import subprocess
import sys


def test_importing_the_registry_alone_registers_every_builder():
    code = (
        "from gtgm.models.registry import list_encoders, list_segmenters; "
        "print(','.join(list_encoders()), ','.join(list_segmenters()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["resenc,resunet,swinunetr", "resenc,resunet,swinunetr"]


def test_registry_module_imports_no_model():
    import ast
    from pathlib import Path

    import gtgm.models.registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not {m for m in imported if m and m.startswith("gtgm.models")}, imported
