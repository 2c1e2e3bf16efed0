"""ONNX Runtime implementations, in Python through onnxruntime-extensions, of the custom-domain operators
that custom_ops_export.py emits. Kept free of torch: every tuning worker imports it."""

import numpy as np
from onnxruntime_extensions import PyCustomOpDef, onnx_op


@onnx_op(op_type="FancySin", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
def fancy_sin(x):
    return (np.sin(x) * 2).astype(np.float32)


@onnx_op(
    op_type="MatrixInverse",
    inputs=[PyCustomOpDef.dt_float],
    outputs=[PyCustomOpDef.dt_float],
    attrs={"adjoint": PyCustomOpDef.dt_int64},
)
def matrix_inverse(a, **attrs):
    """TensorFlow's MatrixInverse, kept as one ai.onnx.contrib node by tf2onnx (--custom-translation MatrixInverse=...)."""
    inverse = np.linalg.inv(a)
    return (np.swapaxes(inverse, -1, -2).conj() if attrs.get("adjoint") else inverse).astype(np.float32)
