"""Options shared by the sub-commands (``--config`` and ``key=value`` overrides) and ``gtgm config``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from gtgm.config import list_presets, load_config
from gtgm.errors import GtgmError

OVERRIDES_HELP = "config overrides as key.sub=value (YAML values), e.g. preprocess.ct_window=[-200,300]"
NAMES = ("config",)


def add_config(p: argparse.ArgumentParser) -> None:
    """``--config PRESET``, and an epilog saying that ``key=value`` overrides may follow."""
    p.add_argument("--config", help="YAML preset: a path, or a preset's name (e.g. data/default; gtgm config --list)")
    p.epilog = f"Any number of KEY=VALUE arguments may follow: {OVERRIDES_HELP}."


def str_override(key: str, value: object) -> str:
    """A ``key=value`` override whose value stays a string (a path such as ``007`` or ``on`` is not YAML)."""
    return f"{key}={json.dumps(str(value))}"


def must_exist(inputs: dict[str | Path | None, str]) -> None:
    """Each named input (path -> what it is) exists; ``None`` is skipped. A mistyped path is reported in one line
    before the stage loads torch and MONAI (seconds of imports on a small machine)."""
    for path, what in inputs.items():
        if path is not None and str(path) and not Path(path).exists():
            raise GtgmError(f"{path}: {what} not found")


def add_parsers(sub: argparse._SubParsersAction, names: tuple[str, ...] = NAMES) -> None:
    if "config" in names:
        p = sub.add_parser("config", help="print the resolved configuration, or (--list) the presets gtgm ships")
        add_config(p)
        p.add_argument("--list", action="store_true", help="list the presets with a line about each")


def run(args: argparse.Namespace) -> int:
    """``gtgm config``: the resolved configuration as YAML; ``--list``: every preset with its description."""
    if args.list:
        presets = list_presets()
        width = max(len(name) for name, _ in presets)
        print("\n".join(f"{name:<{width}}  {about}" for name, about in presets))
        return 0
    print(yaml.safe_dump(load_config(args.config, args.overrides).to_dict(), sort_keys=False), end="")
    return 0
