"""Workers: claim queued jobs and run each in a process of its own.

``golive worker`` runs a pool in the foreground; the web app runs one in a thread. The pool claims jobs
atomically from the store, starts one process per job (the leader of its own process group, its output in
the job's log file), refreshes the heartbeat of its jobs, passes on cancel requests (the job stops at its
next check, or its process group is killed after the grace period) and records how each attempt ended:
succeeded, failed (with the error, or the signal and the log's last lines when the process died), cancelled,
or interrupted (the pool itself was stopped). A job whose pool dies is found by the next pool's recovery.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from golive._worker import GRACE_SECONDS, StepProcess, decode_error
from golive.errors import JobError
from golive.jobs.store import JobRecord, JobStore, State, this_host

__all__ = ["WorkerPool"]

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
RECOVER_SECONDS = 10.0


@dataclass
class _Running:
    job: JobRecord
    process: StepProcess
    cancel_requested: bool = False


class WorkerPool:
    """Run up to ``concurrency`` jobs at a time from the store under ``home`` until stopped."""

    def __init__(
        self,
        home: str | Path,
        concurrency: int = 1,
        *,
        poll: float = 0.3,
        grace: float = GRACE_SECONDS,
        exit_when_idle: bool = False,
    ) -> None:
        if concurrency < 1:
            raise JobError("concurrency must be at least 1")
        self.store = JobStore(home)
        self.concurrency = concurrency
        self.poll, self.grace, self.exit_when_idle = poll, grace, exit_when_idle
        self.host, self.pid = this_host(), os.getpid()
        self.running: dict[str, _Running] = {}
        self._draining = threading.Event()
        self._stopping = threading.Event()  # stop now: running jobs are stopped and become interrupted

    def drain(self) -> None:
        """Take no new jobs; return once the running ones have finished."""
        self._draining.set()

    def stop(self) -> None:
        """Stop the running jobs (they become interrupted, and resume on retry) and return."""
        self._draining.set()
        self._stopping.set()

    def run(self) -> None:
        lost = self.store.recover(self.host)
        if lost:
            log.warning("marked %d job(s) interrupted: their worker stopped while they ran (%s)", len(lost), ", ".join(lost))
        last_beat = last_recover = time.monotonic()
        try:
            while True:
                self._reap()
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_SECONDS:
                    self._beat()
                    last_beat = now
                if now - last_recover >= RECOVER_SECONDS:
                    self.store.recover(self.host)
                    last_recover = now
                self._cancel_overdue()
                if self._stopping.is_set():
                    for r in self.running.values():
                        if r.process.cancel_sent_at is None:  # once: the grace period counts from then
                            r.process.cancel()
                idle = not self._draining.is_set() and not self._claim()
                if not self.running and (self._draining.is_set() or (self.exit_when_idle and idle)):
                    break
                time.sleep(self.poll)
        finally:
            for r in self.running.values():  # only reached on an error of the pool itself: leave nothing running
                r.process.kill()
            self.store.close()

    # ------------------------------------------------------------ steps of the loop

    def _claim(self) -> bool:
        """Start jobs while there is room; False when none was waiting."""
        claimed = False
        while len(self.running) < self.concurrency:
            job = self.store.claim(self.host, self.pid)
            if job is None:
                return claimed
            claimed = True
            self._start(job)
        return True

    def _start(self, job: JobRecord) -> None:
        log_path = Path(job.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write(
                f"\n=== attempt {job.attempt} of job {job.id} started {time.strftime('%Y-%m-%d %H:%M:%S')} "
                f"by worker {self.pid} on {self.host} ===\n"
            )
        process = StepProcess(
            "golive.jobs.runner:job_entry",
            {"job": job.spec.model_dump(mode="json")},
            log_path=log_path,
            job_id=job.id,
            keep_failed=True,
            echo_log=True,
            keep_messages=False,
        )
        try:
            process.start()
        except OSError as exc:
            self.store.finish(job.id, job.attempt, self.pid, "failed", error=f"cannot start the job's process: {exc}")
            return
        pid = process.pid
        assert pid is not None  # start() returned, so the child exists
        self.store.started(job.id, job.attempt, pid)
        self.running[job.id] = _Running(job, process)
        log.info("job %s attempt %d started (pid %d)", job.id, job.attempt, pid)

    def _beat(self) -> None:
        cancel, lost = self.store.heartbeat(list(self.running), self.pid)
        for job_id in cancel:
            r = self.running.get(job_id)
            if r is not None and not r.cancel_requested:
                r.cancel_requested = True
                log.info("job %s: cancel requested", job_id)
                r.process.cancel()
        for job_id in lost:  # recovered as interrupted by someone who thought this worker gone: stop it now
            r = self.running.pop(job_id, None)
            if r is not None:
                log.warning("job %s is no longer this worker's (marked interrupted meanwhile): stopping it", job_id)
                r.process.finish()

    def _cancel_overdue(self) -> None:
        for r in self.running.values():
            sent = r.process.cancel_sent_at
            if sent is not None and time.monotonic() - sent > self.grace and r.process.poll() is None:
                log.warning("job %s did not stop within %.0f s: killing its process group", r.job.id, self.grace)
                r.process.kill()

    def _reap(self) -> None:
        for job_id, r in list(self.running.items()):
            if r.process.poll() is None:
                continue
            r.process.reader_done.wait(5)  # its last messages (the outcome) may still be on their way
            r.process.finish()  # nothing it started outlives it: the end is recorded once its processes are gone
            self._record_end(r)
            del self.running[job_id]

    def _record_end(self, r: _Running) -> None:
        job, process = r.job, r.process
        outcome = process.outcome
        state: State = "failed"
        error, sig, summary = None, None, {}
        cancelled = outcome is not None and outcome["kind"] == "error" and outcome["error"].get("class") == "CancelledError"
        if outcome is not None and outcome["kind"] == "result":
            value = outcome["value"]
            summary = value.get("summary", {})
            if value.get("passed") is False:
                error = "verification failed: the ONNX model does not compute what the source computes (see its verify report)"
            else:
                state = "succeeded"
        elif cancelled or (outcome is None and (r.cancel_requested or self._stopping.is_set())):
            if r.cancel_requested:
                state, error = "cancelled", "cancelled on request"
            else:
                state, error = (
                    "interrupted",
                    "interrupted: its worker was stopped; golive jobs retry resumes it from its finished steps",
                )
        elif outcome is not None:
            error = str(decode_error(outcome["error"]))
        else:
            crash = process.crash_error(f"job {job.id}")
            error, sig = crash.message, crash.signal
        if not self.store.finish(job.id, job.attempt, self.pid, state, error=error, signal=sig, summary=summary):
            log.warning("job %s was no longer this worker's when it ended (recovered by another worker?)", job.id)
        log.info("job %s attempt %d %s%s", job.id, job.attempt, state, f": {error}" if error else "")


def install_signal_handlers(pool: WorkerPool) -> None:
    """Ctrl-C / SIGTERM once: finish the running jobs, take no new ones. Twice: stop them (interrupted)."""

    def handler(signum, frame) -> None:
        if pool._draining.is_set():
            log.warning("stopping the running jobs; they become interrupted (golive jobs retry resumes them)")
            pool.stop()
        else:
            log.warning("finishing the running jobs, taking no new ones (again to stop them now)")
            pool.drain()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
