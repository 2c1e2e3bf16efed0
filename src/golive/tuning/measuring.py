"""Measuring a candidate: its model built, timed in a worker with the baseline beside it (the busy-machine yardstick),
and gated."""

from __future__ import annotations

import time

import numpy as np

from golive._isolate import WorkerFailure
from golive.errors import TransformError
from golive.optimize import apply_chain
from golive.tuning.gate import judge
from golive.tuning.space import (
    Candidate,
    invalid_reason,
)
from golive.tuning.state import NOISE, SearchState, rank_score, report_candidate
from golive.tuning.worker import Beside, MeasureTask, measure_in_worker

__all__ = ["BUSY", "evaluate", "measure_candidate", "remeasure_better_half"]

# The baseline timed beside a candidate taking more than BUSY times its usual (median so far) mean time per run: the
# machine is busy. The mean, not the median: other processes preempt some runs and leave the rest alone, so on a
# 2-core AMD EPYC six busy-looping processes moved the yardstick's median 10-80% (and its quiet median jumps between
# two levels 30% apart) but its mean 4-5x (1.4-2.9 ms quiet, 7-14 ms with them, a 0.6-0.9 ms median run).
BUSY = 2.0

# A candidate whose median over its first runs lies GIVE_UP times above the fastest passed one stops timing early: it
# cannot win, and a slow model's seconds go to the close ones instead.
GIVE_UP = 1.5


def evaluate(state: SearchState, c: Candidate, seconds: float) -> Candidate:
    """Build the candidate's model, measure it in a worker, gate it. Outcomes are recorded on ``c``."""
    if c.status != "pending":
        return c  # tried already (the same transforms and settings reached from another stage)
    state.step.check()
    why = invalid_reason(c.session, c.transforms, state.available)
    if why:
        c.status, c.reason = "invalid", why
        return c
    est = state.estimator
    if est is not None and c.stage != "baseline":
        c.expected = est.estimate(c.transforms, state.built, session_knobs=int(c.stage == "session"))
    if c.stage != "baseline" and state.left() <= 0:
        c.status, c.reason = "skipped", "the tuning budget was spent before it ran"
        return c
    if c.expected is not None and c.expected.cost_s > state.left():
        c.status, c.reason = (
            "skipped",
            f"expected to take ~{c.expected.cost_s:.0f} s to build and measure, {max(0.0, state.left()):.0f} s of the "
            "budget left",
        )
        return c
    state.progress(f"{c.stage}: {c.label()}" + (f" (expected {c.expected.speedup:.2f}x)" if c.expected else ""))
    started = time.monotonic()
    try:
        path, results = apply_chain(
            state.model,
            c.transforms,
            state.work / "models",
            state.ctx,
            timeout=max(120.0, state.left() + 60),
            should_stop=state.stopping,
        )
    except TransformError as exc:  # a transform that fails is a result of the search, not an error of the run
        state.step.check()
        c.status, c.reason = "failed", f"transform failed: {exc}"
        c.cost_s += time.monotonic() - started
        report_candidate(state, c)
        return c
    built = time.monotonic() - started
    c.cost_s += built
    if est is not None and any("+".join(c.transforms[: i + 1]) not in state.built for i in range(len(c.transforms))):
        est.learn_build(c.transforms, state.built, built)
    state.built.update("+".join(c.transforms[: i + 1]) for i in range(len(c.transforms)))
    info = [r.record() for r in results]
    c.transform_info, c.model = info, str(path)
    if (
        c.transforms
        and all(not i.get("fused", True) for i in info if i["transform"].endswith("_fusion"))
        and all(i["transform"].endswith("_fusion") for i in info)
    ):
        c.status, c.reason = "invalid", "found nothing to fuse in this model"
        return c
    measure_candidate(state, c, seconds, beside=c.stage in ("model", "session"), give_up=c.stage in ("model", "session"))
    report_candidate(state, c)
    return c


def measure_candidate(
    state: SearchState, c: Candidate, seconds: float, beside: bool = False, retry: bool = True, give_up: bool = False
) -> Candidate:
    """Measure ``c`` in a worker and gate it. ``beside``: the baseline is timed right after it in the same worker,
    so its figure can be ranked against candidates measured at other, busier or quieter, moments; one taken while
    the baseline took more than BUSY times its usual mean time per run is measured again after a pause. ``give_up``:
    its timing stops early once it is clearly (GIVE_UP times) slower than the fastest passed candidate so far."""
    out_file = state.work / "outputs" / f"{c.id}.npz"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    task = MeasureTask(
        model=c.model,
        session=c.session,
        inputs=str(state.work / "inputs.npz"),
        outputs=str(out_file),
        max_seconds=seconds,
        stable_within=NOISE,
        concurrency=state.options.concurrency if state.options.objective == "throughput" else 1,
        trt_cache=str(state.work / "trt_cache"),  # TensorRT's engines, shared by the candidates, in the run folder
    )
    if state.baseline is not None and c is not state.baseline:  # a CUDA graph's output buffers take these shapes
        task.output_like = str(state.work / "outputs" / f"{state.baseline.id}.npz")
    yardstick = state.baseline if beside and state.options.objective == "latency" and c is not state.baseline else None
    if yardstick is not None and yardstick.model:
        task.beside = Beside(model=yardstick.model, session=yardstick.session, seconds=max(0.25, seconds / 4))
    fastest = min(
        (x.figures["p50_ms"] for x in state.candidates if x.status == "passed" and x.figures.get("p50_ms")), default=None
    )
    if give_up and fastest is not None and state.options.objective == "latency":
        task.give_up_above_ms = GIVE_UP * fastest
    state.step.check()
    started = time.monotonic()
    result = measure_in_worker(task, timeout=max(60.0, 8 * seconds + 60), should_stop=state.stopping)
    wall = time.monotonic() - started
    c.cost_s += wall
    state.step.check()
    if isinstance(result, WorkerFailure):
        if result.error_type == "FallbackError":  # --no-fallback: the provider does not take every node
            c.status, c.reason = "rejected", "--no-fallback: " + result.message
        else:
            c.status, c.reason = "failed", str(result)
        return c
    c.placement = result.placement or c.placement
    c.figures = {**result.figures, "measured_seconds": seconds}
    state.usual_beside.pop(c.id, None)
    if result.beside_p50_ms is not None:
        now = result.beside_p50_ms
        now_mean = result.beside_mean_ms if result.beside_mean_ms is not None else now
        c.figures.update(beside_p50_ms=now, beside_mean_ms=now_mean)  # the yardstick, as measured beside it
        usual = float(np.median(state.beside)) if state.beside else now
        usual_mean = float(np.median(state.beside_mean)) if state.beside_mean else now_mean
        state.beside.append(now)
        state.beside_mean.append(now_mean)
        busy = now_mean > usual_mean * BUSY
        if state.estimator is not None and not busy:  # what a busy spell costs would not say what the next one costs
            state.estimator.learn_measure(wall, seconds, True)
        if busy:
            if retry and state.left() > seconds:  # the machine is busy now: wait a moment and measure again, once
                state.busy.add(c.id)
                time.sleep(min(2.0, max(0.0, state.left() / 20)))
                return measure_candidate(state, c, seconds, beside=True, retry=False)
            # still busy: ranked by its median scaled by how much slower the baseline's median ran beside it
            state.usual_beside[c.id] = usual
            state.scaled.add(c.id)
    elif state.estimator is not None:
        state.estimator.learn_measure(wall, seconds, False)
    c.p50_runs.append(round(float(result.figures["p50_ms"]), 5))
    with np.load(out_file, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    if c.stage == "baseline":
        state.reference = outputs
    gate = judge(outputs, state.reference, c.precision, state.tolerances, state.options.metrics, state.scores)
    c.gate = gate
    c.status, c.reason = ("passed", "") if gate.passed else ("rejected", f"accuracy gate: {gate.reason}")
    return c


def remeasure_better_half(state: SearchState, cands: list[Candidate], seconds: float) -> None:
    """Successive halving: the better half of the passing candidates gets a longer measurement."""
    passing = sorted((c for c in cands if c.status == "passed"), key=lambda c: rank_score(state, c))
    for c in passing[: max(1, (len(passing) + 1) // 2)]:
        if state.left() <= seconds:
            break
        measure_candidate(state, c, seconds, beside=True)
