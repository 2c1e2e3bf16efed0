"""Transforms that trade generality for speed, each gated like any candidate: a GELU approximation, and a
model fixed to the deployment's input shape (Olive's DynamicToFixedShape)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive.optimize import TransformContext

_EXACT_GELU = {("com.microsoft", "BiasGelu"), ("com.microsoft", "Gelu"), ("", "Gelu")}


def gelu_approximation(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Gelu / BiasGelu become FastGelu (the tanh approximation, ONNX Runtime's contrib op): cheaper, and not
    exact, so the gate judges it by the reduced-precision metrics."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    replaced = 0
    for node in model.graph.node:
        if (node.domain, node.op_type) in _EXACT_GELU and not any(
            a.name == "approximate" and a.s == b"tanh" for a in node.attribute
        ):
            node.op_type, node.domain = "FastGelu", "com.microsoft"
            del node.attribute[:]
            replaced += 1
    if not replaced:
        raise ValueError("the model has no exact Gelu/BiasGelu to approximate")
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save(model, str(dst))
    return {"fast_gelu": replaced}


def fixed_shape(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Every dynamic axis fixed to the size measured (--dim), so ONNX Runtime can plan for that one shape.
    The model then accepts only that shape: for deployments that always send it."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    sizes: dict[str, int] = ctx.fixed_sizes
    if not sizes:
        raise ValueError("needs the sizes to fix (tune --dim NAME=SIZE for every dynamic axis)")
    model = onnx.load(str(src))
    params = {d.dim_param for value in model.graph.input for d in value.type.tensor_type.shape.dim if d.dim_param}
    missing = sorted(params - set(sizes))
    if missing:
        raise ValueError(f"no size for the dynamic axes {', '.join(missing)}")
    for name in sorted(params):
        make_dim_param_fixed(model.graph, name, int(sizes[name]))
    fix_output_shapes(model)
    onnx.save(model, str(dst))
    return {"fixed": {name: int(sizes[name]) for name in sorted(params)}}
