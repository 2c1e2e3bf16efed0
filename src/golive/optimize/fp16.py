"""float16 conversion for GPU providers (CPU kernels for fp16 are few and slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive.optimize import TransformContext


def to_fp16(src: Path, dst: Path, ctx: TransformContext) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return {}
