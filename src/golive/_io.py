"""Atomic JSON writes, .npz files of named arrays, the package versions a record names, and capturing what converters print."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file, flushed to disk, and a rename."""
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text + ("\n" if not text.endswith("\n") else ""))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    sync_dir(path.parent)


def save_npz(path: str | Path, arrays: Mapping[str, Any]) -> None:
    """Save arrays by name in an uncompressed .npz, as ``np.savez(path, **arrays)`` does, for any name: np.savez
    takes an array named ``file`` or ``allow_pickle`` for its own argument of that name."""
    import numpy as np

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, value in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=True)


@contextlib.contextmanager
def folder_in_place(out: Path, *, unique: bool = False) -> Iterator[Path]:
    """A folder written beside ``out`` under a partial name (yielded), renamed into place (replacing ``out``) when the
    block succeeds and removed when it fails: nothing half-written ever stands at ``out``. The partial name is
    ``.OUT.partial`` (a stale one from a killed run is removed first), or with ``unique`` ``.OUT.partial-XXXXXXXX``
    (for writers that may run at once; a run folder's lock sweeps stale ones)."""
    import shutil
    import uuid

    out = Path(out)
    partial = out.with_name(f".{out.name}.partial" + (f"-{uuid.uuid4().hex[:8]}" if unique else ""))
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        if out.exists():
            shutil.rmtree(out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def sync_tree(path: Path) -> None:
    """Flush a file, or every file and folder under ``path``, to disk (so a record written after it never
    survives a power cut that the files it describes did not)."""
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        if p.is_dir():
            sync_dir(p)
        elif p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())


def sync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot sync a folder
        pass
    finally:
        os.close(fd)


_VERSIONED = (
    "golive",
    "onnx",
    "onnxruntime",
    "numpy",
    "torch",
    "onnxscript",
    "transformers",
    "scikit-learn",
    "skl2onnx",
    "lightgbm",
    "xgboost",
    "xgboost-cpu",
    "onnxmltools",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


class Captured:
    """What a noisy library printed while ``captured_output`` was active; ``text`` is set on exit."""

    text: str = ""

    def tail(self, lines: int = 8) -> str:
        return last_lines(self.text, lines)


def last_lines(text: str, lines: int) -> str:
    """The last ``lines`` non-blank lines of ``text``: what a failed tool or process said last."""
    kept = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(kept[-lines:])


@contextlib.contextmanager
def captured_output(loggers: tuple[str, ...] = ()) -> Iterator[Captured]:
    """Route everything a converter prints (Python and C++, stdout and stderr, warnings) to golive's debug log.

    ``loggers`` are raised to ERROR meanwhile. The captured text stays readable on the yielded object,
    so an error message can quote the converter's last words.
    """
    saved = {n: logging.getLogger(n).level for n in loggers}
    for n in loggers:
        logging.getLogger(n).setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    result = Captured()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        kept = [os.dup(1), os.dup(2)]
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()) as buf:
                warnings.simplefilter("always")
                yield result
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(kept[0], 1)
            os.dup2(kept[1], 2)
            for fd in kept:
                os.close(fd)
            for n, level in saved.items():
                logging.getLogger(n).setLevel(level)
            sink.seek(0)
            result.text = buf.getvalue() + sink.read().decode(errors="replace")
            if result.text.strip():
                log.debug("converter output:\n%s", result.text)
            for w in caught:
                log.debug("converter warning: %s", w.message)
