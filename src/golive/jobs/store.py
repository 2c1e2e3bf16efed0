"""The job store: one SQLite file (WAL mode) under the golive home.

It holds state, not results: the spec, the state (queued, running, succeeded, failed, cancelled,
interrupted), attempts, times, the worker pool and job process that hold a running job, its heartbeat,
the run folder, the log file, the error and a short summary. Results live in the run folder.

Every change is one transaction; claiming a job is ``BEGIN IMMEDIATE`` + a conditional update, so two
workers never run the same job. A running job whose pool is gone (its pid dead on this machine, or its
heartbeat stale) becomes ``interrupted``: not lost, not silently run again; ``retry`` queues it again.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from golive._html import box, escape, table, when
from golive.errors import JobError
from golive.spec import JobSpec

__all__ = ["TERMINAL", "Attempt", "JobRecord", "JobStore", "State", "pid_alive", "this_host"]

State = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "interrupted"})
RETRYABLE = frozenset({"failed", "cancelled", "interrupted"})
STALE_AFTER = 30.0  # seconds without a heartbeat after which another machine's running job counts as interrupted
_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    host TEXT,
    worker_pid INTEGER,
    job_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    run_dir TEXT NOT NULL,
    log_path TEXT NOT NULL,
    error TEXT,
    signal TEXT,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    host TEXT,
    worker_pid INTEGER,
    job_pid INTEGER,
    error TEXT,
    PRIMARY KEY (job_id, attempt)
);
"""


class JobRecord(BaseModel):
    """One job as the store holds it."""

    id: str
    name: str = ""
    state: State
    attempt: int = Field(description="attempts started so far (0 while first queued)")
    spec: JobSpec
    created: float
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    host: str | None = None
    worker_pid: int | None = Field(default=None, description="the worker pool process running it")
    job_pid: int | None = Field(default=None, description="the job's own process (leader of its process group)")
    cancel_requested: bool = False
    run_dir: str
    log_path: str
    error: str | None = None
    signal: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        return (self.finished or time.time()) - self.started

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def _repr_html_(self) -> str:
        return _jobs_html([self], f"job {self.id}")


class JobList(list):
    """A list of JobRecords that shows as one table in a notebook."""

    def _repr_html_(self) -> str:
        return _jobs_html(self, f"{len(self)} job(s)")


class Attempt(BaseModel):
    job_id: str
    attempt: int
    state: str
    started: float
    finished: float | None = None
    host: str | None = None
    worker_pid: int | None = None
    job_pid: int | None = None
    error: str | None = None


def this_host() -> str:
    """This machine, as of this boot, and this process-id namespace: a pid only means something there
    (two containers of one pod share the hostname and the kernel, not their pids)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "?"
    try:
        namespace = os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]")
    except OSError:
        namespace = "?"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not yet reaped, does not)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class JobStore:
    """The jobs of one golive home. Safe to use from several threads and processes."""

    def __init__(self, home: str | Path) -> None:
        self.home = Path(home).expanduser().absolute()
        self.path = self.home / "jobs.db"
        self._lock = threading.RLock()
        try:
            (self.home / "logs").mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout=30000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.execute("PRAGMA journal_mode=WAL")
                with self._tx() as db:
                    if db.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                db.execute(statement)
                        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
            elif version > _SCHEMA_VERSION:
                raise JobError(
                    f"{self.path} was written by a newer golive (job store schema {version})",
                    hint="upgrade golive, or use another --home",
                )
        except (OSError, sqlite3.Error) as exc:
            raise JobError(
                f"cannot open the job store {self.path}: {exc}", hint="give a --home folder you can write to (or set GOLIVE_HOME)"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (BEGIN IMMEDIATE): no two writers interleave."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise JobError(
                    f"the job store {self.path} stayed busy: {exc}", hint="another process holds it; try again"
                ) from None
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        data = dict(row)
        data.pop("seq", None)
        data["spec"] = json.loads(data["spec"])
        data["summary"] = json.loads(data["summary"] or "{}")
        data["cancel_requested"] = bool(data["cancel_requested"])
        return JobRecord.model_validate(data)

    # ------------------------------------------------------------ reading

    def resolve(self, job_id: str) -> str:
        """A full job id from an id or a unique prefix of one."""
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE id LIKE ? || '%' LIMIT 2", (job_id,)).fetchall()
        if not rows:
            raise JobError(
                f"no job {job_id} in {self.home}", hint="golive jobs list shows the jobs (with --home if you used one)"
            )
        if len(rows) > 1:
            raise JobError(f"job id prefix {job_id} is ambiguous", hint="give more characters of the id")
        return rows[0][0]

    def get(self, job_id: str) -> JobRecord:
        full = self.resolve(job_id)
        with self._lock:
            return self._record(self._db.execute("SELECT * FROM jobs WHERE id=?", (full,)).fetchone())

    def list(self, states: list[str] | None = None) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs", tuple[str, ...]()
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(states)
        with self._lock:
            return [self._record(r) for r in self._db.execute(query + " ORDER BY seq", args).fetchall()]

    def attempts(self, job_id: str) -> builtins.list[Attempt]:  # builtins: `list` here is the method above
        full = self.resolve(job_id)
        with self._lock:
            rows = self._db.execute("SELECT * FROM attempts WHERE job_id=? ORDER BY attempt", (full,)).fetchall()
        return [Attempt.model_validate(dict(r)) for r in rows]

    # ------------------------------------------------------------ the user's actions

    def submit(self, spec: dict[str, Any], run_dir: str, name: str = "") -> JobRecord:
        job_id = uuid.uuid4().hex[:12]
        with self._tx() as db:
            busy = db.execute(
                "SELECT id, state FROM jobs WHERE run_dir=? AND state IN ('queued', 'running')", (run_dir,)
            ).fetchone()
            if busy:
                raise JobError(
                    f"job {busy['id']} ({busy['state']}) already writes {run_dir}",
                    hint=f"give this job another output_dir, or wait for that one (golive jobs show {busy['id']})",
                )
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "INSERT INTO jobs (id, seq, name, spec, state, created, run_dir, log_path) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                (job_id, seq, name, json.dumps(spec), time.time(), run_dir, str(self.home / "logs" / f"{job_id}.log")),
            )
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is marked, and its worker stops it."""
        full = self.resolve(job_id)
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (full,)).fetchone()
            if row["state"] == "queued":
                db.execute(
                    "UPDATE jobs SET state='cancelled', finished=?, error='cancelled before it started' WHERE id=?",
                    (time.time(), full),
                )
            elif row["state"] == "running":
                db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (full,))
            else:
                raise JobError(f"job {full} is already {row['state']}", hint="only queued and running jobs can be cancelled")
        return self.get(full)

    def retry(self, job_id: str) -> JobRecord:
        """Queue a failed, cancelled or interrupted job again; its next attempt resumes from the finished steps."""
        full = self.resolve(job_id)
        with self._tx() as db:
            row = db.execute("SELECT state, run_dir FROM jobs WHERE id=?", (full,)).fetchone()
            if row["state"] not in RETRYABLE:
                raise JobError(f"job {full} is {row['state']}", hint="only failed, cancelled or interrupted jobs can be retried")
            busy = db.execute(
                "SELECT id FROM jobs WHERE run_dir=? AND id<>? AND state IN ('queued', 'running')", (row["run_dir"], full)
            ).fetchone()
            if busy:
                raise JobError(f"job {busy['id']} is using {row['run_dir']} now", hint="wait for it, or cancel it")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "UPDATE jobs SET state='queued', seq=?, cancel_requested=0, error=NULL, signal=NULL, "
                "finished=NULL, started=NULL, heartbeat=NULL, worker_pid=NULL WHERE id=?",
                (seq, full),
            )
        return self.get(full)

    # ------------------------------------------------------------ the worker's side

    def claim(self, host: str, worker_pid: int) -> JobRecord | None:
        """Take the oldest queued job for this worker, atomically; None when nothing can start now.

        A retried job whose previous attempt's process still runs on this machine (a worker killed a moment
        ago, its job still stopping) waits for it: two attempts never write one run folder at once."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT id, attempt, host, job_pid FROM jobs WHERE state='queued' ORDER BY seq").fetchall()
            row = next((r for r in rows if not (r["host"] == host and _group_alive(r["job_pid"]))), None)
            if row is None:
                return None
            attempt = row["attempt"] + 1
            db.execute(
                "UPDATE jobs SET state='running', attempt=?, started=?, heartbeat=?, host=?, worker_pid=?, "
                "job_pid=NULL WHERE id=? AND state='queued'",
                (attempt, now, now, host, worker_pid, row["id"]),
            )
            db.execute(
                "INSERT INTO attempts (job_id, attempt, state, started, host, worker_pid) VALUES (?, ?, 'running', ?, ?, ?)",
                (row["id"], attempt, now, host, worker_pid),
            )
        return self.get(row["id"])

    def started(self, job_id: str, attempt: int, job_pid: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET job_pid=? WHERE id=? AND attempt=?", (job_pid, job_id, attempt))
            db.execute("UPDATE attempts SET job_pid=? WHERE job_id=? AND attempt=?", (job_pid, job_id, attempt))

    def heartbeat(self, job_ids: builtins.list[str], worker_pid: int) -> tuple[builtins.list[str], builtins.list[str]]:
        """Refresh the heartbeat of these running jobs. Returns (those whose cancel was asked for, those that
        are no longer this worker's: recovered as interrupted meanwhile, so their processes must stop)."""
        if not job_ids:
            return [], []
        marks = ",".join("?" * len(job_ids))
        with self._tx() as db:
            db.execute(
                f"UPDATE jobs SET heartbeat=? WHERE state='running' AND worker_pid=? AND id IN ({marks})",
                (time.time(), worker_pid, *job_ids),
            )
            rows = db.execute(
                f"SELECT id, state, worker_pid, cancel_requested FROM jobs WHERE id IN ({marks})", job_ids
            ).fetchall()
        cancel = [r["id"] for r in rows if r["cancel_requested"]]
        mine = {r["id"] for r in rows if r["state"] == "running" and r["worker_pid"] == worker_pid}
        return cancel, [j for j in job_ids if j not in mine]

    def finish(
        self,
        job_id: str,
        attempt: int,
        worker_pid: int,
        state: State,
        *,
        error: str | None = None,
        signal: str | None = None,
        summary: dict[str, Any] | None = None,
    ) -> bool:
        """Record how an attempt ended; False when the job is no longer this worker's (it was recovered)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "UPDATE jobs SET state=?, finished=?, error=?, signal=?, summary=? "
                "WHERE id=? AND attempt=? AND state='running' AND worker_pid=?",
                (state, now, error, signal, json.dumps(summary or {}), job_id, attempt, worker_pid),
            )
            if cur.rowcount == 1:
                db.execute(
                    "UPDATE attempts SET state=?, finished=?, error=? WHERE job_id=? AND attempt=?",
                    (state, now, error, job_id, attempt),
                )
        return cur.rowcount == 1

    def recover(self, host: str, *, stale_after: float = STALE_AFTER) -> builtins.list[str]:
        """Mark the running jobs whose worker is gone: interrupted (cancelled, when that was asked for).

        Gone means: on this machine, its worker process is dead; elsewhere, its heartbeat is older than
        ``stale_after`` (a worker on this machine whose process lives is never second-guessed)."""

        def lost(r) -> bool:
            if r["host"] == host:
                return not pid_alive(r["worker_pid"])
            return time.time() - (r["heartbeat"] or 0) > stale_after

        with self._lock:
            query = "SELECT id, attempt, host, worker_pid, heartbeat, cancel_requested FROM jobs WHERE state='running'"
            if not any(lost(r) for r in self._db.execute(query).fetchall()):
                return []  # the usual case: a read, no write transaction
        found = []
        with self._tx() as db:
            for r in db.execute(query).fetchall():
                if not lost(r):
                    continue
                if r["cancel_requested"]:
                    state, why = "cancelled", "cancelled on request (its worker stopped while it ran)"
                else:
                    state = "interrupted"
                    why = (
                        f"interrupted: its worker (pid {r['worker_pid']} on {r['host']}) stopped while it ran; "
                        "golive jobs retry resumes it from its finished steps"
                    )
                now = time.time()
                db.execute(
                    "UPDATE jobs SET state=?, finished=?, error=? WHERE id=? AND state='running'", (state, now, why, r["id"])
                )
                db.execute(
                    "UPDATE attempts SET state=?, finished=?, error=? WHERE job_id=? AND attempt=?",
                    (state, now, why, r["id"], r["attempt"]),
                )
                found.append(r["id"])
        return found


def _group_alive(pgid: int | None) -> bool:
    """Whether a job process (the leader of its own process group) still runs on this machine."""
    if pgid is None or not pid_alive(pgid):
        return False
    try:
        return os.getpgid(pgid) == pgid
    except OSError:
        return False


_JOB_HEADERS = ["id", "name", "state", "attempt", "created", "duration", "result", "error"]


def _job_row(j: JobRecord) -> tuple:

    duration = f"{j.duration:.1f} s" if j.duration is not None else ""
    result = (j.summary.get("best") and f"{j.summary.get('speedup', 0):.2f}× · {j.summary['best']}") or j.summary.get(
        "framework", ""
    )
    return (j.id, j.name, j.state, j.attempt, when(j.created), duration, result, j.error or "")


def _jobs_html(jobs: list[JobRecord], title: str) -> str:

    return box(escape(title), table(_JOB_HEADERS, [_job_row(j) for j in jobs], "class='jobs'"))
