"""The job store's rules on a real SQLite file: who may run a job, and when a running job counts as lost."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from golive.errors import JobError
from golive.jobs.store import JobStore, this_host


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "home")
    yield s
    s.close()


def _submit(store, tmp_path, name="a"):
    return store.submit({"source": "m.onnx", "output_dir": str(tmp_path / name)}, run_dir=str(tmp_path / name)).id


def _age_heartbeat(store, job_id, seconds):
    with sqlite3.connect(store.path) as db:
        db.execute("UPDATE jobs SET heartbeat=heartbeat-? WHERE id=?", (seconds, job_id))


def test_a_silent_worker_on_this_machine_whose_process_lives_keeps_its_job(store, tmp_path):
    import os

    job = _submit(store, tmp_path)
    store.claim(this_host(), os.getpid())
    _age_heartbeat(store, job, 3600)  # a worker that was suspended for an hour, say
    assert store.recover(this_host()) == [] and store.get(job).state == "running"


def test_a_silent_worker_elsewhere_loses_its_job_and_cannot_finish_it(store, tmp_path):
    job = _submit(store, tmp_path)
    store.claim("other-machine/boot/ns", 4242)
    assert store.recover(this_host()) == []  # its heartbeat is fresh
    _age_heartbeat(store, job, 60)
    assert store.recover(this_host()) == [job]
    record = store.get(job)
    assert record.state == "interrupted" and "retry" in record.error
    assert store.heartbeat([job], 4242) == ([], [job])  # the worker learns the job is no longer its own
    assert not store.finish(job, 1, 4242, "succeeded")
    assert [a.state for a in store.attempts(job)] == ["interrupted"]  # the late finish changed nothing


def test_a_dead_worker_on_this_machine_loses_its_job_at_once_and_a_cancel_is_honoured(store, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    first, second = _submit(store, tmp_path, "a"), _submit(store, tmp_path, "b")
    store.claim(this_host(), dead.pid)
    store.claim(this_host(), dead.pid)
    store.request_cancel(second)
    assert sorted(store.recover(this_host())) == sorted([first, second])
    assert store.get(first).state == "interrupted" and store.get(second).state == "cancelled"


def test_a_retried_job_waits_for_its_previous_process_to_end(store, tmp_path):
    job = _submit(store, tmp_path)
    store.claim(this_host(), 1)
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)  # the previous attempt, still stopping
    try:
        store.started(job, 1, leftover.pid)
        assert store.finish(job, 1, 1, "failed", error="x")
        store.retry(job)
        assert store.claim(this_host(), 2) is None  # not while it runs
        leftover.kill()
        leftover.wait()
        claimed = store.claim(this_host(), 2)
        assert claimed.id == job and claimed.attempt == 2
    finally:
        leftover.kill()


def test_claims_are_atomic_across_connections(tmp_path):
    stores = [JobStore(tmp_path / "home") for _ in range(4)]
    ids = {_submit(stores[0], tmp_path, f"j{i}") for i in range(20)}
    claimed = []
    while True:
        got = [s.claim(this_host(), 100 + i) for i, s in enumerate(stores)]
        claimed += [g.id for g in got if g]
        if not any(got):
            break
    assert sorted(claimed) == sorted(ids)  # each exactly once
    for s in stores:
        s.close()


def test_store_errors_are_golive_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(JobError, match="cannot open the job store"):
        JobStore(tmp_path / "file" / "home")
    store = JobStore(tmp_path / "home")
    with pytest.raises(JobError, match="no job"):
        store.get("nope")
    job = _submit(store, tmp_path)
    with pytest.raises(JobError, match="already writes"):
        _submit(store, tmp_path)
    with pytest.raises(JobError, match="only failed, cancelled or interrupted"):
        store.retry(job)
    assert store.request_cancel(job).state == "cancelled"
    with pytest.raises(JobError, match="already cancelled"):
        store.request_cancel(job)
    store.close()
