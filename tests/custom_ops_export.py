"""Translations, written with onnxscript, for operators the PyTorch exporter cannot translate.

TO_ONNX computes golive_test::fancy_sin with standard ONNX ops; TO_CUSTOM_NODE emits one
ai.onnx.contrib::FancySin node (its implementation is in custom_ops_runtime.py); INVERSE_TO_CONTRIB
maps golive_test::inverse to the ai.onnx.contrib::Inverse that onnxruntime-extensions' compiled library holds.
"""

import onnxscript
import torch
from onnxscript import FLOAT
from onnxscript import opset18 as op

import zoo  # noqa: F401  (registers the golive_test operators)

translations = onnxscript.values.Opset("golive.test.translations", 1)
contrib = onnxscript.values.Opset("ai.onnx.contrib", 1)


@onnxscript.script(translations)
def fancy_sin_with_onnx_ops(x: FLOAT) -> FLOAT:
    return op.Mul(op.Sin(x), op.CastLike(2.0, x))


@onnxscript.script(translations)
def fancy_sin_as_custom_node(x: FLOAT) -> FLOAT:
    return contrib.FancySin(x)


@onnxscript.script(translations)
def fancy_sin_untyped(x):
    return op.Sin(x)


TO_ONNX = {torch.ops.golive_test.fancy_sin.default: fancy_sin_with_onnx_ops}
TO_CUSTOM_NODE = {torch.ops.golive_test.fancy_sin.default: fancy_sin_as_custom_node}
UNTYPED = {torch.ops.golive_test.fancy_sin.default: fancy_sin_untyped}


@onnxscript.script(translations)
def inverse_to_contrib(a: FLOAT) -> FLOAT:
    return contrib.Inverse(a)


INVERSE_TO_CONTRIB = {torch.ops.golive_test.inverse.default: inverse_to_contrib}
