"""ONNX Runtime implementations, in Python through onnxruntime-extensions, of the custom-domain operators
that custom_ops_export.py emits. Kept free of torch: every tuning worker imports it."""

import numpy as np
from onnxruntime_extensions import PyCustomOpDef, onnx_op


@onnx_op(op_type="FancySin", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
def fancy_sin(x):
    return (np.sin(x) * 2).astype(np.float32)
