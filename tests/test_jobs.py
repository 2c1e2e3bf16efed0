"""The job queue with real worker processes and a real SQLite file: crashes, kills, cancels, retries."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import relu_onnx, zoo
from golive import jobs
from golive.events import read_events


def _job(tmp_path: Path, name: str, *, budget: float | None = None, source: str | None = None, **extra) -> Path:
    model = tmp_path / "relu.onnx"
    if not model.exists():
        relu_onnx(model)
    spec = {"source": source or str(model), "output_dir": str(tmp_path / name), **extra}
    if budget is not None:
        spec["tune"] = {"budget": budget, "transforms": []}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(spec))
    return path


class Worker:
    """`golive worker` in a process of its own, as a user starts it."""

    def __init__(self, home: Path, *args: str) -> None:
        self.log = open(home.parent / f"worker-{time.monotonic_ns()}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "golive", "worker", "--home", str(home), *args],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def wait(self, timeout: float = 300) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.log.close()


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()


def _until(condition, timeout: float = 120, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _group_gone(pgid: int) -> bool:
    """No live process is left in the process group (zombies waiting to be reaped do not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return False
    return True


def _tune_started(run_dir: Path) -> bool:
    events, _ = read_events(run_dir / "events.jsonl")
    return any("candidate" in e.payload for e in events)


def _exports(run_dir: Path) -> int:
    events, _ = read_events(run_dir / "events.jsonl")
    return sum(1 for e in events if e.step == "export")


def test_submit_run_show_and_logs_through_the_command_line(tmp_path, home, workers):
    golive = [sys.executable, "-m", "golive"]
    proc = subprocess.run(
        [*golive, "jobs", "submit", _job(tmp_path, "a", budget=3), "--home", home], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip()
    assert len(job_id) == 12 and jobs.get(job_id, home=home).state == "queued"
    workers.append(Worker(home, "--exit-when-idle"))
    follow = subprocess.run(
        [*golive, "jobs", "logs", job_id[:6], "--follow", "--home", home], capture_output=True, text=True, timeout=300
    )
    assert follow.returncode == 0 and "attempt 1" in follow.stdout and "tune:" in follow.stdout
    assert workers[0].wait() == 0
    listed = json.loads(
        subprocess.run([*golive, "jobs", "list", "--json", "--home", home], capture_output=True, text=True).stdout
    )
    assert [(j["id"], j["state"], j["attempt"]) for j in listed] == [(job_id, "succeeded", 1)]
    assert listed[0]["run_dir"] == str(tmp_path / "a") and listed[0]["error"] is None
    shown = json.loads(
        subprocess.run([*golive, "jobs", "show", job_id, "--json", "--home", home], capture_output=True, text=True).stdout
    )
    assert shown["summary"]["passed"] and shown["summary"]["speedup"] > 0 and len(shown["attempts"]) == 1
    assert (tmp_path / "a" / "tuned" / "best" / "session.json").is_file()
    events, _ = read_events(tmp_path / "a" / "events.jsonl")
    assert events and all(e.job_id == job_id for e in events)
    bad = subprocess.run([*golive, "jobs", "retry", job_id, "--home", home], capture_output=True, text=True)
    assert bad.returncode == 2 and "only failed, cancelled or interrupted" in bad.stderr
    bad = subprocess.run([*golive, "jobs", "show", "nosuchjob", "--home", home], capture_output=True, text=True)
    assert bad.returncode == 2 and "no job nosuchjob" in bad.stderr


def test_a_worker_killed_mid_tune_leaves_the_job_interrupted_and_retry_resumes_it(tmp_path, home, workers):
    # budget 16 (0.4 s a measurement): the tune runs for seconds after its first candidate, time enough to kill it
    job_id = jobs.submit(_job(tmp_path, "a", budget=16), home=home)
    run_dir = tmp_path / "a"
    workers.append(Worker(home))
    _until(lambda: _tune_started(run_dir), what="the tune to start")
    job_pid = jobs.get(job_id, home=home).job_pid
    workers[0].kill9()
    # the job's process sees its worker gone and stops (or is killed after the grace period)
    _until(lambda: _group_gone(job_pid), timeout=60, what="the job's processes to end")
    record = jobs.get(job_id, home=home)  # reading the store notices the dead worker
    assert record.state == "interrupted" and "retry" in record.error
    tuned = run_dir / "tuned"
    assert not (tuned / "tune.json").exists() and not (tuned / "best").exists()  # nothing looks finished
    assert (run_dir / "golive.json").is_file()  # the finished convert step stays

    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[-1].wait() == 0
    assert jobs.get(job_id, home=home).state == "interrupted"  # not run again by itself
    jobs.retry(job_id, home=home)
    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[-1].wait() == 0
    record = jobs.get(job_id, home=home)
    assert record.state == "succeeded" and record.attempt == 2
    assert [a.state for a in jobs.attempts(job_id, home=home)] == ["interrupted", "succeeded"]
    assert record.summary["skipped"] == ["convert"] and _exports(run_dir) == 1  # resumed, not redone
    assert (tuned / "tune.json").is_file() and not [p for p in tuned.iterdir() if ".partial-" in p.name]


def test_queued_jobs_survive_a_killed_worker_pool(tmp_path, home, workers):
    long_id = jobs.submit(_job(tmp_path, "long", budget=16), home=home)
    queued = [jobs.submit(_job(tmp_path, f"q{i}"), home=home) for i in range(3)]
    workers.append(Worker(home))
    _until(lambda: _tune_started(tmp_path / "long"), what="the first job to be tuning")
    job_pid = jobs.get(long_id, home=home).job_pid
    workers[0].proc.send_signal(signal.SIGSTOP)  # frozen, so it cannot see its job die: the whole pool dies at once
    os.killpg(job_pid, signal.SIGKILL)
    workers[0].kill9()
    _until(lambda: _group_gone(job_pid), timeout=30, what="the killed job's processes to end")
    assert [jobs.get(j, home=home).state for j in queued] == ["queued"] * 3
    partial = [p.name for p in (tmp_path / "long" / "tuned").iterdir() if ".partial-" in p.name]
    assert partial and not (tmp_path / "long" / "tuned" / "tune.json").exists()  # killed mid-tune: unfinished
    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[-1].wait() == 0
    assert jobs.get(long_id, home=home).state == "interrupted"
    for i, j in enumerate(queued):
        record = jobs.get(j, home=home)
        assert record.state == "succeeded" and record.attempt == 1 and _exports(tmp_path / f"q{i}") == 1
    jobs.retry(long_id, home=home)
    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[-1].wait() == 0
    assert jobs.get(long_id, home=home).state == "succeeded"
    tuned, _ = read_events(tmp_path / "long" / "tuned" / "events.jsonl")
    assert [e.payload["swept"] for e in tuned if "swept" in e.payload] == [partial]  # the kill's leftovers, swept


def test_cancel_a_queued_and_a_running_job(tmp_path, home, workers):
    running = jobs.submit(_job(tmp_path, "r", budget=60), home=home)
    waiting = jobs.submit(_job(tmp_path, "w"), home=home)
    assert jobs.cancel(waiting, home=home).state == "cancelled"  # at once, no worker involved
    workers.append(Worker(home, "--exit-when-idle"))
    _until(lambda: _tune_started(tmp_path / "r"), what="the tune to start")
    job_pid = jobs.get(running, home=home).job_pid
    assert jobs.cancel(running, home=home).cancel_requested
    record = jobs.wait(running, home=home, timeout=120)
    assert record.state == "cancelled" and record.error == "cancelled on request"
    _until(lambda: _group_gone(job_pid), timeout=30, what="the job's processes (and its measuring ones) to end")
    assert workers[0].wait() == 0
    assert not (tmp_path / "w").exists()  # the cancelled queued job never ran
    assert not (tmp_path / "r" / "tuned" / "tune.json").exists()
    assert jobs.retry(running, home=home).state == "queued"


def test_two_workers_run_each_of_six_jobs_exactly_once(tmp_path, home, workers):
    ids = [jobs.submit(_job(tmp_path, f"j{i}", budget=2), home=home) for i in range(6)]
    workers.extend([Worker(home, "--exit-when-idle"), Worker(home, "--exit-when-idle")])
    assert [w.wait() for w in workers] == [0, 0]
    records = [jobs.get(j, home=home) for j in ids]
    assert all(r.state == "succeeded" and r.attempt == 1 for r in records)
    assert all(len(jobs.attempts(j, home=home)) == 1 for j in ids)
    assert all(_exports(tmp_path / f"j{i}") == 1 for i in range(6))
    with sqlite3.connect(home / "jobs.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        by_worker = dict(db.execute("SELECT worker_pid, COUNT(*) FROM attempts GROUP BY worker_pid").fetchall())
    assert sorted(by_worker) == sorted(w.proc.pid for w in workers)  # both claimed: the claims really raced


def test_a_job_that_crashes_its_process_is_failed_with_the_signal_and_log_tail(tmp_path, home, workers):
    crasher = tmp_path / "crasher.py"
    crasher.write_text(
        "import ctypes, sys\n\ndef model():\n    print('about to crash', file=sys.stderr, flush=True)\n    ctypes.string_at(0)\n"
    )
    job_id = jobs.submit(_job(tmp_path, "c", source=f"{crasher}:model", convert={"inputs": ["x:float32[2,4]"]}), home=home)
    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[0].wait() == 0
    record = jobs.get(job_id, home=home)
    assert record.state == "failed" and record.signal == "SIGSEGV"
    assert "died from SIGSEGV" in record.error and "about to crash" in record.error
    assert "about to crash" in jobs.log_text(job_id, home=home)


def test_a_job_with_a_bad_spec_fails_with_the_message(tmp_path, home, workers):
    job_id = jobs.submit({"source": str(tmp_path / "missing.onnx"), "output_dir": str(tmp_path / "m")}, home=home)
    again = _job(tmp_path, "m")
    with pytest.raises(Exception, match="already writes"):
        jobs.submit(again, home=home)  # one run folder, one job at a time
    workers.append(Worker(home, "--exit-when-idle"))
    assert workers[0].wait() == 0
    record = jobs.get(job_id, home=home)
    assert record.state == "failed" and "does not exist" in record.error
    assert record.summary == {}


def test_python_api_submit_wait_and_list(tmp_path, home, workers):
    job_id = jobs.submit(_job(tmp_path, "p", convert={"inputs": ["x:float32[batch,4]"]}, source=zoo("tiny_mlp")), home=home)
    workers.append(Worker(home))
    record = jobs.wait(job_id, home=home, timeout=300)
    assert record.state == "succeeded" and record.summary["exporter"] == "dynamo" and record.summary["passed"]
    assert [r.id for r in jobs.list(home=home, states=["succeeded"])] == [job_id]
    with pytest.raises(TimeoutError):  # JobTimeoutError, a GoliveError and a TimeoutError
        jobs.wait(jobs.submit(_job(tmp_path, "later", budget=60), home=home), home=home, timeout=0.5)
    assert (tmp_path / "p" / "golive.json").is_file()
