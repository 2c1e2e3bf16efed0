"""Progress events and the cancel signal of a running step.

Every long step reports through a :class:`StepContext`: each event goes to the caller's callback and
to the run folder's ``events.jsonl`` (one JSON object per line, flushed as written, so the web app
and a Kubeflow pod can tail it). Between units of work (the export, each verify run, each tune
candidate) the step calls :meth:`StepContext.check`, which raises :class:`golive.errors.CancelledError`
once cancellation was asked for.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from golive.errors import CancelledError

__all__ = ["EVENTS_FILE", "CancelToken", "Event", "EventHandler", "StepContext", "read_events"]

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"


class Event(BaseModel):
    """One step's progress: the CLI draws it, the web app streams it, the pipeline logs it."""

    step: str
    message: str
    done: int | None = None
    total: int | None = None
    payload: dict[str, Any] = Field(
        default_factory=dict, description="structured figures: a tune candidate's row, a verify run's errors"
    )
    job_id: str | None = None
    ts: float = Field(default_factory=time.time, description="seconds since the epoch")


EventHandler = Callable[[Event], None]


class CancelToken:
    """Set once, from any thread (a signal handler, the worker's control pipe, a web request)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str = "cancelled") -> None:
        if not self._event.is_set():
            self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class StepContext:
    """What a running step reports to and listens to: the callback, events.jsonl, the cancel token."""

    def __init__(
        self,
        *,
        on_event: EventHandler | None = None,
        cancel: CancelToken | None = None,
        job_id: str | None = None,
        keep_failed: bool = False,
    ) -> None:
        self.on_event = on_event
        self.cancel = cancel or CancelToken()
        self.job_id = job_id
        self.keep_failed = keep_failed  # a job keeps a failed run folder (its events) for the monitor
        self._files: list[Path] = []

    def emit(
        self, step: str, message: str, done: int | None = None, total: int | None = None, payload: dict[str, Any] | None = None
    ) -> Event:
        event = Event(step=step, message=message, done=done, total=total, payload=payload or {}, job_id=self.job_id)
        log.debug("%s: %s", step, message)
        line = event.model_dump_json() + "\n"
        for path in self._files:
            try:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(line)
            except OSError as exc:  # a progress record must never fail the step
                log.debug("cannot append to %s: %s", path, exc)
        if self.on_event:
            self.on_event(event)
        return event

    def check(self) -> None:
        """Raise CancelledError when cancellation was asked for (called between units of work)."""
        if self.cancel.is_set():
            raise CancelledError(
                f"cancelled: {self.cancel.reason}" if self.cancel.reason != "cancelled" else "cancelled",
                hint="nothing it wrote looks finished; run it again to start over",
            )

    def writing_to(self, path: Path) -> _Writing:
        """Also append events to ``path`` while the returned context is active."""
        return _Writing(self, Path(path))


class _Writing:
    def __init__(self, ctx: StepContext, path: Path) -> None:
        self.ctx, self.path = ctx, path

    def __enter__(self) -> StepContext:
        if self.path not in self.ctx._files:
            self.ctx._files.append(self.path)
            self._added = True
        else:
            self._added = False
        return self.ctx

    def __exit__(self, *exc) -> None:
        if self._added:
            self.ctx._files.remove(self.path)


def read_events(path: str | Path, offset: int = 0) -> tuple[list[Event], int]:
    """The events of an events.jsonl from byte ``offset`` on, and the offset to continue from.

    A line still being written (no newline yet) is left for the next call.
    """
    path = Path(path)
    if not path.is_file():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    events = []
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        if line.strip():
            try:
                events.append(Event.model_validate_json(line))
            except ValueError:
                log.debug("skipping a malformed line in %s", path)
    return events, offset + end
