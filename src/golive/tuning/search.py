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
import time
from collections.abc import Callable

from golive._isolate import in_worker
from golive.errors import GoliveError
from golive.optimize import get_transform
from golive.providers import CPU, short_name
from golive.runtime import SessionConfig
from golive.tuning.duel import beats, confirm, duel, duel_all, note_steadiness
from golive.tuning.measuring import evaluate, remeasure_better_half
from golive.tuning.planning import (
    FUSIONS,
    INT8_ACCURATE,
    INT8_FIRST,
    INT8_RESCUE,
    REEXPORT,
    direct_lower,
    fp32_variants,
    gain,
    has_attention,
    note_estimates,
    plan,
    reexport_route,
)
from golive.tuning.space import (
    Candidate,
    default_session,
    knob_value,
    session_knobs,
    with_knob,
)
from golive.tuning.state import NOISE, SearchState, allowed, best_of, new_candidate, rank_score, report_candidate
from golive.tuning.worker import Measurement, MeasureTask, measure_in_worker

__all__ = ["SearchState", "precision_bases", "run_search"]

log = logging.getLogger(__name__)


def stage_models(state: SearchState, provider: str) -> list[Candidate]:
    default = default_session(
        provider,
        custom_ops=state.options.custom_ops,
        cpu_fallback=state.options.cpu_fallback or provider == CPU,
    )
    _note_unsuited(state, provider)
    tried = [evaluate(state, new_candidate(state, "model", [], default), state.short_seconds)]
    variants, lower = fp32_variants(state, provider)
    reduced: list[Candidate] = []
    named = state.options.transforms is not None and INT8_ACCURATE in state.options.transforms  # tried (or shown invalid)
    accurate = allowed(state, INT8_ACCURATE, provider) and (named or bool(state.ctx.calibration))
    ahead = 0  # the variants tried before the early lower precision: up to the first the budget pays for
    direct = direct_lower(state, variants, lower)
    if direct is not None:
        reduced.append(evaluate(state, new_candidate(state, "model", [direct], default), state.short_seconds))
    while ahead < len(variants):
        tried.append(evaluate(state, new_candidate(state, "model", variants[ahead], default), state.short_seconds))
        ahead += 1
        if tried[-1].status != "skipped":
            break
    if variants:
        base = tried[-1].transforms if tried[-1].status == "passed" else []
        lower.sort(key=lambda t: -gain(state, [*base, t]))
        rest = max([gain(state, v) for v in variants[ahead:]] + [1.0]) * (1 + NOISE)
        # the likeliest lower precision; per-token INT8 where it is the only INT8 asked for
        likeliest = lower[0] if lower else INT8_ACCURATE if accurate else None
        if likeliest is not None and gain(state, [*base, likeliest]) > rest:
            first = evaluate(state, new_candidate(state, "model", [*base, likeliest], default), state.short_seconds)
            reduced.append(first)
            # the likeliest INT8 failed the gate (all-MiniLM-L6-v2: cosine 0.92): per-token INT8 is the family's next
            if first.status == "rejected" and accurate and gain(state, [*base, INT8_ACCURATE]) > rest:
                reduced.append(
                    evaluate(state, new_candidate(state, "model", [*base, INT8_ACCURATE], default), state.short_seconds)
                )
    for chain in variants[ahead:]:
        tried.append(evaluate(state, new_candidate(state, "model", chain, default), state.short_seconds))
    # the export route found late: a fusion found something to fuse in a graph without Softmax and MatMul, or no
    # fusion suits the provider and the graph has them
    fused = any(c.status == "passed" and c.transforms[:1] in ([f] for f in FUSIONS) for c in state.candidates)
    no_fusion_here = not any(allowed(state, f, provider) for f in FUSIONS)
    exportable = bool(state.ctx.source) and allowed(state, REEXPORT, provider)
    attention = has_attention(state)
    if exportable and reexport_route(provider) not in variants and (fused or (no_fusion_here and attention)):
        tried.append(evaluate(state, new_candidate(state, "model", reexport_route(provider), default), state.short_seconds))
    remeasure_better_half(state, tried, 2 * state.short_seconds)
    # Lower precision on two correct fp32 variants: which fusion quantizes best is measured, not guessed. The first is
    # the fastest with attention fused, when one has it: only a fused Attention quantizes whole (QAttention, or its
    # QKV GEMM under per-token INT8), and the fp32 routes measure too close together (MiniLM: 17.0 to 20.7 ms) for
    # their order to pick the INT8 base (there the fused route's INT8 ran 8.6-10 ms against 12.0-12.5 without).
    ranked = sorted((c for c in tried if c.status == "passed"), key=lambda c: rank_score(state, c))
    bases = precision_bases(ranked)
    for chain in bases:
        ordered = sorted(lower, key=lambda t: -gain(state, [*chain, t]))
        here = [evaluate(state, new_candidate(state, "model", [*chain, name], default), state.short_seconds) for name in ordered]
        dynamic_passed = any(c.status == "passed" and c.transforms[-1].startswith("int8_dynamic") for c in here)
        if accurate and (named or not dynamic_passed):
            here.append(evaluate(state, new_candidate(state, "model", [*chain, INT8_ACCURATE], default), state.short_seconds))
        reduced.extend(c for c in here if all(c is not r for r in reduced))
    if allowed(state, INT8_RESCUE, provider) and not any(c.status == "passed" and c.precision == "int8" for c in reduced):
        reduced.append(evaluate(state, new_candidate(state, "model", [*bases[0], INT8_RESCUE], default), state.short_seconds))
    remeasure_better_half(state, reduced, 2 * state.short_seconds)
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
    if not best.transforms:  # the model as it is: its facts are read already (a 500 MB GPT-2 takes 3 s to read again)
        ops = set(state.model_facts().op_types)
    else:
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
        c = evaluate(state, new_candidate(state, "model", vary(best.transforms), default), state.short_seconds)
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
                state, new_candidate(state, "session", best.transforms, with_knob(best.session, knob, value)), state.short_seconds
            )
            if c.status != "passed":
                continue
            if beats(state, c, best):
                best = _settled(state, best, c)
            elif _cheap_duel(state) and rank_score(state, c) < rank_score(state, best) * (1 + CLOSE):
                # lost one pair by less than the noise where rounds cost little: the rounds decide (LightGBM's 12 µs
                # ensemble: intra=1 lost a pair at 11.8 µs against 11.6, and ran 12 against 17 µs side by side)
                best = duel(state, best, c)
    return best


# A session setting that wins a back-to-back pair by less than CLOSE is decided in alternating rounds (when the budget
# left pays for them; otherwise the incumbent stays): on a 2-core machine one pair moves by +-5%, and the exhaustive
# tune of the 3-layer BERT once kept two settings that measured 25% slower side by side afterwards.
CLOSE = 0.08


def _cheap_duel(state: SearchState) -> bool:
    """Whether a duel (two alternating rounds) costs under a tenth of what is left of the search."""
    est = state.estimator
    return est is not None and 4 * est.measure_cost(beside=False) < 0.1 * max(state.left(), 0.0)


def _settled(state: SearchState, incumbent: Candidate, challenger: Candidate) -> Candidate:
    est = state.estimator
    # Where the duel costs little of what is left (a model of microseconds), a single pair decides nothing, however wide
    # its margin: a 12 µs LightGBM ensemble measured 12 or 20 µs by the moment, and an auto tune that took a setting on
    # one pair ended with parallel execution, 44% slower side by side than the default session.
    if not _cheap_duel(state) and rank_score(state, challenger) < rank_score(state, incumbent) * (1 - CLOSE):
        return challenger
    if est is not None and state.left() < 4 * est.measure_cost(beside=False):
        return incumbent
    return duel(state, incumbent, challenger)


def _offline_and_confirm(state: SearchState) -> float:
    """Seconds the ahead-of-time graph (a build, a duel of two rounds) and the confirm rounds are expected to take."""
    est = state.estimator
    if est is None:
        return 0.0
    return est.build_seconds(["ort_optimized_graph"]) + 10 * est.measure_cost(beside=False)


def stage_offline(state: SearchState, best: Candidate) -> Candidate:
    """Save ONNX Runtime's optimized graph; load it with optimizations off, so start-up skips them."""
    folder = state.work / "models" / f"{best.id}-ort-optimized"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "model.onnx"
    c = new_candidate(
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


def run_search(state: SearchState) -> tuple[Candidate, Candidate]:
    """Returns (baseline, best)."""
    baseline = evaluate(
        state,
        new_candidate(state, "baseline", [], SessionConfig(custom_ops=state.options.custom_ops)),
        state.short_seconds,
    )
    state.baseline = baseline
    if baseline.status != "passed":
        raise GoliveError(
            f"the model does not run with a default ONNX Runtime session: {baseline.reason}", hint="golive verify it first"
        )
    plan(state, baseline)
    if not state.options.session_search:
        state.notes.append(
            "session settings were not searched (session_search off): every candidate ran with its provider's default session"
        )
    per_provider = []
    for i, provider in enumerate(state.providers):
        # each provider gets an equal share of what is left, so the first cannot spend the second's
        state.share_deadline = time.monotonic() + max(0.0, state.search_end() - time.monotonic()) / (len(state.providers) - i)
        cands = stage_models(state, provider)
        ranked = sorted((c for c in cands if c.status == "passed"), key=lambda c: rank_score(state, c))
        # off: the two fastest models with the default session, decided in alternation
        tuned = [stage_session(state, c) for c in ranked[:2]] if state.options.session_search else ranked[:2]
        if len(tuned) == 2 and tuned[1] is not tuned[0]:
            # in alternation while the search has time; past it (or against the baseline, which the confirm rounds
            # measure the winner against next) the figures at hand decide: a 30 s tune of a 240 ms Whisper encoder
            # spent 14 s past its search's end on a duel of its INT8 candidate with the baseline
            if state.left() > 0 and all(c is not state.baseline for c in tuned):
                tuned = [duel(state, tuned[0], tuned[1])]
            else:
                tuned = [min(tuned, key=lambda c: rank_score(state, c))]
        if tuned:
            per_provider.append(tuned[0])
    state.share_deadline = None
    if len(per_provider) > 1:  # across providers, the winner is decided in alternation too
        per_provider = [duel_all(state, per_provider)]
    best = best_of(state, per_provider) or baseline
    if best.session.providers[0] != CPU and best.stage != "baseline":
        # another provider compiles the graph itself: ONNX Runtime's graph saved for the CPU is not what it runs
        state.notes.append(
            f"ONNX Runtime's optimized graph is not saved ahead of time for {short_name(best.session.providers[0])}: "
            "that provider compiles the graph itself when the session is made"
        )
    elif best.stage != "baseline" and (state.auto or state.budget_left() > _offline_and_confirm(state)):
        # --budget auto planned it (one of the families it tries): run it though the search overran its plan (GPT-2's
        # auto tune dropped it, 14.5% behind the exhaustive run's best, which was its winner with this graph saved)
        best = stage_offline(state, best)
    elif best.stage != "baseline":
        state.notes.append(
            "ONNX Runtime's optimized graph was not saved ahead of time: the budget was spent (a larger --budget tries it)"
        )
    if best is not baseline:
        best = confirm(state, baseline, best)
    note_steadiness(state)
    note_estimates(state, baseline, best)
    stage_batch(state, best)
    for why, names in state.not_applicable.items():
        state.notes.append(f"not applicable, so not tried: {', '.join(names)} ({why})")
    return baseline, best


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
            stable_within=NOISE,
            concurrency=state.options.concurrency,
        )
        result = measure_in_worker(task, timeout=max(60.0, 6 * state.short_seconds + 60), should_stop=state.stopping)
        state.step.check()
        if isinstance(result, Measurement):  # the placement is the same as the candidate it varies
            c.figures, c.status = {**result.figures, "measured_seconds": state.short_seconds}, "passed"
            c.reason = f"{best.id} at batch {size} (same model and settings; gated at the search's batch size)"
        else:
            c.status, c.reason = "failed", str(result)
        report_candidate(state, c)
