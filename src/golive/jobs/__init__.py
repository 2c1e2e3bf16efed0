"""golive's durable local job queue: submit a JobSpec, let workers run it, watch, cancel, retry.

The store is a SQLite file under the golive home (``home=``, ``GOLIVE_HOME``, default ``~/.golive``);
workers (``golive worker``, or the web app's) run each job in a process of its own. A job whose worker
dies is marked interrupted, never silently run again; ``retry`` runs it as a new attempt that resumes from
the run folder's finished steps.

    job_id = golive.jobs.submit("job.yaml")
    golive.jobs.wait(job_id).state        # 'succeeded' once a worker ran it
"""

from __future__ import annotations

import builtins
import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from golive._imports import split_file_attr
from golive.errors import GoliveError, JobError, JobTimeoutError
from golive.jobs.store import TERMINAL, Attempt, JobRecord, JobStore

__all__ = [
    "TERMINAL",
    "Attempt",
    "JobRecord",
    "JobStore",
    "attempts",
    "cancel",
    "get",
    "home_dir",
    "list",
    "log_text",
    "retry",
    "run_worker",
    "submit",
    "wait",
]


def home_dir(home: str | Path | None = None) -> Path:
    """The golive home: ``home``, else $GOLIVE_HOME, else ~/.golive."""
    return Path(home or os.environ.get("GOLIVE_HOME") or Path.home() / ".golive").expanduser().absolute()


@contextlib.contextmanager
def _store(home: str | Path | None, *, recover: bool = False) -> Iterator[JobStore]:
    """The store of ``home``; ``recover``: first mark interrupted the running jobs whose worker is gone."""
    from golive.jobs.store import this_host

    store = JobStore(home_dir(home))
    try:
        if recover:
            store.recover(this_host())
        yield store
    finally:
        store.close()


def _absolute_spec(spec) -> Any:
    """A JobSpec with every path absolute: a job runs later, from another process and folder."""
    from golive.spec import JobSpec, load_job, map_job_paths

    if isinstance(spec, (str, Path)):
        job = load_job(spec)  # relative paths are taken from the job file's folder
    elif isinstance(spec, dict):
        try:
            job = JobSpec.model_validate(spec)
        except ValueError as exc:
            raise GoliveError(f"not a valid JobSpec: {exc}") from None
    else:
        job = spec

    def absolute(p: str) -> str:
        head, attr = split_file_attr(p)
        return str(Path(head).absolute()) + attr if Path(head).exists() else p

    job = map_job_paths(job, absolute)
    job.output_dir = str(Path(job.output_dir).absolute())
    if job.tune_dir:
        job.tune_dir = str(Path(job.tune_dir).absolute())
    return job


def submit(spec, *, home: str | Path | None = None, name: str = "") -> str:
    """Queue a job (a JobSpec, its dict, or a YAML/JSON job file) and return its id."""
    job = _absolute_spec(spec)
    with _store(home) as store:
        return store.submit(job.model_dump(mode="json"), run_dir=job.output_dir, name=name or Path(job.output_dir).name).id


def get(job_id: str, *, home: str | Path | None = None) -> JobRecord:
    """The job's record; a running job whose worker is gone shows as interrupted."""
    with _store(home, recover=True) as store:
        return store.get(job_id)


def list(*, home: str | Path | None = None, states: builtins.list[str] | None = None) -> builtins.list[JobRecord]:
    """Every job, oldest first (or those in ``states``)."""
    from golive.jobs.store import JobList

    with _store(home, recover=True) as store:
        return JobList(store.list(states))


def wait(job_id: str, *, home: str | Path | None = None, timeout: float | None = None, poll: float = 0.5) -> JobRecord:
    """Block until the job is finished (succeeded, failed, cancelled or interrupted); JobTimeoutError (a
    TimeoutError) after ``timeout`` seconds."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        record = get(job_id, home=home)
        if record.state in TERMINAL:
            return record
        if end is not None and time.monotonic() > end:
            raise JobTimeoutError(
                f"job {record.id} is still {record.state} after {timeout:g} s",
                hint="is a worker running? golive worker --home " + str(home_dir(home)),
            )
        time.sleep(poll)


def cancel(job_id: str, *, home: str | Path | None = None) -> JobRecord:
    """Cancel a queued job at once, or ask a running one's worker to stop it (killed after a grace period)."""
    from golive.jobs.store import this_host

    with _store(home) as store:
        record = store.request_cancel(job_id)
        store.recover(this_host())  # a running job whose worker is gone is cancelled now, not waited for
        return store.get(record.id)


def retry(job_id: str, *, home: str | Path | None = None) -> JobRecord:
    """Queue a failed, cancelled or interrupted job again: a new attempt that skips its finished steps."""
    with _store(home) as store:
        return store.retry(job_id)


def attempts(job_id: str, *, home: str | Path | None = None) -> builtins.list[Attempt]:
    with _store(home) as store:
        return store.attempts(job_id)


def log_text(job_id: str, *, home: str | Path | None = None) -> str:
    """The job's log (every attempt, each under a header line)."""
    path = Path(get(job_id, home=home).log_path)
    return path.read_text(errors="replace") if path.is_file() else ""


def run_worker(*, home: str | Path | None = None, concurrency: int = 1, exit_when_idle: bool = False) -> None:
    """Run a worker pool in this thread until it is stopped (or, with ``exit_when_idle``, the queue is empty)."""
    from golive.jobs.pool import WorkerPool

    if concurrency < 1:
        raise JobError("--concurrency must be at least 1")
    WorkerPool(home_dir(home), concurrency, exit_when_idle=exit_when_idle).run()
