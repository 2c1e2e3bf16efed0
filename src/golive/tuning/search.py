"""The staged search: baseline → model transforms → session settings → ahead-of-time graph.

Not a blind grid. Stage 1 measures each model variant briefly with default settings and re-measures
the better half (successive halving); INT8 and FP16 variants are built on the fastest correct fp32
variant, and the variant that keeps sensitive nodes in fp32 is only built when the plain INT8 ones
fail the gate. Stage 2 tunes session settings one knob at a time from the best so far, on the two
best models. Stage 3 saves ONNX Runtime's optimized graph so that start-up is fast, and keeps it
if it is as fast and still correct. Every candidate is measured in a worker process and judged by
the accuracy gate; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from golive._isolate import WorkerFailure, in_worker
from golive.errors import TransformError
from golive.events import StepContext
from golive.optimize import ModelFacts, TransformContext, apply_chain, get_transform
from golive.providers import CPU, short_name
from golive.runtime import SessionConfig
from golive.spec import TuneOptions
from golive.tuning.gate import judge
from golive.tuning.space import (
    NOISY,
    Candidate,
    default_session,
    invalid_reason,
    knob_value,
    session_knobs,
    session_precision,
    with_knob,
)
from golive.tuning.worker import Beside, Measurement, MeasureTask, measure_in_worker

log = logging.getLogger(__name__)

_NOISE = 0.02  # a change must beat the best by more than this share to replace it
# The baseline timed beside a candidate taking more than BUSY times its usual (median so far) mean time per run: the
# machine is busy. The mean, not the median: other processes preempt some runs and leave the rest alone, so on a
# 2-core AMD EPYC six busy-looping processes moved the yardstick's median 10-80% (and its quiet median jumps between
# two levels 30% apart) but its mean 4-5x (1.4-2.9 ms quiet, 7-14 ms with them, a 0.6-0.9 ms median run).
BUSY = 2.0
FUSIONS = ["ort_fusion", "onnxscript_fusion"]
REEXPORT = "torchscript_export"
INT8_FIRST = ["int8_dynamic", "int8_dynamic_per_channel", "int8_blockwise", "int8_static_qdq", "int8_qdq_matmul"]
# Per-token INT8 runs the same GEMMs as dynamic INT8 plus its quantizing ops: tried on a base where dynamic INT8 fails
# the gate (all-MiniLM-L6-v2), not where it passes (the 3-layer BERT: 11.6 ms against 10.6), unless asked for by name.
INT8_ACCURATE = "int8_per_token"
_CALIBRATED = ("int8_static_qdq", INT8_ACCURATE)
INT8_RESCUE = "int8_dynamic_keep_sensitive"


@dataclass
class SearchState:
    model: Path
    work: Path
    options: TuneOptions
    providers: list[str]
    available: list[str]
    tolerances: dict[str, tuple[float, float]]
    ctx: TransformContext
    step: StepContext
    started: float
    deadline: float
    candidates: list[Candidate] = field(default_factory=list)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the search left out, and why
    scores: set[str] = field(default_factory=set)  # outputs holding class scores: gated by top-1 agreement too
    inputs_at: Callable[[int], Path] | None = None  # throughput: measurement inputs at another batch size
    share_deadline: float | None = None  # the end of the current provider's share of the budget
    facts: ModelFacts | None = None  # read from the model's graph when first needed
    not_applicable: dict[str, list[str]] = field(default_factory=dict)  # why -> transforms with nothing to do here
    baseline: Candidate | None = None  # the yardstick re-measured beside the search's candidates (latency)
    beside: list[float] = field(default_factory=list)  # the baseline's p50 beside each measurement, in order (ms)
    beside_mean: list[float] = field(default_factory=list)  # and its mean time per run (ms)
    busy: set[str] = field(default_factory=set)  # candidates first measured while the machine ran slow
    # the baseline's usual p50 beside measurements, for the candidates ranked scaled (kept here, not in their figures)
    usual_beside: dict[str, float] = field(default_factory=dict)
    scaled: set[str] = field(default_factory=set)  # and those still busy when measured again, or with no time to

    @property
    def short_seconds(self) -> float:
        return float(min(max(self.options.budget / 40, 0.4), 8.0))

    def left(self) -> float:
        return min(self.deadline, self.share_deadline or self.deadline) - time.monotonic()

    def progress(self, message: str, payload: dict[str, Any] | None = None) -> None:
        """A tune event: done/total are seconds spent of the budget."""
        self.step.emit("tune", message, int(time.monotonic() - self.started), int(self.options.budget), payload)

    def stopping(self) -> bool:
        return self.step.cancel.is_set()


def allowed(state: SearchState, name: str, provider: str | None = None) -> bool:
    """Whether the search may try ``name`` (on ``provider``: one it suits; the others cannot help there). A transform
    with nothing to do on this model (decided from its graph) is not tried: the report says which, and why."""
    if provider is not None and get_transform(name).unavailable_for(provider):
        return False
    if state.options.transforms is not None and name not in state.options.transforms:
        return False
    if state.facts is None:
        state.facts = ModelFacts.of(state.model)
    why = get_transform(name).not_applicable(state.facts)
    if why:
        state.not_applicable.setdefault(why, [])
        if name not in state.not_applicable[why]:
            state.not_applicable[why].append(name)
        return False
    return True


def _new(state: SearchState, stage: str, transforms: list[str], session: SessionConfig) -> Candidate:
    """A new candidate, or the one already tried with the same transforms and settings."""
    disabled = sorted({*session.disabled_optimizers, *(o for t in transforms for o in get_transform(t).disables)})
    if disabled != session.disabled_optimizers:  # what a transform undid, the session must not redo at load
        session = session.model_copy(update={"disabled_optimizers": disabled})
    for c in state.candidates:
        if c.transforms == transforms and c.session == session and c.stage != "ahead-of-time":
            return c
    precision = next((get_transform(t).precision for t in transforms if get_transform(t).precision != "fp32"), "fp32")
    if precision == "fp32":  # the provider computing in lower precision (OpenVINO's bf16 hint, TensorRT's fp16)
        precision = session_precision(session) or precision
    c = Candidate(id=f"c{len(state.candidates):03d}", stage=stage, transforms=transforms, session=session, precision=precision)
    state.candidates.append(c)
    return c


def evaluate(state: SearchState, c: Candidate, seconds: float) -> Candidate:
    """Build the candidate's model, measure it in a worker, gate it. Outcomes are recorded on ``c``."""
    if c.status != "pending":
        return c  # tried already (the same transforms and settings reached from another stage)
    state.step.check()
    why = invalid_reason(c.session, c.transforms, state.available)
    if why:
        c.status, c.reason = "invalid", why
        return c
    if c.stage != "baseline" and state.left() <= 0:
        c.status, c.reason = "skipped", "the tuning budget was spent before it ran"
        return c
    state.progress(f"{c.stage}: {c.label()}")
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
        _report(state, c)
        return c
    info = [r.record() for r in results]
    c.transform_info, c.model = info, str(path)
    if (
        c.transforms
        and all(not i.get("fused", True) for i in info if i["transform"].endswith("_fusion"))
        and all(i["transform"].endswith("_fusion") for i in info)
    ):
        c.status, c.reason = "invalid", "found nothing to fuse in this model"
        return c
    _measure(state, c, seconds, beside=c.stage in ("model", "session"))
    _report(state, c)
    return c


def _report(state: SearchState, c: Candidate) -> None:
    """One event per candidate judged, carrying its row of the report."""
    f = c.figures
    cos = c.min_cosine
    row = {
        "id": c.id,
        "stage": c.stage,
        "transforms": c.transforms,
        "session": c.session.describe(),
        "precision": c.precision,
        "status": c.status,
        "reason": c.reason,
        "p50_ms": f.get("p50_ms"),
        "p99_ms": f.get("p99_ms"),
        "throughput": f.get("throughput"),
        "min_cosine": cos,
    }
    figure = f"p50 {f['p50_ms']:.3f} ms" if f.get("p50_ms") else c.reason[:80]
    state.progress(f"{c.id} {c.status}: {figure}", {"candidate": row})


def _measure(state: SearchState, c: Candidate, seconds: float, beside: bool = False, retry: bool = True) -> Candidate:
    """Measure ``c`` in a worker and gate it. ``beside``: the baseline is timed right after it in the same worker,
    so its figure can be ranked against candidates measured at other, busier or quieter, moments; one taken while
    the baseline took more than BUSY times its usual mean time per run is measured again after a pause."""
    out_file = state.work / "outputs" / f"{c.id}.npz"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    task = MeasureTask(
        model=c.model,
        session=c.session,
        inputs=str(state.work / "inputs.npz"),
        outputs=str(out_file),
        max_seconds=seconds,
        stable_within=_NOISE,
        concurrency=state.options.concurrency if state.options.objective == "throughput" else 1,
        trt_cache=str(state.work / "trt_cache"),  # TensorRT's engines, shared by the candidates, in the run folder
    )
    if state.baseline is not None and c is not state.baseline:  # a CUDA graph's output buffers take these shapes
        task.output_like = str(state.work / "outputs" / f"{state.baseline.id}.npz")
    yardstick = state.baseline if beside and state.options.objective == "latency" and c is not state.baseline else None
    if yardstick is not None and yardstick.model:
        task.beside = Beside(model=yardstick.model, session=yardstick.session, seconds=max(0.25, seconds / 4))
    state.step.check()
    result = measure_in_worker(task, timeout=max(60.0, 8 * seconds + 60), should_stop=state.stopping)
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
        if now_mean > usual_mean * BUSY:
            if retry and state.left() > seconds:  # the machine is busy now: wait a moment and measure again, once
                state.busy.add(c.id)
                time.sleep(min(2.0, max(0.0, state.left() / 20)))
                return _measure(state, c, seconds, beside=True, retry=False)
            # still busy: ranked by its median scaled by how much slower the baseline's median ran beside it
            state.usual_beside[c.id] = usual
            state.scaled.add(c.id)
    c.p50_runs.append(round(float(result.figures["p50_ms"]), 5))
    with np.load(out_file, allow_pickle=False) as z:
        outputs = {k: z[k] for k in z.files}
    if c.stage == "baseline":
        state.reference = outputs
    gate = judge(outputs, state.reference, c.precision, state.tolerances, state.options.metrics, state.scores)
    c.gate = gate
    c.status, c.reason = ("passed", "") if gate.passed else ("rejected", f"accuracy gate: {gate.reason}")
    return c


def _remeasure(state: SearchState, cands: list[Candidate], seconds: float) -> None:
    """Successive halving: the better half of the passing candidates gets a longer measurement."""
    passing = sorted((c for c in cands if c.status == "passed"), key=lambda c: rank_score(state, c))
    for c in passing[: max(1, (len(passing) + 1) // 2)]:
        if state.left() <= seconds:
            break
        _measure(state, c, seconds, beside=True)


def best_of(state: SearchState, cands: list[Candidate] | None = None) -> Candidate | None:
    passing = [c for c in (cands if cands is not None else state.candidates) if c.status == "passed"]
    return min(passing, key=lambda c: rank_score(state, c)) if passing else None


def rank_score(state: SearchState, c: Candidate) -> float:
    """The score candidates measured at different moments are ranked by (lower is better): a latency taken in a busy
    spell that did not pass is scaled by how much slower the baseline beside it ran than usually, so the spell does
    not decide the order; other figures as measured (a quiet machine's yardstick wavers too much to scale by)."""
    usual, beside = state.usual_beside.get(c.id), c.figures.get("beside_p50_ms")
    if usual and beside and "p50_ms" in c.figures:
        return float(c.figures["p50_ms"]) * float(usual) / float(beside)
    return c.score(state.options.objective)


def stage_models(state: SearchState, provider: str) -> list[Candidate]:
    default = default_session(
        provider,
        custom_ops=state.options.custom_ops,
        cpu_fallback=state.options.cpu_fallback or provider == CPU,
    )
    _note_unsuited(state, provider)
    tried = [evaluate(state, _new(state, "model", [], default), state.short_seconds)]
    # asked for by name and not placed by the stages below (a user's own transform, say): tried alone
    extra = [t for t in (state.options.transforms or []) if not get_transform(t).staged]
    for name in [*FUSIONS, *extra]:
        if allowed(state, name, provider):
            tried.append(evaluate(state, _new(state, "model", [name], default), state.short_seconds))
    # The export route: a transformer (a fusion found something to fuse, on this provider or another; where no
    # fusion suits the provider, a graph with Softmax and MatMul) whose PyTorch source is at hand is exported again
    # with the TorchScript exporter, which ONNX Runtime's optimizer fuses fully and OpenVINO reads as plain ops.
    fused = any(c.status == "passed" and c.transforms[:1] in ([f] for f in FUSIONS) for c in state.candidates)
    attention = {"Softmax", "MatMul"} <= _op_types(str(state.model))
    transformer = fused or (not any(allowed(state, f, provider) for f in FUSIONS) and attention)
    asked = state.options.transforms is not None and REEXPORT in state.options.transforms
    if state.ctx.source and allowed(state, REEXPORT, provider) and (transformer or asked):
        route = [REEXPORT, "ort_fusion"] if get_transform("ort_fusion").unavailable_for(provider) is None else [REEXPORT]
        tried.append(evaluate(state, _new(state, "model", route, default), state.short_seconds))
    _remeasure(state, tried, 2 * state.short_seconds)
    # Lower precision on two correct fp32 variants: which fusion quantizes best is measured, not guessed. The first is
    # the fastest with attention fused, when one has it: only a fused Attention quantizes whole (QAttention, or its
    # QKV GEMM under per-token INT8), and the fp32 routes measure too close together (MiniLM: 17.0 to 20.7 ms) for
    # their order to pick the INT8 base (there the fused route's INT8 ran 8.6-10 ms against 12.0-12.5 without).
    ranked = sorted((c for c in tried if c.status == "passed"), key=lambda c: rank_score(state, c))
    bases = precision_bases(ranked)
    reduced: list[Candidate] = []
    lower = [t for t in INT8_FIRST if allowed(state, t, provider) and (t not in _CALIBRATED or state.ctx.calibration)]
    if allowed(state, "fp16", provider):
        lower.append("fp16")
    named = state.options.transforms is not None and INT8_ACCURATE in state.options.transforms  # tried (or shown invalid)
    accurate = allowed(state, INT8_ACCURATE, provider) and (named or bool(state.ctx.calibration))
    for chain in bases:
        here = [evaluate(state, _new(state, "model", [*chain, name], default), state.short_seconds) for name in lower]
        dynamic_passed = any(c.status == "passed" and c.transforms[-1].startswith("int8_dynamic") for c in here)
        if accurate and (named or not dynamic_passed):
            here.append(evaluate(state, _new(state, "model", [*chain, INT8_ACCURATE], default), state.short_seconds))
        reduced.extend(here)
    if allowed(state, INT8_RESCUE, provider) and not any(c.status == "passed" and c.precision == "int8" for c in reduced):
        reduced.append(evaluate(state, _new(state, "model", [*bases[0], INT8_RESCUE], default), state.short_seconds))
    _remeasure(state, reduced, 2 * state.short_seconds)
    return tried + reduced + refine(state, tried + reduced, default)


def _note_unsuited(state: SearchState, provider: str) -> None:
    """Say once per provider which transforms the search leaves out there, and why."""
    if provider == CPU:
        return
    names = state.options.transforms if state.options.transforms is not None else [*FUSIONS, *INT8_FIRST, INT8_ACCURATE]
    unsuited = [t for t in names if get_transform(t).unavailable_for(provider)]
    if unsuited:
        state.notes.append(
            f"{short_name(provider)}: {', '.join(unsuited)} not tried there (they make ONNX Runtime's own contrib or "
            "QOperator INT8 operators, which that provider does not run; its INT8 route is QDQ)"
        )


def _attention_fused(c: Candidate) -> bool:
    """Whether a fusion in the candidate's chain fused attention (ONNX Runtime's counts: Attention,
    MultiHeadAttention; onnxscript's: attention, mha1, mha2, gqa...)."""
    return any(
        n and ("attention" in k.lower() or k.lower().startswith(("mha", "gqa")))
        for info in c.transform_info
        for k, n in (info.get("fused") or {}).items()
    )


def precision_bases(ranked: list[Candidate]) -> list[list[str]]:
    """The two fp32 chains lower precision starts from, given the passed fp32 candidates fastest first: the fastest
    with attention fused, when one has it, then the fastest other."""
    first = next((c for c in ranked if _attention_fused(c)), None)
    return [c.transforms for c in ([first] if first else []) + [c for c in ranked if c is not first]][:2] or [[]]


def refine(state: SearchState, cands: list[Candidate], default: SessionConfig) -> list[Candidate]:
    """Variations on the fastest correct model, each measured and gated, never assumed: larger MatMulNBits blocks,
    SkipLayerNormalization split into Add + LayerNormalization (when the model holds one), the GELU approximation
    (when a Gelu was fused), and the model fixed to the measured shape (when the user says the deployment's shape
    is fixed). One that trades accuracy is kept only when it beats the model it varies by more than the noise,
    re-measured back to back; an exact one (the split, the fixed shape) when it wins a duel in alternation."""
    best = best_of(state, cands)
    if best is None:
        return []
    ops = _op_types(best.model) if best.model else set()
    steps: list[tuple[str, Callable[[list[str]], list[str]]]] = []
    if "int8_blockwise" in best.transforms:
        steps.append(("int8_blockwise_128", lambda ch: [t if t != "int8_blockwise" else "int8_blockwise_128" for t in ch]))
    if "SkipLayerNormalization" in ops:
        steps.append(("split_skip_layernorm", lambda ch: [*ch, "split_skip_layernorm"]))
    if ops & {"Gelu", "BiasGelu"}:
        steps.append(("gelu_approximation", lambda ch: [*ch, "gelu_approximation"]))
    if state.options.fixed_shape:
        steps.append(("fixed_shape", lambda ch: [*ch, "fixed_shape"]))
    tried = []
    for name, vary in steps:
        if not allowed(state, name, best.session.providers[0]) or state.left() <= 0:
            continue
        c = evaluate(state, _new(state, "model", vary(best.transforms), default), state.short_seconds)
        tried.append(c)
        if c.status != "passed":
            continue
        if name in _EXACT:
            if duel(state, best, c) is c:
                best = c
        elif beats(state, c, best):
            best = c
    return tried


# Variations that compute the same function by the same arithmetic: no accuracy is traded, so the margin that
# keeps an approximation from winning on noise is not needed; they win a duel in alternation instead. The split's
# gain is a few percent to 13% (bert3 with dynamic INT8, within alternating rounds: 0.87x on a 2-core slice of an
# AMX Xeon, 0.97x on a 2-core AVX2 EPYC, 0.88-0.99x on an AVX-512 EPYC), which one figure each side can miss.
_EXACT = {"split_skip_layernorm", "fixed_shape"}


def _op_types(model: str) -> set[str]:
    import onnx

    try:
        return {n.op_type for n in onnx.load(model, load_external_data=False).graph.node}
    except Exception:  # an unreadable model varies no further; its own measurement said what went wrong
        return set()


def stage_session(state: SearchState, start: Candidate) -> Candidate:
    """Coordinate descent over session knobs from ``start``; returns the best candidate found."""
    best = start
    provider = start.session.providers[0]
    for knob, values in session_knobs(provider, objective=state.options.objective):
        for value in values:
            current = knob_value(best.session, knob)
            if (values[0] if current is None else current) == value:
                continue
            c = evaluate(
                state, _new(state, "session", best.transforms, with_knob(best.session, knob, value)), state.short_seconds
            )
            if c.status == "passed" and beats(state, c, best):
                best = c
    return best


def beats(state: SearchState, challenger: Candidate, incumbent: Candidate) -> bool:
    """Whether ``challenger`` (just measured) is faster than ``incumbent`` re-measured right after it.

    On a small or shared machine the same configuration measures tens of percent apart at different
    moments; figures taken back to back are the ones worth comparing.
    """
    if state.left() > 0:  # with the budget spent, the figures at hand decide (confirm() re-measures the winner)
        _measure(state, incumbent, state.short_seconds, beside="beside_p50_ms" in challenger.figures)
    if incumbent.status != "passed":
        return True
    return rank_score(state, challenger) < rank_score(state, incumbent) * (1 - _NOISE)


def stage_offline(state: SearchState, best: Candidate) -> Candidate:
    """Save ONNX Runtime's optimized graph; load it with optimizations off, so start-up skips them."""
    folder = state.work / "models" / f"{best.id}-ort-optimized"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    c = _new(
        state,
        "ahead-of-time",
        [*best.transforms, "ort_optimized_graph"],
        best.session.model_copy(update={"graph_optimization_level": "disable"}),
    )
    c.precision = best.precision
    ok, why = in_worker(
        "golive.runtime:save_optimized_graph",
        (best.model, best.session, str(target)),
        timeout=max(120.0, state.left() + 60),
        should_stop=state.stopping,
    )
    if not ok:
        state.step.check()
        c.status, c.reason = "failed", f"saving the optimized graph failed: {why}"
        return best
    c.model = str(target)
    c.transform_info = [
        *best.transform_info,
        {"transform": "ort_optimized_graph", "saved_at_level": best.session.graph_optimization_level},
    ]
    # Measured in alternation with the model it came from: keep it only if it is not slower.
    if duel(state, best, c, prefer_challenger=True) is c:
        return c
    if c.status == "passed":
        c.reason = "as correct, but not faster than the graph optimized at load time"
    return best


def duel(
    state: SearchState, incumbent: Candidate, challenger: Candidate, rounds: int = 2, prefer_challenger: bool = False
) -> Candidate:
    """The faster of two candidates, measured in alternation (challenger, incumbent, challenger, ...) whatever is
    left of the budget: on a small or shared machine a figure taken minutes earlier, in a slower or faster moment,
    decides nothing. A tie goes to the incumbent, or to the challenger when ``prefer_challenger``."""
    sums = {challenger.id: 0.0, incumbent.id: 0.0}
    for _ in range(rounds):
        for c in (challenger, incumbent):
            _measure(state, c, state.short_seconds)
            if c.status != "passed":
                return incumbent if c is challenger else challenger
            sums[c.id] += c.score(state.options.objective)
    if prefer_challenger:
        return challenger if sums[challenger.id] <= sums[incumbent.id] else incumbent
    return challenger if sums[challenger.id] < sums[incumbent.id] else incumbent


def run_search(state: SearchState) -> tuple[Candidate, Candidate]:
    """Returns (baseline, best)."""
    baseline = evaluate(
        state,
        _new(state, "baseline", [], SessionConfig(custom_ops=state.options.custom_ops)),
        max(1.0, 2.5 * state.short_seconds),
    )
    state.baseline = baseline
    if baseline.status != "passed":
        from golive.errors import GoliveError

        raise GoliveError(
            f"the model does not run with a default ONNX Runtime session: {baseline.reason}", hint="golive verify it first"
        )
    per_provider = []
    for i, provider in enumerate(state.providers):
        # each provider gets an equal share of what is left, so the first cannot spend the second's
        state.share_deadline = time.monotonic() + max(0.0, state.deadline - time.monotonic()) / (len(state.providers) - i)
        cands = stage_models(state, provider)
        ranked = sorted((c for c in cands if c.status == "passed"), key=lambda c: rank_score(state, c))
        tuned = [stage_session(state, c) for c in ranked[:2]]
        if len(tuned) == 2 and tuned[1] is not tuned[0]:
            tuned = [duel(state, tuned[0], tuned[1])]
        if tuned:
            per_provider.append(tuned[0])
    state.share_deadline = None
    if len(per_provider) > 1:  # across providers, the winner is decided in alternation too
        per_provider = [_duel_all(state, per_provider)]
    best = best_of(state, per_provider) or baseline
    if best.session.providers[0] != CPU and best.stage != "baseline":
        # another provider compiles the graph itself: ONNX Runtime's graph saved for the CPU is not what it runs
        state.notes.append(
            f"ONNX Runtime's optimized graph is not saved ahead of time for {short_name(best.session.providers[0])}: "
            "that provider compiles the graph itself when the session is made"
        )
    elif best.stage != "baseline" and state.left() > 0:
        best = stage_offline(state, best)
    elif best.stage != "baseline":
        state.notes.append(
            "ONNX Runtime's optimized graph was not saved ahead of time: the budget was spent (a larger --budget tries it)"
        )
    if best is not baseline:
        best = confirm(state, baseline, best)
    _note_steadiness(state)
    stage_batch(state, best)
    for why, names in state.not_applicable.items():
        state.notes.append(f"not applicable, so not tried: {', '.join(names)} ({why})")
    return baseline, best


def _note_steadiness(state: SearchState) -> None:
    """Say how steady the machine was during the search, as the baseline timed beside the candidates saw it: what
    was found busy when measured (against the usual time known then), and what looks busy against the final one."""
    if len(state.beside_mean) < 2:
        return
    usual = float(np.median(state.beside_mean))
    slow = sum(b > usual * BUSY for b in state.beside_mean)
    span = (
        f"the baseline, timed beside {len(state.beside_mean)} measurements, took {min(state.beside_mean):.3g}-"
        f"{max(state.beside_mean):.3g} ms a run on average (median run {min(state.beside):.3g}-{max(state.beside):.3g} ms)"
    )
    if not slow and not state.busy and not state.scaled:
        state.notes.append(f"a steady machine during the search: {span}, never {BUSY:g}x its usual {usual:.3g} ms")
        return

    def many(n: int, what: str) -> str:
        return f"{n} {what}{'s' if n != 1 else ''}"

    found = [f"{many(len(state.busy), 'candidate')} measured again after a pause"] if state.busy else []
    if state.scaled:
        found.append(f"{many(len(state.scaled), 'candidate')} ranked by median latency scaled to the baseline's usual median")
    if not found:  # slow only against the usual time known at the end: early measurements, before it was known
        found.append("taken before the usual time was known, they stand as measured")
    state.notes.append(
        f"a busy machine during the search: {span}; {many(slow, 'measurement')} took more than {BUSY:g}x its usual "
        f"{usual:.3g} ms: " + "; ".join(found)
    )


def _duel_all(state: SearchState, finalists: list[Candidate]) -> Candidate:
    ranked = sorted(finalists, key=lambda c: c.score(state.options.objective))
    winner = ranked[0]
    for challenger in ranked[1:]:
        if state.left() > 0:
            winner = duel(state, winner, challenger)
    return winner


def stage_batch(state: SearchState, best: Candidate) -> None:
    """Throughput: the best configuration measured at batch sizes 1, 2, 4, ... up to --max-batch (items/s for
    each). Same model and settings, so the gate's verdict at the search's batch size stands for them."""
    if state.options.objective != "throughput" or state.inputs_at is None:
        return
    for size in [b for b in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if b <= state.options.max_batch]:
        c = Candidate(
            id=f"c{len(state.candidates):03d}",
            stage="batch",
            transforms=best.transforms,
            session=best.session,
            precision=best.precision,
            model=best.model,
            batch=size,
        )
        state.candidates.append(c)
        state.step.check()
        task = MeasureTask(
            model=c.model,
            session=c.session,
            inputs=str(state.inputs_at(size)),
            outputs=str(state.work / "outputs" / f"{c.id}.npz"),
            max_seconds=state.short_seconds,
            min_runs=10,
            stable_within=_NOISE,
            concurrency=state.options.concurrency,
        )
        result = measure_in_worker(task, timeout=max(60.0, 6 * state.short_seconds + 60), should_stop=state.stopping)
        state.step.check()
        if isinstance(result, Measurement):  # the placement is the same as the candidate it varies
            c.figures, c.status = {**result.figures, "measured_seconds": state.short_seconds}, "passed"
            c.reason = f"{best.id} at batch {size} (same model and settings; gated at the search's batch size)"
        else:
            c.status, c.reason = "failed", str(result)
        _report(state, c)


def confirm(state: SearchState, baseline: Candidate, best: Candidate, rounds: int = 3) -> Candidate:
    """Re-measure the winner and the baseline in alternation: on a busy or small machine a single
    measurement can crown noise. Both keep the median of their rounds; the winner must still win."""
    samples: dict[str, list[dict]] = {baseline.id: [], best.id: []}

    def noisy() -> bool:  # the rounds of either lie far apart: a busy spell; more rounds outvote it
        return any(_spread([f["p50_ms"] for f in samples[c.id]]) > NOISY for c in (baseline, best))

    done = 0
    while done < rounds or (done < rounds + 4 and noisy()):
        for c in (baseline, best):
            _measure(state, c, state.short_seconds)
            if c.status != "passed":
                return baseline if c is best else best
            samples[c.id].append(dict(c.figures))
        done += 1
    rounds = done
    if noisy():
        state.notes.append(
            f"the machine was busy while the best and the baseline were re-measured ({rounds} alternating rounds, "
            f"spread {max(_spread([f['p50_ms'] for f in samples[c.id]]) for c in (baseline, best)):.0%}): the speed-up is "
            "uncertain; tune again on a quieter machine"
        )
    else:
        state.notes.append(
            f"steady figures: the best and the baseline re-measured in {rounds} alternating rounds lay within "
            f"±{max(_spread([f['p50_ms'] for f in samples[c.id]]) for c in (baseline, best)) / 2:.0%}"
        )
    for c in (baseline, best):
        runs = sorted(samples[c.id], key=lambda f: c.score_of(f, state.options.objective))
        c.figures = {
            **runs[len(runs) // 2],
            "confirm_rounds": rounds,
            "confirm_p50_ms": [round(f["p50_ms"], 4) for f in samples[c.id]],
        }
    if best.score(state.options.objective) < baseline.score(state.options.objective) * (1 - _NOISE):
        return best
    best.reason = "measured faster during the search, but not faster than the baseline when both were re-measured in alternation"
    return baseline


def _spread(values: list[float]) -> float:
    """(max - min) / median; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mid = sorted(values)[len(values) // 2]
    return (max(values) - min(values)) / mid if mid else 0.0


def copy_model(src: Path, dst_dir: Path) -> Path:
    """Copy a model into ``dst_dir`` as model.onnx, with the external data files it names (same names)."""
    from golive.rundir import model_files

    dst_dir.mkdir(parents=True, exist_ok=True)
    model, *data = model_files(src)
    shutil.copy2(model, dst_dir / "model.onnx")
    for f in data:  # at the location the model names, relative to it
        target = dst_dir / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
    return dst_dir / "model.onnx"
