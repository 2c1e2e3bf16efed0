"""A transform whose model kills the process that runs it, reached through golive's public ways in: the transform
by import path (``tests/crash_worker.py:add_a_node_that_kills_its_process``) and its operator as a custom op
module (``custom_ops=[tests/crash_worker.py]``), whose kernel sends its own process SIGKILL."""

import os
import signal

import onnx
from onnxruntime_extensions import PyCustomOpDef, onnx_op


@onnx_op(op_type="KillsItsProcess", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
def kills_its_process(x):
    os.kill(os.getpid(), signal.SIGKILL)
    return x


def add_a_node_that_kills_its_process(src, dst, ctx):
    """The model with ai.onnx.contrib::KillsItsProcess before its first output."""
    model = onnx.load(str(src))
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["crash_in" if o == out else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("KillsItsProcess", ["crash_in"], [out], domain="ai.onnx.contrib"))
    model.opset_import.append(onnx.helper.make_opsetid("ai.onnx.contrib", 1))
    onnx.save(model, str(dst))
    return {"note": "the process measuring this model dies"}
