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

log = logging.getLogger(__name__)


def ort_fusion(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    from onnxruntime.transformers import optimizer

    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    # "bert" selects the encoder fusion passes; num_heads/hidden_size 0 let the optimizer detect them
    model = optimizer.optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=0,
                                     use_gpu=ctx.provider != "CPUExecutionProvider")
    model.save_model_to_file(str(dst))
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    return {"fused": fused}


def onnxscript_fusion(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(str(src))
    model, counts = optimize_for_ort(model)
    ir.save(model, str(dst))
    return {"fused": {k: v for k, v in counts.items() if v}}


def ort_optimized_graph(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Let ONNX Runtime optimize the graph for ``ctx.provider`` and save the result (load it with optimizations off)."""
    from golive.runtime import SessionConfig, make_session

    level = ctx.options.get("graph_optimization_level", "all")
    make_session(src, SessionConfig(providers=[ctx.provider], graph_optimization_level=level, custom_ops=ctx.custom_ops),
                 optimized_model_path=dst)
    return {"saved_at_level": level, "provider": ctx.provider}


def mark_crash(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    """Test-only: copy the model with a metadata entry that makes the measuring worker kill itself."""
    import onnx

    model = onnx.load(str(src))
    entry = model.metadata_props.add()
    entry.key, entry.value = "golive.test.crash", "1"
    onnx.save(model, str(dst))
    return {"note": "the worker measuring this model will die (test-only transform)"}
