"""The ``gtgm`` command: one sub-command per stage. Thin: parse, load config, call the stage.

Each module of this package holds a family of sub-commands (``add_parsers(sub)`` + ``run(args)``);
:data:`COMMANDS` names the module of every sub-command, in the order ``gtgm --help`` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
import traceback

from gtgm import __version__
from gtgm.cli import data, export, infer, options, study, text, train
from gtgm.errors import GtgmError

COMMANDS = {
    "data": data,
    "export": export,
    "query": infer,
    "audit": text,
    "caption": text,
    "embed-text": text,
    "pretrain": train,
    "finetune": train,
    "predict": infer,
    "evaluate": infer,
    "study": study,
    "probe": study,
    "demo": study,
    "config": options,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gtgm",
        description="Generative text-guided 3D vision-language pretraining for medical image segmentation.",
    )
    parser.add_argument("--version", action="version", version=f"gtgm {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="STAGE")
    for name, module in COMMANDS.items():
        module.add_parsers(sub, (name,))
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse, collecting ``key=value`` overrides wherever they appear among the arguments."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    unknown = [e for e in extra if e.startswith("-") or "=" not in e]
    if unknown or (extra and not hasattr(args, "config")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        _check_out(args)
        return COMMANDS[args.command].run(args)
    except (GtgmError, OSError, MemoryError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"gtgm: error: {_describe(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gtgm: interrupted; finished outputs are kept, re-run to resume", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``gtgm`` command (console script, ``python -m gtgm``): :func:`main`, then the exit with its code.

    A torchrun worker (``WORLD_SIZE`` > 1) ends with ``os._exit`` after flushing stdout and stderr, without Python's
    teardown: a gloo or NCCL process can hang there (destructors of the process group and its threads) after a run
    that finished, and torchrun would wait for it forever. Every output gtgm writes is complete by then (a temp file,
    then a rename; logs line by line)."""
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken pipe must not keep the worker alive
                stream.flush()
        os._exit(code)
    raise SystemExit(code)


def _describe(exc: BaseException) -> str:
    """One line for an error: gtgm's own message, or the path and cause of a system error."""
    if isinstance(exc, GtgmError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return "out of memory (a volume or batch too large for this machine; try a coarser spacing or smaller patches)"
    where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
    cause = {
        errno.ENOSPC: "no space left on the device",
        errno.EACCES: "permission denied",
        errno.EROFS: "read-only file system",
        errno.EISDIR: "is a folder, not a file",
        errno.ENOTDIR: "not a folder (a part of the path is a file)",
        errno.EEXIST: "already exists and is not a folder",
    }
    return f"{where}{cause.get(exc.errno, exc.strerror or str(exc))} (use --debug for the traceback)"


def _check_out(args: argparse.Namespace) -> None:
    """``--out`` can be written (a folder; a file for ``caption``) before any work starts."""
    from gtgm.fsutil import check_out

    out = getattr(args, "out", None)
    if out is not None and str(out):
        check_out(out, folder=args.command != "caption")
