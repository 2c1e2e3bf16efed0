"""What the search tries, in which order, and what the budget buys.

The candidate families (the fusions, the re-export route, INT8 and FP16), the fp32 variants and the lower precisions
built on them ordered by what each is expected to gain (``tuning/estimate.py``), the plan of the budget once the
baseline is measured (what --budget auto asks for; where an explicit budget's search ends), and what was expected beside
what was measured. The staged search (``tuning/search.py``) runs the candidates in this order.
"""

from __future__ import annotations

import time

from golive.cpu import cpu_features
from golive.optimize import ModelFacts, get_transform
from golive.tuning.estimate import Estimator, OpMix, cpu_class, measure_seconds
from golive.tuning.space import Candidate
from golive.tuning.state import NOISE, SearchState, allowed

__all__ = [
    "ALLOWANCE",
    "FUSIONS",
    "INT8_ACCURATE",
    "INT8_FIRST",
    "INT8_RESCUE",
    "REEXPORT",
    "auto_plan",
    "direct_lower",
    "fp32_variants",
    "gain",
    "has_attention",
    "lower_precision",
    "note_estimates",
    "plan",
    "reexport_route",
]


FUSIONS = ["ort_fusion", "onnxscript_fusion"]


REEXPORT = "torchscript_export"


INT8_FIRST = ["int8_dynamic", "int8_dynamic_per_channel", "int8_blockwise", "int8_static_qdq", "int8_qdq_matmul"]


# Per-token INT8 runs the same GEMMs as dynamic INT8 plus its quantizing ops: tried on a base where dynamic INT8 fails
# the gate (all-MiniLM-L6-v2), not where it passes (the 3-layer BERT: 11.6 ms against 10.6), unless asked for by name.
INT8_ACCURATE = "int8_per_token"


_CALIBRATED = ("int8_static_qdq", INT8_ACCURATE)


INT8_RESCUE = "int8_dynamic_keep_sensitive"


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
    attention = has_attention(state)
    if state.ctx.source and allowed(state, REEXPORT, provider) and (attention or asked):
        variants.append(reexport_route(provider))
    lower = lower_precision(state, provider)
    variants.sort(key=lambda chain: -max([gain(state, chain)] + [gain(state, [*chain, t]) for t in lower]))
    # where the budget is tight, a variant that the rest of it cannot pay for with its first lower precision goes
    # after those that leave room (a 30 s tune of all-MiniLM-L6-v2 spent 15 s on a re-export priced at less and
    # reached no INT8 candidate; with half of what is left as the bound, its re-export, now priced from its convert,
    # went behind the fusions, whose INT8 ran 19 ms against the route's 12); a large budget keeps the order of promise
    est = state.estimator
    if est is not None and not state.auto:
        window = 0.9 * state.left()
        fits = [v for v in variants if est.estimate([*v, *lower[:1]], state.built).cost_s <= window]
        variants = fits + [v for v in variants if v not in fits]
    return variants, lower


def direct_lower(state: SearchState, variants: list[list[str]], lower: list[str]) -> str | None:
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
    likeliest = max(fitting, key=lambda t: gain(state, [t]))
    first = est.estimate(variants[0], state.built).cost_s
    on_it = est.estimate([*variants[0], likeliest], state.built | {"+".join(variants[0])}).cost_s
    if first + on_it <= left or gain(state, [likeliest]) <= gain(state, variants[0]) * (1 + NOISE):
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


def gain(state: SearchState, chain: list[str]) -> float:
    """The chain's expected speed-up over the baseline (1.0 before the estimate exists)."""
    return state.estimator.speedup(chain) if state.estimator is not None else 1.0


def has_attention(state: SearchState) -> bool:
    """Softmax and MatMul in the model's graph (read once, into the search's ModelFacts)."""
    return {"Softmax", "MatMul"} <= state.model_facts().op_types


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
        lower.sort(key=lambda t: -gain(state, [*variants[0], t]))
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
