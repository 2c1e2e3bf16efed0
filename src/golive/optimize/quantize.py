"""INT8 quantization: dynamic (per tensor, per channel, sensitive nodes kept in fp32) and static QDQ.

Pitfall measured on this stack (onnxruntime 1.32): quantize_dynamic fails on graphs already
optimized by the transformers optimizer ("Unable to find data type for weight_name...") unless
``extra_options={"DefaultTensorType": FLOAT}`` is passed; it is always passed here.
"""

from __future__ import annotations

import functools
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from golive.frontends.onnxfile import save_onnx
from golive.optimize import TransformContext
from golive.optimize.pertoken import weight_levels
from golive.runtime import SessionConfig, make_session

log = logging.getLogger(__name__)

_EXTRA = {"DefaultTensorType": 1}  # onnx.TensorProto.FLOAT
_SENSITIVE_MAX_NODES = 48  # beyond this many candidates, only the largest weights are probed


def _reduce_range(ctx: TransformContext) -> bool:
    """7-bit weights where this CPU's u8s8 kernel adds products in saturating 16-bit lanes (x86 without VNNI or AMX;
    ONNX Runtime's quantize_dynamic offers reduce_range for exactly that), 8-bit elsewhere."""

    return int(ctx.weight_levels or weight_levels()) < 127


def _quantize_dynamic(
    src: Path,
    dst: Path,
    per_channel: bool,
    exclude: list[str] | None = None,
    only: list[str] | None = None,
    reduce_range: bool = False,
) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger("root").setLevel(logging.ERROR)
    quantize_dynamic(
        str(src),
        str(dst),
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=exclude or None,
        nodes_to_quantize=only or None,
        extra_options=dict(_EXTRA),
    )


def _fold_weight_transposes(src: Path, work: Path) -> tuple[Path, int]:
    """A copy of the model in ``work`` where each MatMul whose weight is a Transpose of a constant reads the transposed
    constant itself, and how many were folded ((src, 0) where there is none). The quantizer only quantizes a MatMul
    whose weight is an initializer: GPT-2's LM head (the tied embedding through a Transpose, 31% of its weights) stayed
    fp32, and its dynamic INT8 decode step ran 26 ms against 23 in fp32; folded, 10 ms (cosine 0.9992)."""
    import onnx
    from onnx import numpy_helper

    def pairs(graph) -> list[tuple[Any, Any]]:
        consts = {t.name for t in graph.initializer}
        made = {o: n for n in graph.node for o in n.output}
        return [
            (n, made[n.input[1]])
            for n in graph.node
            if n.op_type == "MatMul"
            and len(n.input) > 1
            and n.input[1] in made
            and made[n.input[1]].op_type == "Transpose"
            and made[n.input[1]].input[0] in consts
        ]

    if not pairs(onnx.load(str(src), load_external_data=False).graph):
        return src, 0
    model = onnx.load(str(src))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    found = pairs(graph)
    for matmul, transpose in found:
        perm = next((list(a.ints) for a in transpose.attribute if a.name == "perm"), None)
        value = numpy_helper.to_array(weights[transpose.input[0]])
        name = f"{transpose.input[0]}_transposed_for_{matmul.name or matmul.output[0]}"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(value, perm)), name))
        matmul.input[1] = name
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for transpose in {id(t): t for _, t in found}.values():  # a Transpose nothing else reads any more goes
        if not any(o in used for o in transpose.output):
            graph.node.remove(transpose)
    out = work / "weights_folded" / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    save_onnx(model, out)
    return out, len(found)


def _folded(quantize):
    """Run ``quantize(src, dst, ctx)`` on the model with its transposed weights folded; the folded copy is removed
    after, and the transform's record says how many were folded."""

    @functools.wraps(quantize)
    def run(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
        folded, count = _fold_weight_transposes(src, dst.parent)
        try:
            info = quantize(folded, dst, ctx)
        finally:
            if folded != src:
                shutil.rmtree(folded.parent, ignore_errors=True)
        return {**info, "folded_transposes": count} if count else info

    return run


_QUANTIZED_OPS = (
    "QAttention",
    "QEmbedLayerNormalization",
    "MatMulInteger",
    "DynamicQuantizeMatMul",
    "QGemm",
    "QLinearMatMul",
    "MatMulNBits",
    "QuantizeLinear",
    "QLinearConv",
    "ConvInteger",
)


def quantized_ops(path: Path) -> dict[str, int]:
    """How many nodes of each quantized operator type a model holds (what INT8 became: QAttention or not)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in _QUANTIZED_OPS:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@_folded
def dynamic_per_tensor(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    reduce = _reduce_range(ctx)
    _quantize_dynamic(src, dst, per_channel=False, reduce_range=reduce)
    return {"per_channel": False, "weight_bits": 7 if reduce else 8, "ops": quantized_ops(dst)}


@_folded
def dynamic_per_channel(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    reduce = _reduce_range(ctx)
    _quantize_dynamic(src, dst, per_channel=True, reduce_range=reduce)
    return {"per_channel": True, "weight_bits": 7 if reduce else 8, "ops": quantized_ops(dst)}


def _quantizable_nodes(path: Path) -> list[tuple[str, int]]:
    """(name, weight elements) of the MatMul/Gemm/Attention nodes with a constant weight, largest first."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    sizes = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    nodes = []
    for i, node in enumerate(model.graph.node):
        if node.op_type in ("MatMul", "Gemm", "Attention") and len(node.input) > 1 and node.input[1] in sizes:
            nodes.append((node.name or f"{node.op_type}_{i}", sizes[node.input[1]]))
    return sorted(nodes, key=lambda n: -n[1])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a.reshape(-1, a.shape[-1] if a.ndim else 1).astype(np.float64)
    b = b.reshape(-1, b.shape[-1] if b.ndim else 1).astype(np.float64)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(den == 0, 1.0, num / np.where(den == 0, 1.0, den))))


@_folded
def dynamic_keep_sensitive(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Quantize one node at a time, measure how far each moves the outputs, keep the worst in fp32.

    The number kept grows (1, 2, 4, ...) until the outputs' cosine similarity to fp32 on the
    calibration inputs reaches the gate's threshold, or half of the nodes are kept.
    """

    threshold = float(ctx.gate.get("cosine", 0.999))
    config = SessionConfig(custom_ops=ctx.custom_ops)
    feeds = ctx.calibration[:2]
    if not feeds:
        raise ValueError("needs calibration inputs")
    nodes = [n for n, _ in _quantizable_nodes(src)]
    if not nodes:
        raise ValueError("the model has no MatMul/Gemm/Attention node with a constant weight to quantize")
    probe = nodes[:_SENSITIVE_MAX_NODES]
    work = dst.parent

    def score(path: Path) -> float:
        sess = make_session(path, config)
        vals: list[float] = []
        for feed, ref in zip(feeds, refs, strict=True):
            outs = sess.run(None, feed)
            vals.extend(_cosine(o, r) for o, r in zip(outs, ref, strict=True) if np.asarray(o).dtype.kind == "f")
        return min(vals) if vals else 1.0

    base = make_session(src, config)
    refs = [base.run(None, f) for f in feeds]
    drops: dict[str, float] = {}
    reduce = _reduce_range(ctx)
    one = work / "one.onnx"
    deadline = ctx.deadline
    for name in probe:  # largest weights first: when time runs short, the rest count as harmless
        if deadline is not None and time.monotonic() > deadline and drops:
            break
        _quantize_dynamic(src, one, per_channel=True, only=[name], reduce_range=reduce)
        drops[name] = 1.0 - score(one)
    one.unlink(missing_ok=True)
    ranked = sorted(drops, key=lambda n: -drops[n])
    keep: list[str] = []
    k, achieved = 1, None
    while True:
        keep = ranked[:k]
        _quantize_dynamic(src, dst, per_channel=True, exclude=keep, reduce_range=reduce)
        achieved = score(dst)
        if achieved >= threshold or k >= len(nodes) // 2:
            break
        k *= 2
    return {
        "per_channel": True,
        "weight_bits": 7 if reduce else 8,
        "ops": quantized_ops(dst),
        "kept_fp32": keep,
        "quantized": len(nodes) - len(keep),
        "probed": len(drops),
        "calibration_cosine": round(achieved, 6),
        "worst_drops": {n: round(drops[n], 6) for n in ranked[:5]},
    }


def int8_blockwise_128(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """As int8_blockwise, in blocks of 128: fewer scales to apply, a little less accurate."""
    return int8_blockwise(src, dst, ctx, block_size=128)


def int8_blockwise(src: Path, dst: Path, ctx: TransformContext, block_size: int = 32) -> dict[str, Any]:
    """8-bit weights in blocks of 32 (MatMulNBits), activations quantized per block at run time.

    Much finer-grained than per-tensor or per-channel INT8, so it keeps accuracy where they lose it
    (measured here on all-MiniLM-L6-v2: cosine 0.9997 to fp32, against 0.93 per tensor and 0.987
    per channel), at a smaller speed-up.
    """
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    config = DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8)
    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(src)), bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4, algo_config=config
    )
    quantizer.process()
    quantized = sum(1 for n in quantizer.model.model.graph.node if n.op_type == "MatMulNBits")
    if not quantized:
        raise ValueError("the model has no MatMul with a constant weight for block-wise quantization")
    quantizer.model.save_model_to_file(str(dst), False)
    return {"bits": 8, "block_size": block_size, "accuracy_level": 4, "quantized": quantized}


def static_qdq(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Static INT8 in QDQ form, signed symmetric activations: what ONNX Runtime's CPU kernels run fastest."""
    return _static_qdq(src, dst, ctx, activations="int8")


def qdq_matmul(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Static INT8 QDQ on MatMuls only, weights per channel, unsigned activations: the form OpenVINO compiles into
    its own INT8 kernels (the rest of the graph stays fp32 for it to run in its own precision)."""
    return _static_qdq(src, dst, ctx, activations="uint8", op_types=["MatMul"])


def _static_qdq(
    src: Path, dst: Path, ctx: TransformContext, activations: str, op_types: list[str] | None = None
) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not ctx.calibration:
        raise ValueError("static quantization needs calibration inputs")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(ctx.calibration)

        def get_next(self):
            return next(self._it, None)

    pre = dst.with_name("preprocessed.onnx")
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
        source = pre
    except Exception as exc:  # pre-processing is an optimisation; quantize the model as it is when it fails
        log.info("quant_pre_process failed (%s); quantizing without it", exc)
        source = src
    logging.getLogger("root").setLevel(logging.ERROR)
    signed = activations == "int8"
    named = dst.with_name("named.onnx")
    index_nodes = _name_and_find_index_nodes(source, named)
    quantize_static(
        str(named),
        str(dst),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QInt8 if signed else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=op_types,
        nodes_to_exclude=index_nodes or None,
        extra_options={**_EXTRA, "ActivationSymmetric": signed},
    )
    for temporary in (pre, named, named.with_name(named.name + ".data")):
        temporary.unlink(missing_ok=True)
    info: dict[str, Any] = {"format": "QDQ", "per_channel": True, "activations": activations}
    if op_types:
        info["op_types"] = op_types
    if index_nodes:
        info["index_nodes_kept_float"] = len(index_nodes)
    return {**info, "calibration_batches": len(ctx.calibration), "ops": quantized_ops(dst)}


_INTEGER_TYPES = {2, 3, 4, 5, 6, 7, 9, 12, 13}  # onnx.TensorProto: UINT8 INT8 UINT16 INT16 INT32 INT64 BOOL UINT32 UINT64
_STOP = {"MatMul", "Gemm", "Conv", "Attention", "MultiHeadAttention"}  # what quantization is for: never kept out


def _name_and_find_index_nodes(src: Path, dst: Path) -> list[str]:
    """Write ``src`` to ``dst`` with every node named, and return the nodes that compute integers through float
    arithmetic: the float ops upstream of a Cast to an integer type (T5's relative-position buckets: Div, Log, Mul,
    then Cast to int64 and Gather). Quantizing them (static QDQ does, on every op it can) rounds the index and sends
    the Gather out of bounds ("indices element out of data bounds", seen on a T5 decoder); they stay in float."""
    import onnx

    external = any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in onnx.load(str(src), load_external_data=False).graph.initializer
    )
    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    producers = {o: n for n in model.graph.node for o in n.output}
    keep: dict[str, None] = {}
    stack = [
        n
        for n in model.graph.node
        if n.op_type == "Cast" and any(a.name == "to" and a.i in _INTEGER_TYPES for a in n.attribute) and n.input
    ]
    while stack:
        node = stack.pop()
        for name in node.input:
            producer = producers.get(name)
            if producer is None or producer.op_type in _STOP or producer.name in keep:
                continue
            keep[producer.name] = None
            stack.append(producer)
    onnx.save(model, str(dst), save_as_external_data=external, location=dst.name + ".data")
    return list(keep)
