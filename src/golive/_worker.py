"""Running a step in a process of its own.

Converters print from C++, ONNX Runtime's tools write into the current folder, frameworks set loggers
and environment variables: a step may change process-wide state, so the library runs it in a child
process (``python -m golive._worker``) and the caller's process stays as it was. The child is the
leader of its own process group, so cancelling it can end everything it started.

Protocol: the parent writes the task as one JSON line on the child's stdin, then keeps stdin open as
the control channel (a ``cancel`` line asks the step to stop; end of file means the parent is gone, and
the child stops too). The child answers with JSON lines on its original stdout (events, log records, then
one ``result`` or ``error``); its fds 1 and 2 go to a log file, which is where converter output lands.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from golive._isolate import death_message, log_tail
from golive.errors import CancelledError, GoliveError, StepCrashedError

__all__ = ["GRACE_SECONDS", "StepProcess", "WorkerBugError", "call"]

log = logging.getLogger(__name__)

GRACE_SECONDS = 10.0  # a cancelled step gets this long to stop between units of work before it is killed


class WorkerBugError(RuntimeError):
    """An unexpected exception in the worker process: a bug, shown with the worker's traceback."""


class StepProcess:
    """A step function running in a child process. Its messages arrive on ``self.messages`` (a queue; only
    the outcome is kept with ``keep_messages=False``), its outcome (the ``result`` or ``error`` message) on
    ``self.outcome``."""

    def __init__(
        self,
        target: str,
        kwargs: dict[str, Any],
        *,
        log_path: Path | None = None,
        job_id: str | None = None,
        keep_failed: bool = False,
        echo_log: bool = False,
        log_level: int = logging.INFO,
        keep_messages: bool = True,
    ) -> None:
        self.target, self.kwargs = target, kwargs
        self.job_id, self.keep_failed, self.echo_log, self.log_level = job_id, keep_failed, echo_log, log_level
        self.keep_messages = keep_messages
        self.log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.outcome: dict[str, Any] | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.cancel_sent_at: float | None = None
        self.reader_done = threading.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def _child(self) -> tuple[subprocess.Popen[bytes], IO[bytes], IO[bytes]]:
        """The child and its stdin and stdout pipes: the methods below run only once start() has made them."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise RuntimeError("the step process has not been started")
        return proc, proc.stdin, proc.stdout

    def start(self) -> StepProcess:
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="golive-step-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        task = {
            "target": self.target,
            "kwargs": self.kwargs,
            "sys_path": list(sys.path),
            "job_id": self.job_id,
            "keep_failed": self.keep_failed,
            "echo_log": self.echo_log,
            "log_level": self.log_level,
            "grace": GRACE_SECONDS,
        }
        with open(self.log_path, "ab") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "golive._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                start_new_session=True,
                close_fds=True,
            )
        proc, stdin, _ = self._child()
        stdin.write((json.dumps(task) + "\n").encode())
        stdin.flush()
        threading.Thread(target=self._read, name=f"golive-step-{proc.pid}", daemon=True).start()
        return self

    def _read(self) -> None:
        """Split the child's protocol stream into messages (raw reads: no buffer lock to get stuck on)."""
        fd, pending = self._child()[2].fileno(), b""
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if msg.get("kind") in ("result", "error"):
                        self.outcome = msg
                    if self.keep_messages or msg.get("kind") in ("result", "error"):
                        self.messages.put(msg)
        except OSError:
            pass
        finally:
            self.messages.put(None)  # end of the child's messages
            self.reader_done.set()

    def cancel(self) -> None:
        """Ask the step to stop at its next check; ``kill`` it if it has not after the grace period."""
        if self.cancel_sent_at is None:
            self.cancel_sent_at = time.monotonic()
        stdin = self._child()[1]
        try:
            stdin.write(b"cancel\n")
            stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def kill(self) -> None:
        """SIGKILL the step's whole process group (the step and every process it started)."""
        try:
            os.killpg(self._child()[0].pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def poll(self) -> int | None:
        return self._child()[0].poll()

    def finish(self) -> None:
        """After the child exited: end the stragglers of its group, close the pipes, drop a temporary log."""
        proc, stdin, stdout = self._child()
        self.kill()  # anything of its process group still running (a measuring process, say)
        proc.wait()
        try:
            stdin.close()
        except OSError:
            pass
        if self.reader_done.wait(5):  # the group is gone, so the protocol pipe has reached its end
            stdout.close()
        else:  # a process that left the group still holds it; closing under a blocked read is not safe
            log.debug("a process started by step %s still holds its output pipe", proc.pid)
        if self._own_log and self.log_path is not None:
            if log.isEnabledFor(logging.DEBUG):
                text = self.log_path.read_text(errors="replace").strip()
                if text:
                    log.debug("worker output:\n%s", text)
            self.log_path.unlink(missing_ok=True)

    def crash_error(self, what: str) -> StepCrashedError:
        code = self._child()[0].returncode
        tail = log_tail(self.log_path)
        message, sig = death_message(code, f"the process running {what}")
        if tail:
            message += "; its last output:\n" + tail
        return StepCrashedError(
            message,
            hint="a converter or runtime crash on this model; --debug shows everything it printed",
            signal=sig,
            log_tail=tail,
        )


def decode_error(error: dict[str, Any]) -> BaseException:
    """The exception a worker reported, rebuilt: golive's own errors as themselves, anything else as a bug."""
    if error.get("golive"):
        from golive import errors

        cls = getattr(errors, error["class"], None)
        if not (isinstance(cls, type) and issubclass(cls, GoliveError)):
            cls = GoliveError
        exc = cls.__new__(cls)
        Exception.__init__(exc, error["message"])
        exc.message, exc.hint = error["message"], error.get("hint")
        for key, value in (error.get("fields") or {}).items():
            setattr(exc, key, value)
        return exc
    return WorkerBugError(f"{error['class']}: {error['message']}\n\nin the worker process:\n{error.get('traceback', '')}")


def encode_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GoliveError):
        fields = {}
        for key, value in vars(exc).items():
            if key in ("message", "hint"):
                continue
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            fields[key] = value
        return {"golive": True, "class": type(exc).__name__, "message": exc.message, "hint": exc.hint, "fields": fields}
    return {
        "golive": False,
        "class": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": traceback.format_exc(),
    }


def call(target: str, kwargs: dict[str, Any], *, what: str, on_event: Callable | None = None, cancel=None) -> Any:
    """Run ``target(ctx=..., **kwargs)`` in a worker process and return what it returned (JSON).

    Events reach ``on_event`` in this thread; golive log records are re-emitted here. Ctrl-C (or
    ``cancel``, a :class:`golive.events.CancelToken`) asks the step to stop, and kills it after
    the grace period.
    """
    from golive.events import Event

    step = StepProcess(target, kwargs, log_level=logging.getLogger("golive").getEffectiveLevel()).start()
    interrupted: BaseException | None = None
    exited_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set() and step.cancel_sent_at is None:
                step.cancel()
            if step.cancel_sent_at is not None and now - step.cancel_sent_at > GRACE_SECONDS:
                step.kill()
            if exited_at is None and step.poll() is not None:
                exited_at = now
            try:
                msg = step.messages.get(timeout=0.2)
            except queue.Empty:
                if exited_at is not None and now - exited_at > 2.0:
                    break  # the step has ended, but a process it started (and left running) holds the pipe
                continue
            except KeyboardInterrupt as exc:
                if interrupted is not None:  # a second Ctrl-C: stop waiting
                    step.kill()
                interrupted = exc
                step.cancel()
                continue
            if msg is None:
                break
            kind = msg.get("kind")
            if kind == "event" and on_event is not None:
                on_event(Event.model_validate(msg["event"]))
            elif kind == "log":
                logger = logging.getLogger(msg["name"])
                if logger.isEnabledFor(msg["levelno"]):
                    logger.handle(logger.makeRecord(msg["name"], msg["levelno"], "(worker)", 0, msg["msg"], (), None))
    except BaseException:
        step.finish()
        raise
    step.finish()
    outcome = step.outcome
    if interrupted is not None:
        raise interrupted
    if outcome is None:
        if step.cancel_sent_at is not None:
            raise CancelledError("cancelled", hint="the step was stopped; nothing it wrote looks finished")
        raise step.crash_error(what)
    if outcome["kind"] == "error":
        raise decode_error(outcome["error"])
    return outcome["value"]


# ---------------------------------------------------------------- the child


class _ProtocolHandler(logging.Handler):
    def __init__(self, send: Callable[[dict], None]) -> None:
        super().__init__()
        self.send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.send({"kind": "log", "name": record.name, "levelno": record.levelno, "msg": record.getMessage()})
        except Exception:  # a log record must never break the step
            pass


def _watch_parent(cancel, grace: float, control: int, pending: bytes) -> None:
    """Read the control channel: ``cancel`` lines; end of file means the parent is gone."""
    data = pending
    while True:
        *lines, data = data.split(b"\n")
        if any(line.strip() == b"cancel" for line in lines):
            cancel.set("cancelled")
        try:
            chunk = os.read(control, 4096)
        except OSError:
            chunk = b""
        if not chunk:
            break
        data += chunk
    cancel.set("the process that started this step went away")
    time.sleep(grace)
    os.killpg(os.getpgrp(), signal.SIGKILL)  # it did not stop in time: end it and everything it started


def _close_quietly(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _read_task(fd: int) -> tuple[dict, bytes]:
    """The task (the first line on stdin) and whatever control bytes came after it."""
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise SystemExit("golive._worker: no task on stdin")
        data += chunk
    line, _, rest = data.partition(b"\n")
    return json.loads(line), rest


def main() -> None:
    from golive._imports import load_object
    from golive.events import CancelToken, StepContext

    # The protocol and the control channel move to private descriptors; fd 0 becomes /dev/null and fd 1
    # the log, so what the step prints never enters the protocol, and a process the step forks (whose
    # bootstrap closes sys.stdin) neither blocks on our reader nor keeps our pipes open.
    task, pending = _read_task(0)
    control, proto = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    os.register_at_fork(after_in_child=lambda: _close_quietly(control, proto))
    lock = threading.Lock()

    def send(msg: dict) -> None:
        data = (json.dumps(msg, default=str) + "\n").encode()
        with lock:
            while data:
                data = data[os.write(proto, data) :]

    sys.path[:] = task["sys_path"]
    cancel = CancelToken()
    threading.Thread(target=_watch_parent, args=(cancel, task["grace"], control, pending), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: cancel.set("terminated"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; Ctrl-C reaches it, and it cancels us

    golive_log = logging.getLogger("golive")
    golive_log.setLevel(task["log_level"])
    golive_log.addHandler(_ProtocolHandler(send))
    golive_log.propagate = False
    if task["echo_log"]:  # a job's log file: readable lines with times
        echo = logging.StreamHandler(sys.stderr)
        echo.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        golive_log.addHandler(echo)

    def on_event(event) -> None:
        send({"kind": "event", "event": event.model_dump(mode="json")})

    ctx = StepContext(on_event=on_event, cancel=cancel, job_id=task["job_id"], keep_failed=task["keep_failed"])
    code = 0
    try:
        fn = load_object(task["target"])
        send({"kind": "result", "value": fn(ctx=ctx, **task["kwargs"])})
    except BaseException as exc:  # every failure goes to the parent, which raises it there
        if not isinstance(exc, GoliveError):
            traceback.print_exc()
        try:
            send({"kind": "error", "error": encode_error(exc)})
        except OSError:  # the parent is gone
            pass
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code)  # no waiting on threads a framework left running


if __name__ == "__main__":
    main()
