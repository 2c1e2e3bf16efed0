"""Measuring one candidate in a worker process, so that a crash, a hang or running out of memory
costs that candidate only.

The child imports numpy and onnxruntime, nothing heavier. It builds the session, saves the outputs
for the accuracy gate, warms up, then times runs until the median is stable or its time is spent.
"""

from __future__ import annotations

import importlib.util
import statistics
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from golive._isolate import WorkerFailure, in_worker, preload
from golive.providers import Placement
from golive.runtime import SessionConfig, is_library

__all__ = [
    "Beside",
    "MeasureTask",
    "Measurement",
    "measure",
    "measure_in_worker",
    "measure_source",
    "preload_custom_ops",
    "time_runs",
]

preload(__name__)  # the forkserver imports this module once: each measurement starts in milliseconds


def preload_custom_ops(entries: list[str]) -> None:
    """Python custom operators run through onnxruntime-extensions, whose import pulls in transformers and torch (2 s):
    the forkserver imports it once, not each measurement (where the forkserver of this process has yet to start)."""
    if any(not is_library(e) for e in entries) and importlib.util.find_spec("onnxruntime_extensions") is not None:
        preload("onnxruntime_extensions")


class Beside(BaseModel):
    """The baseline timed right after a candidate in its worker: a yardstick of how busy the machine is."""

    model: str
    session: SessionConfig
    seconds: float


class MeasureTask(BaseModel):
    """One measurement, as the search sends it to a worker."""

    model: str
    session: SessionConfig
    inputs: str  # .npz of the inputs, by name
    outputs: str  # where the worker saves the candidate's outputs, for the gate
    max_seconds: float
    warmup: int = 3
    min_runs: int = 20
    max_runs: int = 100_000
    stable_within: float = 0.02
    give_up_above_ms: float | None = None  # stop timing once the median of 5+ runs is above this: clearly not the best
    concurrency: int = 1
    trt_cache: str | None = None  # TensorRT's engines and timing, shared by a tune's candidates
    output_like: str | None = None  # a CUDA graph's output buffers take these shapes (the baseline's outputs)
    beside: Beside | None = None


class Measurement(BaseModel):
    """What a worker measured: timings (ms), memory, throughput, where the nodes ran, and the yardstick beside it."""

    figures: dict[str, Any]  # what the report shows: p50_ms, p99_ms, runs, session_create_ms, throughput, peak_rss_bytes...
    placement: Placement | None = None
    beside_p50_ms: float | None = None
    beside_mean_ms: float | None = None


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def time_runs(
    run,
    max_seconds: float,
    *,
    warmup: int = 3,
    min_runs: int = 20,
    max_runs: int = 100_000,
    stable_within: float = 0.02,
    give_up_above_ms: float | None = None,
) -> dict[str, Any]:
    """Warm up, then time ``run()`` until the median is stable or ``max_seconds`` is spent (ms). ``give_up_above_ms``:
    stop early once the median of at least 5 runs (and a tenth of the time) lies above it (``stopped_early`` says so)."""
    deadline = time.perf_counter() + max_seconds
    warm_end = time.perf_counter() + min(0.2 * max_seconds, 2.0)
    warmups = 0
    while warmups < warmup or (time.perf_counter() < warm_end and warmups < 3 * warmup):
        run()
        warmups += 1
    times: list[float] = []
    min_until = time.perf_counter() + min(0.25 * max_seconds, 1.0)  # enough samples even when runs are tiny
    give_up_after = time.perf_counter() + 0.1 * max_seconds
    stopped_early = False
    while True:
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1000)
        n = len(times)
        if time.perf_counter() >= deadline and n >= 3:
            break
        if n >= max_runs:
            break
        if give_up_above_ms is not None and n >= 5 and (n < 50 or n % 10 == 0) and time.perf_counter() >= give_up_after:
            if statistics.median(times) > give_up_above_ms:
                stopped_early = True
                break
        if n >= min_runs and n % 10 == 0 and time.perf_counter() >= min_until:
            recent, whole = statistics.median(times[n // 2 :]), statistics.median(times)
            if abs(recent - whole) <= stable_within * whole:
                break
    ordered = sorted(times)
    return {
        "runs": len(times),
        "warmup_runs": warmups,
        "p50_ms": _percentile(ordered, 0.5),
        "p90_ms": _percentile(ordered, 0.9),
        "p95_ms": _percentile(ordered, 0.95),
        "p99_ms": _percentile(ordered, 0.99),
        "mean_ms": statistics.fmean(times),
        **({"stopped_early": True} if stopped_early else {}),
        "times": times,
    }


def _timing(task: MeasureTask) -> dict[str, Any]:
    return {k: getattr(task, k) for k in ("warmup", "min_runs", "max_runs", "stable_within", "give_up_above_ms")}


def measure_source(folder: str, inputs: str, seconds: float) -> dict[str, Any]:
    """Run in the worker: the convert folder's source model (PyTorch eager, scikit-learn, ...) timed on the
    tune's inputs, the way candidates are timed."""
    import numpy as np

    from golive._imports import import_user_modules
    from golive.frontends.base import load_source
    from golive.rundir import options_from_record, read_convert_record, source_for

    record = read_convert_record(Path(folder), "tune")
    options = options_from_record(record, Path(folder))
    source = source_for(record, Path(folder), None)
    import_user_modules(options.imports)
    frontend, loaded = load_source(record.framework, source, options, part=record.part, input_structure=record.input_structure)
    with np.load(inputs, allow_pickle=False) as z:
        feeds = {s.name: z[s.name] for s in record.inputs}
    names = [o.name for o in record.outputs]
    timed = time_runs(lambda: frontend.run(loaded, feeds, names), seconds)
    timed.pop("times")
    threads = None
    if record.framework == "pytorch":
        import torch

        threads = torch.get_num_threads()
    return {**timed, "framework": record.framework, "source_kind": loaded.kind, "threads": threads}


def measure(task: MeasureTask) -> Measurement:
    """Run in the worker: session creation, outputs, warm-up, timed runs. Times in milliseconds."""
    import resource

    import numpy as np

    from golive._io import save_npz
    from golive.providers import placement
    from golive.runtime import bound_runner, io_device, make_session

    started = time.perf_counter()
    config = task.session
    if task.trt_cache and config.providers[0] == "TensorrtExecutionProvider":  # the tune's own cache
        first = dict(config.provider_options[0]) if config.provider_options else {}
        first.setdefault("trt_engine_cache_path", task.trt_cache)
        first.setdefault("trt_timing_cache_path", task.trt_cache)
        config = config.model_copy(update={"provider_options": [first, *config.provider_options[1:]]})
    if config.graph_capture() and task.concurrency > 1:
        raise ValueError("a CUDA graph replays one stream of runs: the throughput objective's concurrent runs cannot use it")
    session = make_session(task.model, config, record_placement=True, io_bound=config.bound())
    create_ms = (time.perf_counter() - started) * 1000
    where = placement(session, config.providers[0])
    with np.load(task.inputs, allow_pickle=False) as z:
        feeds = {i.name: z[i.name] for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    if config.bound():  # IO binding (a CUDA graph needs it): timed on the device's buffers, no host copies per run
        like = None
        if config.graph_capture():  # captured during the first run: the output buffers must be bound before it
            assert task.output_like is not None, "a CUDA graph's output buffers need the baseline's outputs"
            with np.load(task.output_like, allow_pickle=False) as z:
                like = [z[n] for n in names]
        run, bound_outputs = bound_runner(session, feeds, io_device(config), like)
        run()
        outputs = bound_outputs()
    else:
        run = partial(session.run, names, feeds)
        outputs = run()
    save_npz(task.outputs, {n: np.asarray(o) for n, o in zip(names, outputs, strict=True) if isinstance(o, np.ndarray)})

    timed = time_runs(run, task.max_seconds, **_timing(task))
    timed.pop("times")
    batch = int(next(iter(feeds.values())).shape[0]) if feeds and next(iter(feeds.values())).ndim else 1
    figures = {"session_create_ms": create_ms, **timed, "batch": batch, "throughput": 1000.0 * batch / timed["p50_ms"]}
    if task.concurrency > 1:
        figures.update(_concurrent(session, names, feeds, task.concurrency, max(0.5, task.max_seconds / 3), batch))
    beside = None
    if task.beside is not None:
        del session, run  # its thread pool would spin on beside the yardstick, taking cores from it
        beside = _beside(task.beside, task.inputs)
    figures["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return Measurement(
        figures=figures,
        placement=where,
        beside_p50_ms=beside[0] if beside else None,
        beside_mean_ms=beside[1] if beside else None,
    )


def _beside(beside: Beside, inputs: str) -> tuple[float, float]:
    """The baseline timed right after the candidate, in the same process (the candidate's session gone, so its
    thread pool takes no cores): a yardstick of how busy the machine is at this moment. Its median and its mean:
    the mean rises with every run another process preempts, the median only when most runs are slowed."""
    import numpy as np

    from golive.runtime import make_session

    session = make_session(beside.model, beside.session)
    names = [o.name for o in session.get_outputs()]
    with np.load(inputs, allow_pickle=False) as z:
        own = {i.name: z[i.name] for i in session.get_inputs()}
    timed = time_runs(lambda: session.run(names, own), beside.seconds, warmup=5, min_runs=10)
    return float(timed["p50_ms"]), float(timed["mean_ms"])


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


def measure_in_worker(task: MeasureTask, timeout: float, should_stop=None) -> Measurement | WorkerFailure:
    """Measure in a fresh process: its Measurement, or the WorkerFailure that says why there is none."""
    return in_worker("golive.tuning.worker:measure", (task,), timeout, should_stop)[1]
