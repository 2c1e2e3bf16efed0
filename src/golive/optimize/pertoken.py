"""INT8 with activations quantized per token: the accurate INT8 for transformers on CPU.

ONNX Runtime's dynamic INT8 gives a whole activation tensor one scale, computed at run time. Transformer
activations hold a few input channels far larger than the rest (measured on all-MiniLM-L6-v2: one channel of
the FFN input reaches 17-30 where the 99th percentile is 3.6-5.3), so that one scale leaves the other
channels a handful of levels, and every dynamic-INT8 variant of MiniLM missed cosine 0.999 (per channel:
0.987). MatMulNBits keeps accuracy with a scale per block of 128, but its kernel measured slow on this CPU
(AVX-512 VNNI, no AMX; [1,128,384] x [384,1536], 2 threads): 522 us, where fp32 took 694 us and u8s8 243 us.

This transform keeps ONNX Runtime's fast u8s8 GEMM (MatMulIntegerToFloat) and makes the activation side fine:
  - one scale per row (token), computed at run time: ReduceMax(|x|) and a blocked QuantizeLinear (opset 21);
  - the few outlier input channels (amax above 6x the median, at most 4 per layer, found on the calibration
    inputs) are taken out of the INT8 product and multiplied in fp32 beside it;
  - SmoothQuant scales move the rest of the activations' range into the weights, with the migration
    strength chosen per layer (0 to 0.8) by the smallest simulated output error on the calibration inputs;
  - GELU and ReLU outputs, bounded below, are shifted to be non-negative and use all 256 unsigned levels
    (the shift's contribution is a constant taken back after the product);
  - weights per output channel, symmetric: 8 bits, or 7 on x86 CPUs without VNNI/AMX, whose u8s8 kernel
    saturates 16-bit pair sums (weight_levels).
An Attention node's QKV projection is quantized the same way, the attention itself then running in
MultiHeadAttention. Measured on all-MiniLM-L6-v2 in benchmarks/tune_bert.py (batch 1, sequence 128, this
2-core EPYC, budget 120, 7 alternating rounds): golive tune's best built on it ran 2.48x to 2.94x PyTorch
eager in four runs, at cosine 0.99919 to 0.99945; with MatMulNBits blocks of 128 it had reached 1.95-2.12x.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from golive.cpu import cpu_features
from golive.optimize import TransformContext
from golive.runtime import SessionConfig, make_session

_MIN_DIM = 64  # smaller GEMMs gain less than the quantizing ops cost
_OUTLIER_RATIO = 6.0
_OUTLIER_MAX = 4
_ALPHAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
_SAMPLE_ROWS = 512  # calibration rows kept per activation for choosing the smoothing strength
_BOUNDED_BELOW = {"Gelu": 0.2, "BiasGelu": 0.2, "FastGelu": 0.2, "Relu": 0.0}  # op -> shift that makes its output >= 0
_ATTENTION_ATTRS = {"num_heads", "mask_filter_value", "scale"}


def _constants(model) -> dict[str, Any]:
    """Each constant tensor by name (a TensorProto or numpy): initializers, Constant nodes, and Concats of
    them (the form onnxscript's fusion gives an Attention's packed QKV weight)."""
    values: dict[str, Any] = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
        elif node.op_type == "Concat" and node.domain in ("", "ai.onnx") and all(i in values for i in node.input):
            parts = [_array(values[i]) for i in node.input]
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            values[node.output[0]] = np.concatenate(parts, axis=axis)
    return values


def _array(value) -> np.ndarray:
    from onnx import numpy_helper

    return value if isinstance(value, np.ndarray) else numpy_helper.to_array(value)


def _targets(model, constants: dict[str, Any]) -> list[tuple[int, Any, str]]:
    """(index, node, kind) of each MatMul and Attention this transform rewrites."""
    from onnx import helper

    out = []
    for i, node in enumerate(model.graph.node):
        if len(node.input) < 2 or node.input[1] not in constants:
            continue
        w = _array(constants[node.input[1]])
        if w.ndim != 2 or w.dtype != np.float32 or min(w.shape) < _MIN_DIM:
            continue
        if node.op_type == "MatMul" and node.domain in ("", "ai.onnx"):
            out.append((i, node, "matmul"))
            continue
        if node.op_type != "Attention" or node.domain != "com.microsoft" or w.shape[1] % 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * (6 - len(node.input))
        if (
            set(attrs) - _ATTENTION_ATTRS - {"qkv_hidden_sizes"}
            or len(node.input) > 6
            or inputs[4]
            or len(node.output) != 1
            or any(size != w.shape[1] // 3 for size in attrs.get("qkv_hidden_sizes", []))
            or inputs[2] not in constants
            or _array(constants[inputs[2]]).shape != (w.shape[1],)
        ):
            continue
        out.append((i, node, "attention"))
    return out


def _calibrate(
    source, names: list[str], ctx: TransformContext, scratch: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-channel absolute maxima of each named activation over the calibration inputs, and a sample of its rows."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(source)  # the activations become outputs of a copy
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    with tempfile.TemporaryDirectory(prefix=".golive-calibration-", dir=scratch) as folder:
        probe = Path(folder) / "model.onnx"
        onnx.save(model, str(probe), save_as_external_data=model.ByteSize() > 1_900_000_000)
        session = make_session(probe, SessionConfig(custom_ops=ctx.custom_ops))
    feeds = ctx.calibration
    per_batch = max(1, _SAMPLE_ROWS // len(feeds))
    amax: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed), strict=True):
            flat = np.asarray(value, dtype=np.float32).reshape(-1, value.shape[-1])
            m = np.abs(flat).max(axis=0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
            step = max(1, flat.shape[0] // per_batch)
            rows[name].append(flat[::step][:per_batch])
    return amax, {n: np.concatenate(r) for n, r in rows.items()}


def _outliers(amax: np.ndarray) -> list[int]:
    median = float(np.median(amax))
    if median <= 0:
        return []
    order = np.argsort(amax)[::-1][:_OUTLIER_MAX]
    return sorted(int(i) for i in order if amax[i] > _OUTLIER_RATIO * median)


def _smoothing(amax: np.ndarray, w: np.ndarray, outliers: list[int], alpha: float) -> np.ndarray:
    if not alpha:
        return np.ones(w.shape[0], np.float32)
    a = amax.copy()
    a[outliers] = np.median(amax)  # outliers leave the INT8 product: they must not set its scales
    wmax = np.abs(w).max(axis=1)
    return np.clip(np.maximum(a, 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha), 1e-2, 1e3).astype(np.float32)


def _inverse(smooth: np.ndarray, outliers: list[int]) -> np.ndarray:
    """What the activation is multiplied by before quantizing: the smoothing undone, the outlier channels zeroed."""
    inv = (1.0 / smooth).astype(np.float32)
    inv[outliers] = 0
    return inv


def weight_levels(features: dict[str, Any] | None = None) -> int:
    """The largest INT8 weight magnitude that this CPU's u8s8 kernel multiplies exactly: 127 with VNNI or AMX
    (32-bit accumulation) and off x86; 63 on x86 without them, where ONNX Runtime's AVX2/AVX-512 kernel adds pairs
    of u8 x s8 products in saturating 16-bit lanes (vpmaddubsw): 2 x 255 x 127 overflows 32767, 2 x 255 x 63 does
    not. Measured on a 2-core AVX2 EPYC: with 127, per-token's error on a one-MatMul graph with an outlier channel
    was 0.028 of the output's peak (0.0027 with 63; 0.0018 with 127 on an AVX-512 VNNI EPYC)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return 127
    facts: dict[str, Any] = features or cpu_features()
    isa = set(facts["isa"])
    return 127 if isa & {"avx512_vnni", "avx_vnni", "amx_int8"} else 63


def _weights(w: np.ndarray, smooth: np.ndarray, outliers: list[int], levels: int) -> tuple[np.ndarray, np.ndarray]:
    ws = w * smooth[:, None]
    ws[outliers] = 0
    scale = np.abs(ws).max(axis=0) / float(levels)
    scale[scale == 0] = 1.0
    return np.clip(np.round(ws / scale), -levels, levels).astype(np.int8), scale.astype(np.float32)


def _simulate(
    x: np.ndarray, w: np.ndarray, amax: np.ndarray, outliers: list[int], shift: float | None, alpha: float, levels: int
) -> np.ndarray:
    """What the rewritten GEMM computes, in numpy: used to choose the smoothing strength."""
    smooth = _smoothing(amax, w, outliers, alpha)
    xi = (x + shift if shift is not None else x) * _inverse(smooth, outliers)
    if shift is not None:
        s = np.maximum(xi.max(axis=-1, keepdims=True) / 255.0, 1e-8)
        xq = np.clip(np.round(xi / s), 0, 255)
    else:
        s = np.maximum(np.abs(xi).max(axis=-1, keepdims=True) / 127.0, 1e-8)
        xq = np.clip(np.round(xi / s), -127, 127)
    wq, ws = _weights(w, smooth, outliers, levels)
    y = (xq @ wq.astype(np.float32)) * ws * s
    if shift is not None:
        y -= shift * np.delete(w, outliers, axis=0).sum(axis=0)
    if outliers:
        y += x[:, outliers] @ w[outliers]
    return y


def _best_alpha(x: np.ndarray, w: np.ndarray, amax: np.ndarray, outliers: list[int], shift: float | None, levels: int) -> float:
    ref = x @ w
    errors = [float(np.square(_simulate(x, w, amax, outliers, shift, a, levels) - ref).sum()) for a in _ALPHAS]
    return _ALPHAS[int(np.argmin(errors))]


class _Builder:
    """New nodes and initializers, named so that they cannot clash with the model's."""

    def __init__(self, taken: set[str]) -> None:
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._taken = taken

    def name(self) -> str:
        while True:
            self._n += 1
            name = f"golive_pt_{self._n}"
            if name not in self._taken:
                self._taken.add(name)
                return name

    def const(self, value, dtype=np.float32) -> str:
        from onnx import numpy_helper

        name = self.name()
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, **attrs) -> str:
        from onnx import helper

        out = output or self.name()
        domain = "com.microsoft" if op_type in ("MatMulIntegerToFloat", "MultiHeadAttention") else ""
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=self.name(), domain=domain, **attrs))
        return out


def _quantize_rows(
    b: _Builder, x: str, k: int, inv: np.ndarray | None, shift: float | None, outliers: list[int]
) -> dict[str, Any]:
    """Per-row INT8 of activation ``x`` (after smoothing), and its outlier channels gathered for the fp32 side."""
    from onnx import TensorProto, helper

    source = x
    if shift:
        x = b.op("Add", [x, b.const(shift)])
    if inv is not None:
        x = b.op("Mul", [x, b.const(inv)])
    unsigned = shift is not None
    peak = x if unsigned else b.op("Abs", [x])
    amax = b.op("ReduceMax", [peak, b.const([-1], np.int64)], keepdims=1)
    scale = b.op("Max", [b.op("Mul", [amax, b.const(1 / 255 if unsigned else 1 / 127)]), b.const(1e-8)])
    gathered = b.op("Gather", [source, b.const(outliers, np.int64)], axis=-1) if outliers else None
    if unsigned:
        return {"q": b.op("QuantizeLinear", [x, scale], axis=-1, block_size=k), "scale": scale, "zero": 0, "outliers": gathered}
    # u8 with zero point 128 (symmetric int8 moved up): the u8s8 kernels are ONNX Runtime's fast ones on x86. Blocked
    # QuantizeLinear wants a zero point shaped like the scale.
    zero = b.op("ConstantOfShape", [b.op("Shape", [scale])], value=helper.make_tensor("v", TensorProto.UINT8, [1], [128]))
    return {
        "q": b.op("QuantizeLinear", [x, scale, zero], axis=-1, block_size=k),
        "scale": scale,
        "zero": 128,
        "outliers": gathered,
    }


def _gemm(
    b: _Builder,
    quantized: dict[str, Any],
    w: np.ndarray,
    smooth: np.ndarray,
    outliers: list[int],
    shift: float | None,
    levels: int,
    output: str | None = None,
) -> str:
    """The INT8 product scaled back per row, plus the shift's constant and the outliers' fp32 product."""
    wq, ws = _weights(w, smooth, outliers, levels)
    tail = []
    if shift:
        tail.append(b.const(-shift * np.delete(w, outliers, axis=0).sum(axis=0)))
    if outliers:
        tail.append(b.op("MatMul", [quantized["outliers"], b.const(w[outliers])]))
    y = b.op(
        "MatMulIntegerToFloat",
        [quantized["q"], b.const(wq, np.int8), b.const(1.0), b.const(ws), b.const(quantized["zero"], np.uint8)],
    )
    y = b.op("Mul", [y, quantized["scale"]], None if tail else output)
    for i, t in enumerate(tail):
        y = b.op("Add", [y, t], output if i == len(tail) - 1 else None)
    return y


def _reads(nodes) -> set[str]:
    """Every value the nodes read, subgraphs (If, Loop, Scan bodies) included."""
    from onnx import AttributeProto

    read: set[str] = set()
    for node in nodes:
        read.update(node.input)
        for a in node.attribute:
            graphs = [a.g] if a.type == AttributeProto.GRAPH else list(a.graphs) if a.type == AttributeProto.GRAPHS else []
            for g in graphs:
                read |= _reads(g.node) | {o.name for o in g.output}
    return read


def _live(nodes: list, outputs: set[str]) -> list:
    """The nodes something still reads (the Concats that built a replaced weight are not)."""
    while True:
        read = outputs | _reads(nodes)
        live = [node for node in nodes if any(o in read for o in node.output)]
        if len(live) == len(nodes):
            return nodes
        nodes = live


def int8_per_token(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    import onnx
    from onnx import helper, version_converter

    if not ctx.calibration:
        raise ValueError("per-token INT8 needs calibration inputs to find outlier channels and smoothing scales")
    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 21:  # blocked QuantizeLinear (one scale per row) is opset 21
        try:
            model = version_converter.convert_version(model, 21)
        except Exception as exc:
            raise ValueError(
                f"cannot move the model from opset {opset} to 21, which per-row QuantizeLinear needs: {exc}"
            ) from None
    model.ir_version = max(model.ir_version, 10)
    constants = _constants(model)
    targets = _targets(model, constants)
    if not targets:
        raise ValueError(f"the model has no MatMul or Attention with a constant weight of at least {_MIN_DIM}x{_MIN_DIM}")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    amax, rows = _calibrate(model, list(dict.fromkeys(node.input[0] for _, node, _ in targets)), ctx, dst.parent)

    kinds = {i: kind for i, _, kind in targets}
    taken = {n.name for n in model.graph.node} | {o for n in model.graph.node for o in n.output} | _reads(model.graph.node)
    taken |= {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    b = _Builder(taken)
    nodes, quantized_inputs = b.nodes, {}  # new nodes go where the node they replace was
    alphas, outlier_total, shifted, attention = [], 0, 0, 0
    levels = int(ctx.weight_levels or weight_levels())  # the CPU tune measures on is the one it serves
    for i, node in enumerate(model.graph.node):
        kind = kinds.get(i)
        if kind is None:
            nodes.append(node)
            continue
        x = node.input[0]
        w = _array(constants[node.input[1]]).astype(np.float32)
        shift = _BOUNDED_BELOW.get(producers.get(x, ""))
        outliers = _outliers(amax[x])
        alpha = _best_alpha(rows[x], w, amax[x], outliers, shift, levels)
        smooth = _smoothing(amax[x], w, outliers, alpha)
        inv = _inverse(smooth, outliers)
        key = (x, inv.tobytes(), shift)
        if key not in quantized_inputs:
            quantized_inputs[key] = _quantize_rows(b, x, w.shape[0], inv if outliers or alpha else None, shift, outliers)
        alphas.append(alpha)
        outlier_total += len(outliers)
        shifted += shift is not None
        if kind == "matmul":
            _gemm(b, quantized_inputs[key], w, smooth, outliers, shift, levels, node.output[0])
            continue
        attention += 1
        hidden = w.shape[1] // 3
        qkv = _gemm(b, quantized_inputs[key], w, smooth, outliers, shift, levels)  # one GEMM, then split: fewer, larger kernels
        q, k, v = (b.name() for _ in range(3))
        nodes.append(helper.make_node("Split", [qkv, b.const([hidden] * 3, np.int64)], [q, k, v], name=b.name(), axis=-1))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "qkv_hidden_sizes"}
        inputs = list(node.input) + [""] * (6 - len(node.input))  # mask index (3) and attention bias (5) carry over
        nodes.append(
            helper.make_node(
                "MultiHeadAttention",
                [q, k, v, inputs[2], inputs[3], inputs[5]],
                list(node.output),
                name=b.name(),
                domain="com.microsoft",
                **attrs,
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(_live(nodes, {o.name for o in model.graph.output}))
    still = _reads(model.graph.node) | {o.name for o in model.graph.output}
    kept = [t for t in model.graph.initializer if t.name in still]  # the fp32 weights replaced, and what built them, go
    gone = {t.name for t in model.graph.initializer} - {t.name for t in kept}
    del model.graph.initializer[:]
    model.graph.initializer.extend([*kept, *b.inits])
    listed = [i for i in model.graph.input if i.name not in gone]  # weights listed as inputs too (older exports)
    del model.graph.input[:]
    model.graph.input.extend(listed)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst), save_as_external_data=model.ByteSize() > 1_900_000_000)
    return {
        "quantized": len(targets) - attention,
        "attention": attention,
        "outlier_channels": outlier_total,
        "shifted": shifted,
        "smoothing": {"min": min(alphas), "median": float(np.median(alphas)), "max": max(alphas)},
        "calibration_batches": len(ctx.calibration),
        "opset": 21,
        "weight_levels": levels,
    }
