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
from golive.cpu import cpu_features
from golive.errors import GoliveError
from golive.optimize import ModelFacts, get_transform
from golive.providers import CPU, short_name
from golive.runtime import SessionConfig
from golive.tuning.duel import beats, confirm, duel, duel_all, note_steadiness
from golive.tuning.estimate import Estimator, OpMix, cpu_class, measure_seconds
from golive.tuning.measuring import evaluate, remeasure_better_half
from golive.tuning.space import (
    Candidate,
    default_session,
    knob_value,
    session_knobs,
    with_knob,
)
from golive.tuning.state import NOISE, SearchState, allowed, best_of, new_candidate, rank_score, report_candidate
from golive.tuning.worker import Measurement, MeasureTask, measure_in_worker

__all__ = ["SearchState", "auto_plan", "plan", "precision_bases", "run_search"]

log = logging.getLogger(__name__)

FUSIONS = ["ort_fusion", "onnxscript_fusion"]


REEXPORT = "torchscript_export"


INT8_FIRST = ["int8_dynamic", "int8_dynamic_per_channel", "int8_blockwise", "int8_static_qdq", "int8_qdq_matmul"]


# Per-token INT8 runs the same GEMMs as dynamic INT8 plus its quantizing ops: tried on a base where dynamic INT8 fails
# the gate (all-MiniLM-L6-v2), not where it passes (the 3-layer BERT: 11.6 ms against 10.6), unless asked for by name.
INT8_ACCURATE = "int8_per_token"


_CALIBRATED = ("int8_static_qdq", INT8_ACCURATE)


INT8_RESCUE = "int8_dynamic_keep_sensitive"


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
    direct = _direct_lower(state, variants, lower)
    if direct is not None:
        reduced.append(evaluate(state, new_candidate(state, "model", [direct], default), state.short_seconds))
    while ahead < len(variants):
        tried.append(evaluate(state, new_candidate(state, "model", variants[ahead], default), state.short_seconds))
        ahead += 1
        if tried[-1].status != "skipped":
            break
    if variants:
        base = tried[-1].transforms if tried[-1].status == "passed" else []
        lower.sort(key=lambda t: -_gain(state, [*base, t]))
        rest = max([_gain(state, v) for v in variants[ahead:]] + [1.0]) * (1 + NOISE)
        # the likeliest lower precision; per-token INT8 where it is the only INT8 asked for
        likeliest = lower[0] if lower else INT8_ACCURATE if accurate else None
        if likeliest is not None and _gain(state, [*base, likeliest]) > rest:
            first = evaluate(state, new_candidate(state, "model", [*base, likeliest], default), state.short_seconds)
            reduced.append(first)
            # the likeliest INT8 failed the gate (all-MiniLM-L6-v2: cosine 0.92): per-token INT8 is the family's next
            if first.status == "rejected" and accurate and _gain(state, [*base, INT8_ACCURATE]) > rest:
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
    attention = _has_attention(state)
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
        ordered = sorted(lower, key=lambda t: -_gain(state, [*chain, t]))
        here = [evaluate(state, new_candidate(state, "model", [*chain, name], default), state.short_seconds) for name in ordered]
        dynamic_passed = any(c.status == "passed" and c.transforms[-1].startswith("int8_dynamic") for c in here)
        if accurate and (named or not dynamic_passed):
            here.append(evaluate(state, new_candidate(state, "model", [*chain, INT8_ACCURATE], default), state.short_seconds))
        reduced.extend(c for c in here if all(c is not r for r in reduced))
    if allowed(state, INT8_RESCUE, provider) and not any(c.status == "passed" and c.precision == "int8" for c in reduced):
        reduced.append(evaluate(state, new_candidate(state, "model", [*bases[0], INT8_RESCUE], default), state.short_seconds))
    remeasure_better_half(state, reduced, 2 * state.short_seconds)
    return tried + reduced + refine(state, tried + reduced, default)


def fp32_variants(state: SearchState, provider: str) -> tuple[list[list[str]], list[str]]:
    """The fp32 model variants the search tries on ``provider``, most promising first, and the lower-precision
    transforms built on them. Most promising: by what the variant and the lower precision built on it are expected to
    gain (on a BERT the re-export's fused attention quantizes whole: its INT8 ran 9.1 ms against 11.3 ms on the dynamo
    export's fusion). The export route: a transformer (a graph with Softmax and MatMul) whose PyTorch source is at hand
    is exported again with the TorchScript exporter, which ONNX Runtime's optimizer fuses fully (Attention, then
    QAttention under INT8) and OpenVINO reads as plain ops."""
    # asked for by name and not placed by the stages (a user's own transform, say): tried alone
    extra = [t for t in (state.options.transforms or []) if not get_transform(t).staged]
    variants = [[n] for n in [*FUSIONS, *extra] if allowed(state, n, provider)]
    asked = state.options.transforms is not None and REEXPORT in state.options.transforms
    attention = _has_attention(state)
    if state.ctx.source and allowed(state, REEXPORT, provider) and (attention or asked):
        variants.append(reexport_route(provider))
    lower = lower_precision(state, provider)
    variants.sort(key=lambda chain: -max([_gain(state, chain)] + [_gain(state, [*chain, t]) for t in lower]))
    # where the budget is tight, a variant that would take more than half of what is left with its first lower
    # precision goes after those that leave room (a 30 s tune of all-MiniLM-L6-v2 spent 15 s on the re-export and
    # reached no INT8 candidate); a large budget keeps the order of promise
    est = state.estimator
    if est is not None and not state.auto:
        window = 0.5 * state.left()
        fits = [v for v in variants if est.estimate([*v, *lower[:1]], state.built).cost_s <= window]
        variants = fits + [v for v in variants if v not in fits]
    return variants, lower


def _direct_lower(state: SearchState, variants: list[list[str]], lower: list[str]) -> str | None:
    """Under an explicit budget too small for the first fp32 variant and a lower precision built on it: the lower
    precision expected to gain most, built on the model as it is, tried first. The fusions gain 0-15%, INT8 on the
    weight MatMuls 2-3x (a 30 s tune of a 240 ms Whisper encoder reached a fusion and nothing else, 1.00x; its dynamic
    INT8 alone ran 1.37x in the exhaustive run)."""
    est = state.estimator
    if est is None or state.auto or not variants or not lower:
        return None
    left = state.left()
    fitting = [t for t in lower if est.estimate([t], state.built).cost_s <= left]  # per-token INT8 calibrates: dearer
    if not fitting:
        return None
    likeliest = max(fitting, key=lambda t: _gain(state, [t]))
    first = est.estimate(variants[0], state.built).cost_s
    on_it = est.estimate([*variants[0], likeliest], state.built | {"+".join(variants[0])}).cost_s
    if first + on_it <= left or _gain(state, [likeliest]) <= _gain(state, variants[0]) * (1 + NOISE):
        return None
    return likeliest


def lower_precision(state: SearchState, provider: str) -> list[str]:
    """The INT8 and FP16 transforms the search builds on its fp32 bases here (the calibrated ones with calibration)."""
    lower = [t for t in INT8_FIRST if allowed(state, t, provider) and (t not in _CALIBRATED or state.ctx.calibration)]
    if allowed(state, "fp16", provider):
        lower.append("fp16")
    return lower


def reexport_route(provider: str) -> list[str]:
    return [REEXPORT, "ort_fusion"] if get_transform("ort_fusion").unavailable_for(provider) is None else [REEXPORT]


def _gain(state: SearchState, chain: list[str]) -> float:
    """The chain's expected speed-up over the baseline (1.0 before the estimate exists)."""
    return state.estimator.speedup(chain) if state.estimator is not None else 1.0


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


def _has_attention(state: SearchState) -> bool:
    """Softmax and MatMul in the model's graph (read once, into the search's ModelFacts)."""
    return {"Softmax", "MatMul"} <= state.model_facts().op_types


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
            if c.status == "passed" and beats(state, c, best):
                best = _settled(state, best, c)
    return best


# A session setting that wins a back-to-back pair by less than CLOSE is decided in alternating rounds (when the budget
# left pays for them; otherwise the incumbent stays): on a 2-core machine one pair moves by +-5%, and the exhaustive
# tune of the 3-layer BERT once kept two settings that measured 25% slower side by side afterwards.
CLOSE = 0.08


def _settled(state: SearchState, incumbent: Candidate, challenger: Candidate) -> Candidate:
    est = state.estimator
    duel_cost = 4 * est.measure_cost(beside=False) if est is not None else 0.0
    # Where the duel costs little of what is left (a model of microseconds), a single pair decides nothing, however wide
    # its margin: a 12 µs LightGBM ensemble measured 12 or 20 µs by the moment, and an auto tune that took a setting on
    # one pair ended with parallel execution, 44% slower side by side than the default session.
    cheap = est is not None and duel_cost < 0.1 * max(state.left(), 0.0)
    if not cheap and rank_score(state, challenger) < rank_score(state, incumbent) * (1 - CLOSE):
        return challenger
    if est is not None and state.left() < duel_cost:
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


# What an explicit budget's ending may run past it before the source's timing is left out: a quarter of the budget
# plus 15 s (the profile and one confirm round of a slow model, which the answer needs)
ALLOWANCE, ALLOWANCE_S = 0.25, 15.0


def plan(state: SearchState, baseline: Candidate) -> None:
    """With the baseline measured: the estimate (op mix, CPU class, measurement length), the budget --budget auto asks
    for, and the deadline of the search, which leaves what the ending (confirm rounds, ahead-of-time graph, profile,
    source timing) is expected to cost inside the budget."""
    import numpy as np

    with np.load(state.work / "inputs.npz", allow_pickle=False) as z:
        sizes = {k: tuple(z[k].shape) for k in z.files}
    try:
        import onnx

        proto = onnx.load(str(state.model), load_external_data=False)  # read once (a 500 MB GPT-2: seconds)
        if state.facts is None:
            state.facts = ModelFacts.of(proto)
        mix = OpMix.of(state.model, sizes, proto)
    except Exception as exc:  # an unreadable graph: no estimate, the search keeps its fixed order
        state.notes.append(f"no estimate of what candidates gain: the graph could not be read ({exc})")
        return
    run_ms = float(baseline.figures["p50_ms"])
    seconds = measure_seconds(run_ms)
    if not state.auto:  # a large budget buys steadier figures
        seconds = max(seconds, min(state.budget / 80, 3.0))
    cpu = cpu_class(list(cpu_features()["isa"] or []), state.providers[0])  # type: ignore[call-overload]
    times = state.convert_times
    est = state.estimator = Estimator(
        mix=mix,
        cpu=cpu,
        run_ms=run_ms,
        seconds=seconds,
        source_load_s=times.load_s,
        export_s=times.export_s,
        session_s=float(baseline.figures.get("session_create_ms") or 0.0) / 1000,
    )
    now = time.monotonic()
    ending = est.ending_seconds(source=state.timed_source)
    spent = now - state.started
    if state.auto:
        search = sum(auto_plan(state, provider) for provider in state.providers)
        state.budget = spent + search + ending
        state.notes.append(
            f"--budget auto: up to {state.budget:.0f} s planned for this model ({run_ms:.3g} ms a run, measured "
            f"{seconds:.2g} s a candidate): the most promising candidate of each family, the winner confirmed against the "
            f"baseline, the profile; --budget SECONDS to choose"
        )
    else:
        if state.timed_source and ending - 0.4 * state.budget > ALLOWANCE * state.budget + ALLOWANCE_S:
            # the ending alone would run far past the budget: the source's timing is the part left out (a 30 s tune of
            # a 240 ms Whisper encoder spent 15 s timing its PyTorch source and ended at 64 s)
            without = est.ending_seconds(source=False)
            state.timed_source, state.source_left_out = False, True
            state.notes.append(
                f"the source model was not timed: its timing (~{ending - without:.0f} s) does not fit a {state.budget:.0f} s "
                "budget (--budget auto, or a larger budget, times it)"
            )
            ending = without
        reserve = min(ending, 0.4 * state.budget)
        past = (
            f"; what it costs beyond that (~{ending - reserve:.0f} s expected) runs past the budget" if ending > reserve else ""
        )
        state.notes.append(
            f"budget {state.budget:.0f} s: the search ends about {reserve:.0f} s before it (expected when it started; "
            "re-estimated as it measures), for the confirm rounds, the ahead-of-time graph, the profile and the source "
            f"timing{past}"
        )
    state.ctx.deadline = state.started + state.budget
    state.notes.append(
        f"estimate before the search: {mix.describe()}; CPU class {cpu}; {run_ms:.3g} ms a run, so {seconds:.2g} s "
        "of timed runs a measurement"
    )
    state.progress(f"planned: {state.budget - spent:.0f} s left, {seconds:.2g} s a measurement")


def auto_plan(state: SearchState, provider: str) -> float:
    """Seconds --budget auto gives the search on ``provider``: each fp32 variant (the fusions, the re-export route when
    the source is at hand), the two most promising lower-precision candidates on the most promising variant and the
    first on the second, one refinement, three session settings (when they are searched), the better half measured
    again and the duel of the two best."""
    est = state.estimator
    assert est is not None
    variants, lower = fp32_variants(state, provider)
    chains = list(variants)
    if variants:
        lower.sort(key=lambda t: -_gain(state, [*variants[0], t]))
        chains += [[*variants[0], t] for t in lower[:2]]
        if len(variants) > 1 and lower:
            chains.append([*variants[1], lower[0]])
    built: set[str] = set()
    total = 0.0
    for chain in chains:
        total += est.estimate(chain, built).cost_s
        built.update("+".join(chain[: i + 1]) for i in range(len(chain)))
    total += est.build_seconds(["*"]) + est.measure_cost()  # one refinement
    total += 3 * est.measure_cost(2 * est.seconds) + 4 * est.measure_cost(beside=False)
    if state.options.session_search:
        total += 3 * est.measure_cost()
    return 1.15 * total


def note_estimates(state: SearchState, baseline: Candidate, best: Candidate) -> None:
    """What the estimate expected beside what was measured, and whether a longer budget could pay."""
    est = state.estimator
    if est is None:
        return
    measured = baseline.score(state.options.objective) / best.score(state.options.objective) if best is not baseline else 1.0
    if state.options.objective == "throughput":
        measured = 1.0 / measured if measured else 1.0
    base = baseline.score(state.options.objective)
    ran = [
        c for c in state.candidates if c.expected is not None and c.stage == "model" and c.status not in ("skipped", "invalid")
    ]
    ran.sort(key=lambda c: -c.expected.speedup)  # type: ignore[union-attr]

    def as_measured(c: Candidate) -> str:
        if c.status != "passed" or not c.score(state.options.objective):
            return c.status
        ratio = base / c.score(state.options.objective)
        return f"{1 / ratio if state.options.objective == 'throughput' else ratio:.2f}x"

    if ran:
        state.notes.append(
            "expected -> measured, the most promising model variants first: "
            + "; ".join(f"{'+'.join(c.transforms) or 'original'} {c.expected.speedup:.2f}x -> {as_measured(c)}" for c in ran[:4])  # type: ignore[union-attr]
        )
    left_out = [c for c in state.candidates if c.status == "skipped" and c.expected is not None]
    if left_out:
        top = max(left_out, key=lambda c: c.expected.speedup if c.expected else 0.0)
        # on one scale: the estimate of the left-out candidate against the estimate of the best found
        yardstick = best.expected.speedup if best.expected is not None else measured
        pays = top.expected.speedup > yardstick * (1 + NOISE)  # type: ignore[union-attr]
        state.notes.append(
            f"{len(left_out)} candidate{'s' if len(left_out) != 1 else ''} left out for the budget; the most promising, "
            f"{top.label()}, was expected at {top.expected.speedup:.2f}x, the best found at {yardstick:.2f}x (measured "  # type: ignore[union-attr]
            f"{measured:.2f}x): a longer " + ("--budget could pay" if pays else "--budget is unlikely to pay")
        )


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
