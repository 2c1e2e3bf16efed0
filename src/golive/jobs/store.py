"""The job store: one SQLite file (WAL mode) under the golive home.

It holds state, not results: the spec, the state (queued, running, succeeded, failed, cancelled,
interrupted), attempts, times, the worker pool and job process that hold a running job, its heartbeat,
the run folder, the log file, the error and a short summary. Results live in the run folder.

Every change is one transaction; claiming a job is ``BEGIN IMMEDIATE`` + a conditional update, so two
workers never run the same job. A running job whose pool is gone (its pid dead on this machine, or its
heartbeat stale) becomes ``interrupted``: not lost, not silently run again; ``retry`` queues it again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, Field

from golive.errors import JobError

__all__ = ["JobRecord", "Attempt", "JobStore", "State", "TERMINAL", "this_host", "pid_alive"]

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class JobRecord(BaseModel):
    """One job as the store holds it."""

    id: str
    name: str = ""
    state: State
    attempt: int = Field(description="attempts started so far (0 while first queued)")
    spec: dict[str, Any]
    created: float
    started: float | None = None
    finished: float | None = None
    heartbeat: float | None = None
    host: str | None = None
    worker_pid: int | None = Field(None, description="the worker pool process running it")
    job_pid: int | None = Field(None, description="the job's own process (leader of its process group)")
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
    """This machine, as of this boot: a pid is only meaningful on the host and boot that gave it."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        boot = "?"
    return f"{socket.gethostname()}/{boot}"


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
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        self.path = self.home / "jobs.db"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_SCHEMA_VERSION),))
            row = self._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if int(row[0]) > _SCHEMA_VERSION:
            raise JobError(f"{self.path} was written by a newer golive (job store schema {row[0]})",
                           hint="upgrade golive, or use another --home")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken before reading (BEGIN IMMEDIATE): no two writers interleave."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
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
            raise JobError(f"no job {job_id} in {self.home}", hint="golive jobs list shows the jobs (with --home if you used one)")
        if len(rows) > 1:
            raise JobError(f"job id prefix {job_id} is ambiguous", hint="give more characters of the id")
        return rows[0][0]

    def get(self, job_id: str) -> JobRecord:
        full = self.resolve(job_id)
        with self._lock:
            return self._record(self._db.execute("SELECT * FROM jobs WHERE id=?", (full,)).fetchone())

    def list(self, states: list[str] | None = None) -> list[JobRecord]:
        query, args = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE state IN ({','.join('?' * len(states))})"
            args = tuple(states)
        with self._lock:
            return [self._record(r) for r in self._db.execute(query + " ORDER BY seq", args).fetchall()]

    def attempts(self, job_id: str) -> list[Attempt]:
        full = self.resolve(job_id)
        with self._lock:
            rows = self._db.execute("SELECT * FROM attempts WHERE job_id=? ORDER BY attempt", (full,)).fetchall()
        return [Attempt.model_validate(dict(r)) for r in rows]

    # ------------------------------------------------------------ the user's actions

    def submit(self, spec: dict[str, Any], run_dir: str, name: str = "") -> JobRecord:
        job_id = uuid.uuid4().hex[:12]
        with self._tx() as db:
            busy = db.execute("SELECT id, state FROM jobs WHERE run_dir=? AND state IN ('queued', 'running')",
                              (run_dir,)).fetchone()
            if busy:
                raise JobError(f"job {busy['id']} ({busy['state']}) already writes {run_dir}",
                               hint="give this job another output_dir, or wait for that one (golive jobs show "
                                    f"{busy['id']})")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute("INSERT INTO jobs (id, seq, name, spec, state, created, run_dir, log_path) "
                       "VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)",
                       (job_id, seq, name, json.dumps(spec), time.time(), run_dir,
                        str(self.home / "logs" / f"{job_id}.log")))
        return self.get(job_id)

    def request_cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is marked, and its worker stops it."""
        full = self.resolve(job_id)
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id=?", (full,)).fetchone()
            if row["state"] == "queued":
                db.execute("UPDATE jobs SET state='cancelled', finished=?, error='cancelled before it started' "
                           "WHERE id=?", (time.time(), full))
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
            busy = db.execute("SELECT id FROM jobs WHERE run_dir=? AND id<>? AND state IN ('queued', 'running')",
                              (row["run_dir"], full)).fetchone()
            if busy:
                raise JobError(f"job {busy['id']} is using {row['run_dir']} now", hint="wait for it, or cancel it")
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute("UPDATE jobs SET state='queued', seq=?, cancel_requested=0, error=NULL, signal=NULL, "
                       "finished=NULL, started=NULL, heartbeat=NULL, host=NULL, worker_pid=NULL, job_pid=NULL "
                       "WHERE id=?", (seq, full))
        return self.get(full)

    # ------------------------------------------------------------ the worker's side

    def claim(self, host: str, worker_pid: int) -> JobRecord | None:
        """Take the oldest queued job for this worker, atomically; None when nothing is queued."""
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT id, attempt FROM jobs WHERE state='queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            attempt = row["attempt"] + 1
            db.execute("UPDATE jobs SET state='running', attempt=?, started=?, heartbeat=?, host=?, worker_pid=?, "
                       "job_pid=NULL WHERE id=? AND state='queued'", (attempt, now, now, host, worker_pid, row["id"]))
            db.execute("INSERT INTO attempts (job_id, attempt, state, started, host, worker_pid) "
                       "VALUES (?, ?, 'running', ?, ?, ?)", (row["id"], attempt, now, host, worker_pid))
        return self.get(row["id"])

    def started(self, job_id: str, attempt: int, job_pid: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET job_pid=? WHERE id=? AND attempt=?", (job_pid, job_id, attempt))
            db.execute("UPDATE attempts SET job_pid=? WHERE job_id=? AND attempt=?", (job_pid, job_id, attempt))

    def heartbeat(self, job_ids: list[str], worker_pid: int) -> list[str]:
        """Refresh the heartbeat of these running jobs; returns those whose cancel was asked for."""
        if not job_ids:
            return []
        marks = ",".join("?" * len(job_ids))
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET heartbeat=? WHERE state='running' AND worker_pid=? AND id IN ({marks})",
                       (time.time(), worker_pid, *job_ids))
            rows = db.execute(f"SELECT id FROM jobs WHERE cancel_requested=1 AND id IN ({marks})", job_ids).fetchall()
        return [r[0] for r in rows]

    def finish(self, job_id: str, attempt: int, worker_pid: int, state: State, *, error: str | None = None,
               signal: str | None = None, summary: dict[str, Any] | None = None) -> bool:
        """Record how an attempt ended; False when the job is no longer this worker's (it was recovered)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET state=?, finished=?, error=?, signal=?, summary=? "
                             "WHERE id=? AND attempt=? AND state='running' AND worker_pid=?",
                             (state, now, error, signal, json.dumps(summary or {}), job_id, attempt, worker_pid))
            db.execute("UPDATE attempts SET state=?, finished=?, error=? WHERE job_id=? AND attempt=?",
                       (state, now, error, job_id, attempt))
        return cur.rowcount == 1

    def recover(self, host: str, *, stale_after: float = STALE_AFTER) -> list[str]:
        """Mark interrupted the running jobs whose worker is gone: dead on this machine, or silent too long."""
        now = time.time()
        with self._tx() as db:
            rows = db.execute("SELECT id, attempt, host, worker_pid, heartbeat FROM jobs WHERE state='running'").fetchall()
            lost = []
            for r in rows:
                gone = (r["host"] == host and not pid_alive(r["worker_pid"])) or (now - (r["heartbeat"] or 0) > stale_after)
                if gone:
                    why = (f"interrupted: its worker (pid {r['worker_pid']} on {r['host']}) stopped while it ran; "
                           "golive jobs retry resumes it from its finished steps")
                    db.execute("UPDATE jobs SET state='interrupted', finished=?, error=? WHERE id=? AND state='running'",
                               (now, why, r["id"]))
                    db.execute("UPDATE attempts SET state='interrupted', finished=?, error=? WHERE job_id=? AND attempt=?",
                               (now, why, r["id"], r["attempt"]))
                    lost.append(r["id"])
        return lost
