"""Atomic writes: a step's output appears complete or not at all."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from golive.errors import OutputDirError

log = logging.getLogger(__name__)

MARKER = "golive.json"  # a folder holding it was written by golive and may be replaced


def check_output_dir(out: Path) -> None:
    """Fail early, before any work, when ``out`` cannot become golive's output folder."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"output path {out} is a file, not a folder", hint="choose another -o/--output folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise OutputDirError(f"output folder {out} already holds files that golive did not write",
                             hint="choose a new or empty folder; golive replaces only its own earlier output")
    parent = out.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise OutputDirError(f"cannot create {out}: {p} is a file", hint="choose another -o/--output folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise OutputDirError(f"cannot write to {p}", hint="choose a folder you can write to")
            break


@contextlib.contextmanager
def staged_dir(out: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` in one rename, on failure it is removed."""
    out = Path(out).absolute()
    check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as exc:
        raise OutputDirError(f"cannot create the output folder {out}: {exc.strerror or exc}",
                             hint="choose a folder you can write to") from exc
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename."""
    text = data if isinstance(data, str) else json.dumps(data, indent=2, default=str)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text + ("\n" if not text.endswith("\n") else ""))
    os.replace(tmp, path)


_VERSIONED = ("golive", "onnx", "onnxruntime", "numpy", "torch", "onnxscript", "transformers", "scikit-learn",
              "skl2onnx", "lightgbm", "xgboost", "xgboost-cpu", "onnxmltools")


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
        kept = [ln for ln in self.text.splitlines() if ln.strip()]
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
