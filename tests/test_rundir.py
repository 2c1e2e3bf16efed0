"""Run folders that travel, steps that resume and can be cancelled, events, and a caller left as it was."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import golive
from conftest import TESTS, relu_onnx, zoo
from golive.errors import CancelledError
from golive.events import Event, read_events


def _outputs(session, x):
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_run_folder_and_best_alone_work_after_moving(tmp_path, cli):
    """Converted with a Python custom op and data, tuned, then moved (and the source, data and op module deleted)."""
    pytest.importorskip("onnxruntime_extensions")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("zoo.py", "custom_ops_export.py", "custom_ops_runtime.py"):
        shutil.copy(TESTS / name, src / name)
    np.savez(src / "data.npz", x=np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 32))
    first = tmp_path / "first"
    code, _, err = cli("run", _job(tmp_path / "job.yaml", src, first))
    assert code == 0, err
    code, _, err = cli("verify", first, "--data", src / "data.npz")
    assert code == 0, err
    shutil.rmtree(src)  # nothing outside the run folder is needed from here on
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    shutil.move(first, moved)

    record = json.loads((moved / "golive.json").read_text())
    assert record["format_version"] == 1 and not Path(record["source"]).is_absolute()
    assert record["custom_ops"] == ["custom_ops/custom_ops_runtime.py"]
    for path in ("job.json", "golive.json", "verify.json", "tuned/tune.json", "tuned/report.json", "tuned/best/session.json"):
        assert str(tmp_path) not in (moved / path).read_text(), f"{path} records an absolute path"

    x = np.linspace(-2, 2, 96, dtype=np.float32).reshape(3, 32)
    expected = _outputs(golive.load_session(moved / "tuned"), x)
    code, stdout, err = cli("inspect", moved)
    assert code == 0 and "FancySin" in stdout, err
    code, stdout, err = cli("tune", moved, "-o", moved / "tuned-again", "--budget", "2", "--transforms", "none")
    assert code == 0, err
    assert golive.load_session(moved / "tuned-again").get_inputs()[0].name == "x"

    alone = tmp_path / "only-best"
    shutil.copytree(moved / "tuned" / "best", alone)
    shutil.rmtree(moved)
    np.testing.assert_allclose(_outputs(golive.load_session(alone), x), expected, rtol=1e-6, atol=1e-6)


def _job(path: Path, src: Path, out: Path, tune: bool = True) -> Path:
    path.write_text(
        f"source: {src / 'zoo.py'}:DenseThenCustomOp\noutput_dir: {out}\n"
        f"convert:\n  inputs: ['x:float32[batch,32]']\n  custom_translation: ['{src / 'custom_ops_export.py'}:TO_CUSTOM_NODE']\n"
        f"  custom_ops: ['{src / 'custom_ops_runtime.py'}']\n"
        + f"verify:\n  data: {src / 'data.npz'}\n"
        + (
            f"tune:\n  budget: 4\n  transforms: [int8_dynamic]\n  data: {src / 'data.npz'}\n  time_source: false\n"
            if tune
            else ""
        )
    )
    return path


def test_verify_of_a_folder_whose_source_did_not_travel_says_what_to_pass(tmp_path, cli):
    shutil.copy(TESTS / "zoo.py", tmp_path / "model.py")
    out = tmp_path / "o"
    code, _, err = cli("convert", f"{tmp_path / 'model.py'}:tiny_mlp", "-o", out, "--input", "x:float32[batch,4]")
    assert code == 0, err
    shutil.move(tmp_path / "model.py", tmp_path / "renamed.py")
    code, _, err = cli("verify", out)
    assert code == 2 and "source model is not here" in err and "--source" in err
    code, stdout, err = cli("verify", out, "--source", f"{tmp_path / 'renamed.py'}:tiny_mlp")
    assert code == 0 and "PASSED" in stdout, err
    saved = json.loads((out / "verify.json").read_text())
    assert saved["source"] == "../renamed.py:tiny_mlp" and saved["report"]["passed"]
    code, stdout, err = cli("run", out / "verify.json")  # the saved verify step replays, with its source
    assert code == 0 and "PASSED" in stdout, err


def test_run_skips_a_finished_convert_and_tunes(tmp_path, cli):
    """`golive run` of a job whose convert output is complete and unchanged skips it, says so, and tunes."""
    job = tmp_path / "job.yaml"
    base = f"source: {zoo('tiny_mlp')}\noutput_dir: out\nconvert:\n  inputs: ['x:float32[batch,4]']\n"
    job.write_text(base)
    code, stdout, err = cli("run", job)
    assert code == 0 and "convert: skipped" not in stdout, err
    converted_at = (tmp_path / "out" / "model.onnx").stat().st_mtime_ns
    job.write_text(base + "tune:\n  budget: 3\n  transforms: []\n  time_source: false\n")
    code, stdout, err = cli("run", job)
    assert code == 0, err
    assert "convert: skipped" in stdout and "tune: skipped" not in stdout
    assert (tmp_path / "out" / "model.onnx").stat().st_mtime_ns == converted_at  # not written again
    assert (tmp_path / "out" / "tuned" / "tune.json").is_file()
    code, stdout, err = cli("run", job, "--json")
    shown = json.loads(stdout)
    assert shown["skipped"] and shown["tuning"]["skipped"]  # nothing left to do
    saved = json.loads((tmp_path / "out" / "job.json").read_text())
    assert saved["tune"]["budget"] == 3 and saved["output_dir"] == "."
    code, stdout, err = cli("run", tmp_path / "out" / "tuned" / "tune.json")
    assert code == 0 and "tune: skipped" in stdout, err
    # a changed convert spec runs the convert again (and so the tune)
    job.write_text(base.replace("batch,4", "n,4") + "tune:\n  budget: 3\n  transforms: []\n  time_source: false\n")
    code, stdout, err = cli("run", job)
    # (a candidate the budget did not reach shows "skipped" in the tune table: only the steps' lines count here)
    assert code == 0 and "convert: skipped" not in stdout and "tune: skipped" not in stdout, err


def test_cancel_stops_a_tune_between_candidates_and_leaves_nothing_finished(tmp_path):
    out = tmp_path / "o"
    assert golive.convert(zoo("tiny_mlp"), out, inputs=["x:float32[batch,4]"]).passed
    token = golive.CancelToken()
    seen: list[Event] = []

    def on_event(event: Event) -> None:
        seen.append(event)
        if event.payload.get("candidate"):  # the first candidate is measured: stop now
            token.set()

    with pytest.raises(CancelledError):
        golive.tune(out, tmp_path / "t", budget=60, on_event=on_event, cancel=token)
    assert not (tmp_path / "t").exists()  # it made the folder and removed it
    assert sum(1 for e in seen if e.payload.get("candidate")) <= 3  # it stopped at the next check
    # an existing tune folder keeps its finished result when a rerun is cancelled
    golive.tune(out, tmp_path / "t", budget=3, transforms=[], time_source=False)
    token = golive.CancelToken()
    with pytest.raises(CancelledError):
        golive.tune(out, tmp_path / "t", budget=60, on_event=on_event, cancel=token)
    assert golive.load_session(tmp_path / "t").get_inputs()[0].name == "x"
    assert not [p for p in (tmp_path / "t").iterdir() if ".partial-" in p.name]


def test_stale_partial_folders_of_a_killed_run_are_swept(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "events.jsonl").write_text("")
    stale = out / ".convert.partial-99999-abcdef"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    events: list[Event] = []
    result = golive.convert(zoo("tiny_mlp"), out, inputs=["x:float32[batch,4]"], on_event=events.append)
    assert result.passed and not stale.exists()
    assert any(e.payload.get("swept") == [stale.name] for e in events)


def test_events_are_structured_and_kept_in_the_run_folder(tmp_path):
    out = tmp_path / "o"
    golive.convert(zoo("tiny_mlp"), out, inputs=["x:float32[batch,4]"])
    golive.tune(out, out / "tuned", budget=3, transforms=[], time_source=False)
    events, offset = read_events(out / "events.jsonl")
    assert offset == (out / "events.jsonl").stat().st_size
    steps = [e.step for e in events]
    assert steps[:2] == ["load", "export"] and "verify" in steps and steps[-1] == "done"
    runs = [e for e in events if e.step == "verify" and e.payload]
    assert runs and all(e.total == len(runs) and e.payload["passed"] for e in runs)
    assert all(e.job_id is None and e.ts > 0 for e in events)
    tuned, _ = read_events(out / "tuned" / "events.jsonl")
    rows = [e.payload["candidate"] for e in tuned if "candidate" in e.payload]
    assert rows and rows[0]["stage"] == "baseline" and rows[0]["p50_ms"] > 0
    assert all(e.total == 3 for e in tuned if e.step == "tune")
    report = json.loads((out / "tuned" / "report.json").read_text())
    assert {r["id"] for r in rows} <= {c["id"] for c in report["candidates"]}


def _process_state() -> dict:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    loggers = {
        name: (lg.level, lg.propagate, len(lg.handlers), lg.disabled)
        for name, lg in logging.root.manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    return {
        "cwd": os.getcwd(),
        "environ": dict(os.environ),
        "sys.path": list(sys.path),
        "fds": fds,
        "root": (logging.root.level, list(logging.root.handlers)),
        "loggers": loggers,
        "start method": __import__("multiprocessing").get_start_method(allow_none=True),
    }


def test_convert_and_tune_leave_the_caller_as_it_was(tmp_path, monkeypatch, folders):
    """A Hugging Face model (sets offline variables; a tiny ViT, made before the caller's state is read), INT8 transforms
    (ONNX Runtime's tools chdir and set the root logger), a forkserver for the measurements: none of it may reach the
    caller's process."""
    source = folders("vit")
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    before = _process_state()
    out = tmp_path / "vit"
    assert golive.convert(source, out, verify=False).output_dir == out
    result = golive.tune(out, tmp_path / "t", budget=5, dim_sizes={"batch": 1}, transforms=["int8_dynamic"], time_source=False)
    assert result.best.status == "passed"
    after = _process_state()
    for key in before:
        if key == "fds":  # file descriptors: none opened and left open, none redirected
            assert after[key] == before[key]
        elif key == "loggers":  # those there before are as they were; golive's modules' own loggers, as logging makes them
            assert {name: after[key][name] for name in before[key]} == before[key], "the caller's loggers changed"
            assert all(after[key][name] == (logging.NOTSET, True, 0, False) for name in set(after[key]) - set(before[key]))
        else:
            assert after[key] == before[key], f"the caller's {key} changed"
    assert list(work.iterdir()) == []


def test_available_cpus_reads_the_cgroup_quota(tmp_path):
    from golive.cpu import _cgroup_quota, available_cpus

    (tmp_path / "pod" / "ctr").mkdir(parents=True)
    (tmp_path / "pod" / "cpu.max").write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    (tmp_path / "pod" / "ctr" / "cpu.max").write_text("max 100000\n")
    (tmp_path / "cgroup").write_text("0::/pod/ctr\n")
    assert _cgroup_quota(str(tmp_path), str(tmp_path / "cgroup")) == pytest.approx(1.5)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cgroup1").write_text("4:memory:/x\n2:cpu:/\n")
    assert _cgroup_quota(str(tmp_path), str(tmp_path / "cgroup1")) == pytest.approx(3.0)
    (tmp_path / "cgroup2").write_text("0::/nothing\n")
    assert _cgroup_quota(str(tmp_path), str(tmp_path / "cgroup2")) is None
    assert 1 <= available_cpus() <= len(os.sched_getaffinity(0))


def test_sessions_use_no_more_threads_than_the_process_may(monkeypatch, tmp_path):
    """ONNX Runtime's default (0) counts the machine's cores; under a quota golive asks for what it may use."""
    from golive import cpu, runtime

    model = relu_onnx(tmp_path / "m.onnx")
    monkeypatch.setattr(cpu, "available_cpus", lambda: 1)
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 8)
    session = runtime.make_session(model, runtime.SessionConfig())
    assert session.get_session_options().intra_op_num_threads == 1
    explicit = runtime.make_session(model, runtime.SessionConfig(intra_op_num_threads=2))
    assert explicit.get_session_options().intra_op_num_threads == 2
    monkeypatch.setattr(cpu, "available_cpus", lambda: 8)
    assert runtime.make_session(model, runtime.SessionConfig()).get_session_options().intra_op_num_threads == 0


def test_a_busy_run_folder_is_refused(tmp_path):
    from golive.errors import RunFolderBusyError
    from golive.rundir import RunFolder

    with RunFolder.claim(tmp_path / "o"):
        done = threading.Event()
        errors = []

        def other() -> None:
            try:
                golive.convert(zoo("tiny_mlp"), tmp_path / "o", inputs=["x:float32[batch,4]"])
            except RunFolderBusyError as exc:
                errors.append(exc)
            done.set()

        threading.Thread(target=other).start()
        assert done.wait(120)
    assert errors and "another golive step" in errors[0].message


def test_replaying_the_saved_job_json_of_a_convert_skips_it(tmp_path, cli):
    code, _, err = cli("convert", zoo("tiny_mlp"), "-o", tmp_path / "o", "--input", "x:float32[batch,4]")
    assert code == 0, err
    written = (tmp_path / "o" / "model.onnx").stat().st_mtime_ns
    code, stdout, err = cli("run", tmp_path / "o" / "job.json")
    assert code == 0 and "convert: skipped" in stdout, err
    assert (tmp_path / "o" / "model.onnx").stat().st_mtime_ns == written


def test_a_source_by_module_name_is_verified_again_later(tmp_path, monkeypatch):
    """pkg.module:factory sources are module names, never taken for paths inside the run folder."""
    package = tmp_path / "mods" / "mypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(
        "import torch\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))  # the worker process gets the caller's sys.path
    out = tmp_path / "o"
    assert golive.convert("mypkg.models:build", out, inputs=["x:float32[batch,4]"]).passed
    assert json.loads((out / "golive.json").read_text())["source"] == "mypkg.models:build"
    assert golive.verify(out).passed


def test_a_step_that_forks_a_process_still_returns(tmp_path):
    """A model whose code forks a process (left running) must neither hang the caller nor leave it behind."""
    (tmp_path / "forks.py").write_text(
        "import multiprocessing, time, torch\n\n"
        "def build():\n"
        "    p = multiprocessing.get_context('fork').Process(target=time.sleep, args=(600,))\n"
        "    p.start()\n"
        f"    open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid))\n"
        "    return torch.nn.Linear(4, 2)\n"
    )
    result = golive.convert(f"{tmp_path / 'forks.py'}:build", tmp_path / "o", inputs=["x:float32[batch,4]"])
    assert result.passed
    stat = Path(f"/proc/{int((tmp_path / 'pid').read_text())}/stat")

    def gone() -> bool:
        try:
            return stat.read_text().rpartition(")")[2].split()[0] in ("Z", "X")
        except OSError:
            return True

    for _ in range(100):  # SIGKILL is delivered asynchronously: give it up to 10 s
        if gone():
            break
        time.sleep(0.1)
    assert gone(), "the process the step forked outlived the step"
