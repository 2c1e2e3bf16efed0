"""Graph fusions for transformer models: ONNX Runtime's transformers optimizer and onnxscript's ORT fusions.

Which of the two fuses attention depends on how the model was exported (measured here with
torch 2.13 on BERT: the transformers optimizer fuses Attention in a TorchScript export but not in a
dynamo export, where onnxscript's fusions do), so the tuner tries both and measures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from golive.optimize import TransformContext
from golive.rundir import read_convert_record, source_for
from golive.runtime import SessionConfig, save_optimized_graph

log = logging.getLogger(__name__)


def ort_fusion(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """ONNX Runtime's transformers optimizer, told the attention heads and hidden size when golive can find them.

    Measured here: left to detect them itself (0, 0), the optimizer fused no Attention in a TorchScript export
    of BERT; told 12 heads and 768, it fused Attention and EmbedLayerNormalization. They come from the source's
    config.json, else from the graph (the constant head count and head size of the attention Reshapes)."""
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    heads, hidden, found_in = _attention_shape(src, ctx)
    # "bert" selects the encoder fusion passes
    model = optimizer.optimize_model(
        str(src),
        model_type="bert",
        num_heads=heads,
        hidden_size=hidden,
        opt_level=0,
        use_gpu=ctx.provider != "CPUExecutionProvider",
    )
    model.save_model_to_file(str(dst))
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    return {"fused": fused, "num_heads": heads, "hidden_size": hidden, "heads_from": found_in}


def _attention_shape(src: Path, ctx: TransformContext) -> tuple[int, int, str]:
    """(attention heads, hidden size, where they were found); (0, 0, "optimizer") lets the optimizer detect them."""
    config = _source_config(ctx)
    heads, hidden = config.get("num_attention_heads") or config.get("n_head"), config.get("hidden_size") or config.get("n_embd")
    if isinstance(heads, int) and isinstance(hidden, int) and heads > 0 and hidden % heads == 0:
        return heads, hidden, "config.json"
    found = _heads_in_graph(src)
    return (*found, "graph") if found else (0, 0, "optimizer")


def _source_config(ctx: TransformContext) -> dict[str, Any]:
    """The Hugging Face config.json of the convert folder's source, when it is a model folder."""
    import json

    if not ctx.source:
        return {}
    try:
        folder = Path(source_for(read_convert_record(Path(ctx.source), "tune"), Path(ctx.source), None))
        return json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    except Exception:  # no config to read: the graph or the optimizer decides
        return {}


def _heads_in_graph(src: Path) -> tuple[int, int] | None:
    """The most common (heads, hidden size) among the 4-D Reshape targets [.., .., heads, head size] whose two
    last entries are constants (one may be -1) and multiply to the hidden size (a LayerNormalization's width)."""
    import collections

    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src), load_external_data=False)
    consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if not t.external_data}
    for node in model.graph.node:  # in topological order: Identity of a constant (deduplicated weights) is one too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in consts:
            consts[node.output[0]] = consts[node.input[0]]
    producers = {o: n for n in model.graph.node for o in n.output}
    widths = collections.Counter(
        int(consts[n.input[1]].size)
        for n in model.graph.node
        if n.op_type == "LayerNormalization" and len(n.input) > 1 and n.input[1] in consts
    )
    if not widths:
        return None
    hidden = widths.most_common(1)[0][0]

    def scalar(name: str) -> int | None:
        node = producers.get(name)
        while node is not None and node.op_type in ("Unsqueeze", "Cast", "Identity") and node.input[0] not in consts:
            name, node = node.input[0], producers.get(node.input[0])
        if node is not None and node.op_type in ("Unsqueeze", "Cast", "Identity"):
            name = node.input[0]
        value = consts.get(name)
        return int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    votes: collections.Counter = collections.Counter()
    for node in model.graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2:
            continue
        shape = consts.get(node.input[1])
        last: list[int | None]
        if shape is not None and shape.size == 4:
            last = [int(shape[2]), int(shape[3])]
        elif (
            node.input[1] in producers
            and producers[node.input[1]].op_type == "Concat"
            and len(producers[node.input[1]].input) == 4
        ):
            last = [scalar(i) for i in producers[node.input[1]].input[2:]]
        else:
            continue
        h, d = last
        if h == -1 and d and d > 0 and hidden % d == 0:  # [batch, seq, -1, head size], as TorchScript exports it
            h = hidden // d
        elif d == -1 and h and h > 0 and hidden % h == 0:
            d = hidden // h
        if h and d and h > 0 and d > 0 and h * d == hidden:
            votes[(h, hidden)] += 1
    return votes.most_common(1)[0][0] if votes else None


def onnxscript_fusion(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(str(src))
    model, counts = optimize_for_ort(model)
    flattened = _flatten_gemm_inputs(model)
    ir.save(model, str(dst))
    info: dict[str, Any] = {"fused": {k: v for k, v in counts.items() if v}}
    if flattened:
        info["gemm_inputs_flattened"] = flattened
    return info


def _flatten_gemm_inputs(model) -> int:
    """Gemm takes a matrix. A GPT-2 block flattens the attention's [batch, sequence, hidden] output to a matrix for its
    projection (a Reshape, then Gemm); onnxscript's MultiHeadAttention fusion (0.7) takes that Reshape into the fused node,
    which returns the 3-D tensor under the Reshape's name, and ONNX Runtime refuses the model ("Gemm: input 0 expected
    to have rank 2 but has rank 3"). Such a Gemm input is flattened again ([-1, K]); returns how many."""
    import numpy as np
    import onnx_ir as ir

    count = 0
    for node in list(model.graph):
        if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx") or node.inputs[0] is None:
            continue
        value = node.inputs[0]
        producer = value.producer()
        weight = node.inputs[1]
        if producer is None or producer.domain != "com.microsoft" or weight is None or weight.shape is None:
            continue
        trans_b = node.attributes.get("transB")
        k = weight.shape[1 if trans_b is not None and trans_b.as_int() else 0]
        if not isinstance(k, int):
            continue
        value.shape = None  # what the fused node returns is not the matrix its name stood for
        shape = ir.Value(name=f"{node.name}_flat_shape", const_value=ir.tensor(np.array([-1, k], dtype=np.int64)))
        model.graph.register_initializer(shape)
        flat = ir.node("Reshape", inputs=[value, shape], name=f"{node.name}_flatten")
        model.graph.insert_before(node, flat)
        node.replace_input_with(0, flat.outputs[0])
        count += 1
    return count


def split_skip_layernorm(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Each SkipLayerNormalization becomes Add (+ Add of its bias) + LayerNormalization (opset 17).

    Measured with onnxruntime 1.32 on CPU, [1, 128, 384] float: the fused kernel took 248 us, Add +
    LayerNormalization 40 us on one thread (129 against 77 us on two). The session must then run without
    ONNX Runtime's SkipLayerNormFusion (the transform declares it), or the load re-fuses them. A node whose
    mean or inverse-deviation outputs are used is left fused: LayerNormalization's differ in shape."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 17:
        raise ValueError(f"LayerNormalization needs opset 17; the model has opset {opset}")
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    nodes, split = [], 0
    for i, node in enumerate(model.graph.node):
        outs = list(node.output) + [""] * 4
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft" or any(o and o in used for o in outs[1:3]):
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = (list(node.input) + [""] * 5)[:5]
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        base = node.name or f"SkipLayerNormalization_{i}"
        total = outs[3] or f"{base}/sum"
        summed = f"{base}/input_skip" if bias else total
        nodes.append(helper.make_node("Add", [x, skip], [summed], name=f"{base}/add"))
        if bias:
            nodes.append(helper.make_node("Add", [summed, bias], [total], name=f"{base}/add_bias"))
        nodes.append(
            helper.make_node(
                "LayerNormalization",
                [total, gamma] + ([beta] if beta else []),
                [outs[0]],
                name=f"{base}/layernorm",
                axis=-1,
                epsilon=eps,
            )
        )
        split += 1
    if not split:
        raise ValueError("the model has no SkipLayerNormalization to split")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(dst))
    return {"split": split}


def ort_optimized_graph(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Let ONNX Runtime optimize the graph for ``ctx.provider`` and save the result (load it with optimizations off)."""

    level = ctx.graph_optimization_level
    save_optimized_graph(
        src, SessionConfig(providers=[ctx.provider], graph_optimization_level=level, custom_ops=ctx.custom_ops), dst
    )
    return {"saved_at_level": level, "provider": ctx.provider}
