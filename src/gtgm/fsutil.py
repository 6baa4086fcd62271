"""Atomic file writes and content fingerprints.

Every output gtgm writes goes to a temporary file in the destination folder first and is renamed into
place only when complete, so an interruption or an error never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from gtgm.errors import GtgmError

_UMASK = os.umask(0)
os.umask(_UMASK)


def memory_budget() -> int:
    """Bytes one volume may take: half of this machine's physical memory (``GTGM_MEMORY_GB`` overrides)."""
    text = os.environ.get("GTGM_MEMORY_GB", "").strip()
    if text:
        try:
            gb = float(text)
        except ValueError:
            gb = math.nan
        if not 0 < gb < math.inf:
            raise GtgmError(f"environment variable GTGM_MEMORY_GB={text!r}: expected a positive number of gigabytes")
        return int(gb * 1e9)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def fits_in_memory(shape: tuple[int, ...] | list[int], itemsize: int = 4) -> tuple[bool, float]:
    """Whether an array of ``shape`` fits :func:`memory_budget`, and its size in GB."""
    need = float(np.prod([int(s) for s in shape], dtype=np.float64)) * itemsize
    return need <= memory_budget(), need / 1e9


@contextlib.contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; rename it onto ``dest`` if the block succeeds.

    ``suffix`` keeps an extension that a writer needs to see (``.nii.gz`` for nibabel, ``.npy``).
    On an exception the temporary file is removed and ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, dest)
    except OSError as exc:  # a full disk, from a writer that names no file (numpy, torch) or the temporary one
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or (exc.errno is None and "space" in str(exc))
        if not full or getattr(exc, "filename", None) not in (None, str(tmp_path)):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(dest)) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def check_out(path: str | Path, folder: bool = True) -> None:
    """Before any work: ``path`` can become an output folder (``folder``) or file, i.e. neither it nor a parent
    is the wrong kind of thing, and the nearest existing folder is writable (:class:`~gtgm.errors.InputError`
    naming it)."""
    from gtgm.errors import InputError

    path = Path(path)
    if path.exists():
        if folder and not path.is_dir():
            raise InputError(path, "is a file, not a folder; give a folder (new or existing) as the output")
        if not folder and path.is_dir():
            raise InputError(path, "is a folder, not a file; give a file name as the output")
    if not folder and path.is_file():  # a file to append to (resume)
        if not os.access(path, os.W_OK):
            raise InputError(path, "is not writable (read-only file system or no permission)")
        return
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return
    if not existing.is_dir():
        raise InputError(existing, f"is a file, not a folder, so {path} cannot be created in it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(existing, "is not writable (read-only file system or no permission); choose another output")


def read_json(path: str | Path, kind: type | None = dict, schema: dict[str, Any] | None = None) -> Any:
    """The JSON document at ``path``; a file that cannot be read as JSON (or whose top level is not ``kind``, or
    that does not follow ``schema``, a JSON Schema of :mod:`gtgm.schemas`) is an :class:`~gtgm.errors.InputError`
    that names the file, the line or field, and the problem."""
    from gtgm.errors import InputError

    try:
        obj = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise InputError(path, "not a JSON text file (it holds bytes that are not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise InputError(path, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if kind is not None and not isinstance(obj, kind):
        raise InputError(
            path, f"expected a JSON {'object' if kind is dict else kind.__name__}, got {type(obj).__name__}"
        )
    if schema is not None:
        check_schema(obj, schema, path)
    return obj


def check_schema(obj: Any, schema: dict[str, Any], path: str | Path) -> None:
    """``obj`` (read from ``path``) against the JSON Schema ``schema``: the most relevant violation, naming the
    field (dotted path) and what was expected, as an :class:`~gtgm.errors.InputError`."""
    import jsonschema

    from gtgm.errors import InputError

    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(obj))
    if error is not None:
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        field = field or "(top level)"  # e.g. training[0].spacing
        raise InputError(path, f"field '{field}': {error.message}")


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Remove the temporary files (``.NAME.XXXXXXXX.tmp[.ext]``, see :func:`atomic_path`) that a killed run left
    in ``folder`` (not recursive); returns them. Call it before a stage writes there, not while another writes."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp*") if p.is_file()] if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_json(dest: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(dest, ".json") as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_text(dest: str | Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def file_signature(path: str | Path) -> dict[str, Any]:
    """Cheap identity of a file or folder: size and modification time (ns) of every file in it."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in files}


def digest(obj: Any) -> str:
    """SHA-256 (hex, 16 chars) of the canonical JSON form of ``obj``."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Lock:
    """An exclusive ``flock`` on a lock file, taken at once or not at all (:func:`hold_lock`)."""

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        """Remove the lock file, then free the lock: nothing is left beside or inside the output. A process that
        opened the file just before it was removed finds it gone when it checks (:func:`hold_lock`)."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        os.close(self.fd)  # closing frees the flock
        self.fd = -1


def hold_lock(lock_file: Path, output: str | Path) -> Lock:
    """Take an exclusive ``flock`` on ``lock_file`` for ``output`` at once (no waiting) and return it
    (``.release()`` it when done, which removes the file). The OS frees the lock when the process ends, even by
    kill -9, so a stale lock file never blocks a rerun. Held by another process: a
    :class:`~gtgm.errors.GtgmError` naming ``output``. After the lock is taken, the file on disk must still be
    the one locked (a releasing process may have just removed it); otherwise it is taken again on the new file."""
    import fcntl

    for _ in range(10):
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise GtgmError(
                f"{output}: another gtgm process is writing it (lock {lock_file}); wait for it to finish, or "
                "write to another output"
            ) from None
        try:
            if os.stat(lock_file).st_ino == os.fstat(fd).st_ino:
                return Lock(lock_file, fd)
        except FileNotFoundError:
            pass
        os.close(fd)  # locked a file that was removed meanwhile: try the one there now
    raise GtgmError(f"{output}: could not take its lock {lock_file} (it keeps being removed)")


def lock_folder(folder: str | Path) -> Any:
    """The single-writer lock of an existing output folder (``FOLDER/.gtgm.lock``, see :func:`hold_lock`): a
    training run or a study holds it from the moment its folder exists until it ends, so a second process given
    the same ``--out`` (with or without ``--resume``) stops at once instead of mixing checkpoints."""
    return hold_lock(Path(folder) / ".gtgm.lock", folder)


@contextlib.contextmanager
def single_writer(output: str | Path, folder: bool = False) -> Iterator[None]:
    """Hold the lock of ``output`` while writing it, so that a second gtgm process writing the same output fails
    at once instead of interleaving with the first (duplicate captions, mixed checkpoints). The lock is
    ``.<name>.lock`` beside a file ``output``; a ``folder`` output holds its own (``OUTPUT/.gtgm.lock``), so a
    writable folder in a read-only parent can be written. Either is removed when the block ends (:class:`Lock`);
    a folder this call created is removed again if the block fails before writing anything into it."""
    output = Path(output)
    created = folder and not output.exists()
    if folder:
        output.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(output / ".gtgm.lock", output)
    else:
        output.parent.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(output.parent / f".{output.name}.lock", output)
    try:
        yield
    except BaseException:
        lock.release()
        if created:
            with contextlib.suppress(OSError):
                output.rmdir()  # only if empty: nothing half-written is left, and nothing written is lost
        raise
    lock.release()
