"""Process isolation for one call: run ``module:function(*args)`` in a fresh process, so that a crash, a hang
or running out of memory costs that call only (a transform, a measurement, saving an optimized graph).

Processes come from a forkserver that has imported the heavy modules once (``preload``): each call still
runs in a process of its own, but starts in milliseconds instead of re-importing everything (spawn: ~0.7 s).
multiprocessing has one forkserver per process, so its preload list is process-wide state: the callers run
in a step process golive owns (see golive._worker), never in a library user's.

Also here, for every kind of golive child process: how a death is told (:func:`death_message`) and the last
lines of what a child printed (:func:`log_tail`).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from golive._io import last_lines

__all__ = ["WorkerFailure", "death_message", "in_worker", "log_tail", "preload"]

_PRELOAD = ["numpy", "onnxruntime", "golive.runtime"]
_CTX: Any = None


@dataclass(frozen=True)
class WorkerFailure:
    """Why a call in a worker process gave no value: what happened, the exception's class (an error) and fields."""

    kind: Literal["error", "timeout", "died", "cancelled"]
    message: str  # the exception's first line, or what became of the process
    error_type: str | None = None  # the exception's class name (kind "error")
    hint: str | None = None  # a GoliveError's hint

    def __str__(self) -> str:
        """As reports and logs have always said it: "Type: message" for an error, the message otherwise."""
        return f"{self.error_type}: {self.message}" if self.error_type else self.message


def preload(*modules: str) -> None:
    """Ask the forkserver to import ``modules`` before it forks (effective until the first call starts it)."""
    for m in modules:
        if m not in _PRELOAD:
            _PRELOAD.append(m)


def death_message(code: int | None, what: str = "the worker process") -> tuple[str, str | None]:
    """(message, signal name) for a child that ended with ``code`` before it reported."""
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"{what} died from {sig}{why}", sig
    return f"{what} exited with code {code} before reporting", None


def log_tail(text_or_path: str | Path | None, lines: int = 12) -> str:
    """The last non-blank lines of a log (a path, read from its last 16 KiB) or of a text."""
    if text_or_path is None:
        return ""
    if isinstance(text_or_path, Path):
        if not text_or_path.is_file():
            return ""
        with open(text_or_path, "rb") as f:
            f.seek(max(0, text_or_path.stat().st_size - 16384))
            text = f.read().decode(errors="replace")
    else:
        text = text_or_path
    return last_lines(text, lines)


def _child(conn: Any, target: str, args: tuple) -> None:
    """The worker's side: what the tools print (onnxruntime's quantizers log at INFO to stderr from their
    own handlers) goes to a scratch file, whose last line explains a failure; the caller's terminal stays quiet."""
    import importlib
    import tempfile

    module, _, name = target.partition(":")
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            conn.send(("ok", getattr(importlib.import_module(module), name)(*args)))
        except BaseException as exc:  # report every failure to the parent, which records it as the candidate's
            text = str(getattr(exc, "message", "") or exc).strip().splitlines()
            message = text[0][:500] if text else ""
            sink.seek(0)
            printed = log_tail(sink.read().decode(errors="replace"), 1)
            if printed and not text:
                message += f" (it printed: {printed[:300]})"
            conn.send(("error", WorkerFailure("error", message, type(exc).__name__, getattr(exc, "hint", None))))
        finally:
            conn.close()


def _context() -> Any:
    global _CTX
    if _CTX is None:
        try:
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(list(_PRELOAD))
        except ValueError:  # no forkserver on this platform
            _CTX = mp.get_context("spawn")
    return _CTX


def in_worker(target: str, args: tuple, timeout: float, should_stop: Callable[[], bool] | None = None) -> tuple[bool, Any]:
    """Run ``target(*args)`` ("module:function") in a fresh process. Returns (True, its value) or
    (False, a :class:`WorkerFailure`). ``should_stop()`` is polled while waiting: when it turns true the
    process is killed and a "cancelled" failure returned."""
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, target, args), daemon=True)
    proc.start()
    child.close()
    status, payload = "timeout", None
    try:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if parent.poll(min(0.25, max(0.0, end - time.monotonic()))):
                try:
                    status, payload = parent.recv()
                except EOFError:
                    status, payload = "died", None
                break
            if should_stop is not None and should_stop():
                status = "cancelled"
                break
    finally:
        if status in ("timeout", "cancelled") and proc.is_alive():
            proc.kill()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if status == "ok":
        return True, payload
    if status == "error":
        return False, payload
    if status == "cancelled":
        return False, WorkerFailure("cancelled", "cancelled")
    if status == "timeout":
        return False, WorkerFailure("timeout", f"timed out after {timeout:.0f} s (hung, or far slower than the others)")
    return False, WorkerFailure("died", death_message(proc.exitcode)[0])
