"""The export route as a model transform: the convert folder's source exported again with the TorchScript
exporter.

ONNX Runtime's transformers optimizer fuses attention and the embedding layer (Attention,
EmbedLayerNormalization) in a TorchScript export of a Hugging Face model loaded with eager attention, but
not in a dynamo export (measured with torch 2.13 on BERT: SkipLayerNormalization and BiasGelu only), and
only a fused Attention becomes QAttention under dynamic INT8. So when the source is at hand, the tuner
tries this route as well and lets the measurements and the accuracy gate decide.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive._imports import import_user_modules
from golive.frontends.base import load_source
from golive.optimize import TransformContext
from golive.rundir import options_from_record, read_convert_record, source_for
from golive.tensors import resolve_sizes, synthesize


def torchscript_export(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:

    if not ctx.source:
        raise ValueError("needs the convert folder of the model (its source model is exported again)")
    folder = Path(ctx.source)
    record = read_convert_record(folder, "tune")
    if record.framework != "pytorch":
        raise ValueError(f"the source is a {record.framework} model; only PyTorch sources have a second exporter")
    options = options_from_record(record, folder).model_copy(update={"exporter": "torchscript"})
    source = source_for(record, folder, None)
    import_user_modules(options.imports)
    frontend, loaded = load_source(record.framework, source, options, part=record.part, attention="eager")
    sample = synthesize(record.inputs, resolve_sizes(record.inputs, record.export_sizes or loaded.dim_sizes))
    result = frontend.export(loaded, record.inputs, sample, dst, options)
    return {
        "exporter": result.exporter,
        "source_kind": loaded.kind,
        "attention": "eager" if loaded.kind == "transformers" else "as the model defines it",
    }
