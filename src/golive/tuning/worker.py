"""Measuring one candidate in a worker process, so that a crash, a hang or running out of memory
costs that candidate only.

The child imports numpy and onnxruntime, nothing heavier. It builds the session, saves the outputs
for the accuracy gate, warms up, then times runs until the median is stable or its time is spent.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import statistics
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_in_worker", "measure", "in_worker", "TransformError"]


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def time_runs(run, task: dict[str, Any]) -> dict[str, Any]:
    """Warm up, then time ``run()`` until the median is stable or ``task["max_seconds"]`` is spent (ms)."""
    deadline = time.perf_counter() + task["max_seconds"]
    warm_end = time.perf_counter() + min(0.2 * task["max_seconds"], 2.0)
    warmups = 0
    while warmups < task["warmup"] or (time.perf_counter() < warm_end and warmups < 3 * task["warmup"]):
        run()
        warmups += 1
    times: list[float] = []
    min_until = time.perf_counter() + min(0.25 * task["max_seconds"], 1.0)  # enough samples even when runs are tiny
    while True:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
        n = len(times)
        if time.perf_counter() >= deadline and n >= 3:
            break
        if n >= task["max_runs"]:
            break
        if n >= task["min_runs"] and n % 10 == 0 and time.perf_counter() >= min_until:
            recent, whole = statistics.median(times[n // 2:]), statistics.median(times)
            if abs(recent - whole) <= task["stable_within"] * whole:
                break
    ordered = sorted(times)
    return {"runs": len(times), "warmup_runs": warmups, "p50_ms": _percentile(ordered, 0.5),
            "p90_ms": _percentile(ordered, 0.9), "p95_ms": _percentile(ordered, 0.95), "p99_ms": _percentile(ordered, 0.99),
            "mean_ms": statistics.fmean(times), "times": times}


def measure_source(folder: str, inputs: str, task: dict[str, Any]) -> dict[str, Any]:
    """Run in the worker: the convert folder's source model (PyTorch eager, scikit-learn, ...) timed on the
    tune's inputs, the way candidates are timed."""
    import numpy as np

    from golive.frontends.base import get_frontend
    from golive.steps.verify import import_user_modules, options_from_record, read_convert_record, source_for

    record = read_convert_record(Path(folder), "tune")
    options = options_from_record(record, Path(folder))
    source = source_for(record, Path(folder), None)
    import_user_modules(options)
    frontend = get_frontend(record.framework)
    loaded = frontend.load(source, options)
    if record.input_structure:
        loaded.details["input_structure"] = record.input_structure
    with np.load(inputs, allow_pickle=False) as z:
        feeds = {s.name: z[s.name] for s in record.inputs}
    names = [o.name for o in record.outputs]
    timed = time_runs(lambda: frontend.run(loaded, feeds, names), task)
    timed.pop("times")
    threads = None
    if record.framework == "pytorch":
        import torch

        threads = torch.get_num_threads()
    return {**timed, "framework": record.framework, "source_kind": loaded.kind, "threads": threads}


def measure(task: dict[str, Any]) -> dict[str, Any]:
    """Run in the worker: session creation, outputs, warm-up, timed runs. Times in milliseconds."""
    import resource

    import numpy as np

    from golive.runtime import SessionConfig, make_session

    started = time.perf_counter()
    session = make_session(task["model"], SessionConfig(**task["session"]))
    create_ms = (time.perf_counter() - started) * 1000
    if session.get_modelmeta().custom_metadata_map.get("golive.test.crash") == "1":
        os.kill(os.getpid(), signal.SIGKILL)  # the test-only transform asked for it
    with np.load(task["inputs"], allow_pickle=False) as z:
        feeds = {i.name: z[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    outputs = session.run(names, feeds)
    np.savez(task["outputs"], **{n: np.asarray(o) for n, o in zip(names, outputs) if isinstance(o, np.ndarray)})

    timed = time_runs(lambda: session.run(names, feeds), task)
    timed.pop("times")
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    result = {"session_create_ms": create_ms, **timed, "batch": batch, "throughput": 1000.0 * batch / timed["p50_ms"]}
    if task.get("concurrency", 1) > 1:
        result.update(_concurrent(session, names, feeds, task["concurrency"], max(0.5, task["max_seconds"] / 3), batch))
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def save_optimized_graph(model: str, session: dict[str, Any], target: str) -> None:
    """Let ONNX Runtime optimize ``model`` with these settings and save the graph it runs (in a worker)."""
    from golive.runtime import SessionConfig, make_session

    make_session(model, SessionConfig(**session), optimized_model_path=target)


def _concurrent(session, names, feeds, threads: int, seconds: float, batch: int) -> dict[str, Any]:
    """Several requests at once on one session (ONNX Runtime releases the GIL while it runs)."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            session.run(names, feeds)
            counts[i] += 1

    t0 = time.perf_counter()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    return {"concurrency": threads, "throughput": sum(counts) * batch / elapsed, "concurrent_runs": sum(counts)}


class TransformError(Exception):
    """A transform failed, hung or killed its worker; the message says which and how."""


def _child(conn, target: str, args: tuple) -> None:
    """The worker's side: what the tools print (onnxruntime's quantizers log at INFO to stderr from their
    own handlers) goes to a scratch file, whose last lines explain a failure; the caller's terminal stays quiet."""
    import importlib
    import tempfile

    module, _, name = target.partition(":")
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            conn.send(("ok", getattr(importlib.import_module(module), name)(*args)))
        except BaseException as exc:  # report every failure to the parent, which records it as the candidate's
            text = str(exc).strip().splitlines()
            message = f"{type(exc).__name__}: {text[0][:500] if text else ''}"
            sink.seek(0)
            printed = [ln for ln in sink.read().decode(errors="replace").splitlines() if ln.strip()]
            if printed and not text:
                message += f" (it printed: {printed[-1][:300]})"
            conn.send(("error", message))
        finally:
            conn.close()


_CTX = None


def _context():
    """A forkserver that has imported onnxruntime once: each candidate still runs in a fresh process
    of its own, but starts in milliseconds instead of re-importing everything (spawn: ~0.7 s).

    multiprocessing has one forkserver per process, so its preload list is process-wide state: the tuner
    runs in a step process golive owns (see golive._worker), never in the caller's."""
    global _CTX
    if _CTX is None:
        try:
            _CTX = mp.get_context("forkserver")
            _CTX.set_forkserver_preload(["golive.tuning.worker", "golive.runtime", "onnxruntime", "numpy"])
        except ValueError:  # no forkserver on this platform
            _CTX = mp.get_context("spawn")
    return _CTX


def in_worker(target: str, args: tuple, timeout: float, should_stop=None) -> tuple[bool, Any]:
    """Run ``target(*args)`` ("module:function") in a fresh process. Returns (True, its value) or
    (False, what went wrong). ``should_stop()`` is polled while waiting: when it turns true the
    process is killed and (False, "cancelled") returned."""
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
        return False, "cancelled"
    if status == "timeout":
        return False, f"timed out after {timeout:.0f} s (hung, or far slower than the others)"
    code = proc.exitcode
    if code is not None and code < 0:
        sig = signal.Signals(-code).name
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        return False, f"the worker process died from {sig}{why}"
    return False, f"the worker process exited with code {code} before reporting"


def measure_in_worker(task: dict[str, Any], timeout: float, should_stop=None) -> tuple[bool, dict[str, Any] | str]:
    """Measure in a fresh process. Returns (True, figures) or (False, what went wrong)."""
    return in_worker("golive.tuning.worker:measure", (task,), timeout, should_stop)
