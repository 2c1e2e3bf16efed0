"""golive profile on the 3-layer BERT of tune_bert.py (batch 1, sequence 128): how long profiling takes, and what
the profiler itself costs — the same session settings with and without ONNX Runtime's profiler, measured in
alternating rounds in one process, medians compared.

    .venv/bin/python benchmarks/profile_bert.py [--rounds 7] [--runs 20]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import golive
from golive.cpu import available_cpus, cpu_features
from golive.profiling import _timed  # the profiler's own wall-time measure: median of single runs, in µs
from golive.runtime import SessionConfig, make_session


def main() -> None:
    from tune_bert import SEQ, _bert3_folder, _inputs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cpu = cpu_features()
    print(f"CPU: {cpu['cpu']}; {available_cpus()} usable; instruction sets {' '.join(cpu['isa']) or '-'}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = _bert3_folder(work)
        golive.convert(str(folder), work / "onnx")
        feeds = _inputs(30522)
        np.savez(work / "inputs.npz", **feeds)
        model = work / "onnx" / "model.onnx"

        t = time.perf_counter()
        report = golive.profile(work / "onnx", work / "profile", data=str(work / "inputs.npz"), runs=args.runs)
        took = time.perf_counter() - t
        (p,) = report.profiles
        print(
            f"golive profile: {took:.1f} s end to end ({args.runs} timed runs after {p.warmup} warm-up runs), batch 1, sequence {SEQ}"
        )
        print(f"  {len(p.nodes)} nodes timed of {p.optimized_nodes} in the optimized graph ({p.original_nodes} in the model)")
        print(f"  node times {p.total_us / 1000:.2f} ms per run; coverage of the run's span {p.coverage:.0%}")
        for o in p.op_types[:6]:
            print(f"    {o.op_type:<24} {o.nodes:3d} nodes {o.total_us / 1000:7.3f} ms {o.share:6.1%}")

        plain = make_session(model, SessionConfig())
        profiled = make_session(model, SessionConfig(), profile_prefix=str(work / "trace"))
        for s in (plain, profiled):
            for _ in range(5):
                s.run(None, feeds)
        rounds: dict[str, list[float]] = {"without profiler": [], "with profiler": []}
        for _ in range(args.rounds):
            rounds["without profiler"].append(_timed(plain, feeds, 30))
            rounds["with profiler"].append(_timed(profiled, feeds, 30))
        profiled.end_profiling()
        a, b = (statistics.median(v) for v in rounds.values())
        ratios = [w / o for o, w in zip(rounds["without profiler"], rounds["with profiler"], strict=True)]
        print(f"profiler overhead, {args.rounds} alternating rounds of 30 runs, default session:")
        print(
            f"  without {a / 1000:.2f} ms, with {b / 1000:.2f} ms: {b / a:.3f}x (within rounds {statistics.median(ratios):.3f}x "
            f"[{' '.join(f'{r:.3f}' for r in ratios)}])"
        )


if __name__ == "__main__":
    main()
