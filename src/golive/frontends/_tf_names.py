"""TensorFlow-side names for the tensorflow frontend: tensor names (x, x:0), a frozen graph's likely outputs,
--custom-translation OP=DOMAIN for tf2onnx, and the ops tf2onnx left unconverted."""

from __future__ import annotations

import difflib
import re
from typing import Any

from golive.errors import ExportError, InputSpecError

__all__ = [
    "check_converted",
    "check_tensor",
    "custom_op_domains",
    "extra_opsets",
    "in_output_order",
    "sinks",
    "strip_index",
    "tensor_name",
]


def custom_op_domains(entries: list[str]) -> dict[str, str]:
    """--custom-translation TF_OP=DOMAIN entries: TensorFlow ops tf2onnx keeps as one custom-domain node."""
    custom = {}
    for entry in entries:
        op, eq, domain = entry.partition("=")
        if not eq or not re.fullmatch(r"\w+", op.strip()) or not re.fullmatch(r"[\w.]+", domain.strip()):
            raise InputSpecError(
                f"--custom-translation {entry!r}: a TensorFlow model takes TF_OP=DOMAIN",
                hint="e.g. --custom-translation MatrixInverse=ai.onnx.contrib, then --custom-ops with its implementation",
            )
        custom[op.strip()] = domain.strip()
    return custom


def extra_opsets(custom: dict[str, str]):
    if not custom:
        return None
    from onnx import helper

    return [helper.make_opsetid(domain, 1) for domain in sorted(set(custom.values()))]


def check_converted(model, custom: dict[str, str]) -> None:
    """tf2onnx leaves ops it cannot convert in the graph under their TensorFlow names: name them, with the way out."""
    from onnx import defs

    missing = sorted(
        {
            n.op_type
            for n in model.graph.node
            if n.domain in ("", "ai.onnx") and not defs.has(n.op_type) and n.op_type not in custom
        }
    )
    if missing:
        raise ExportError(
            f"tf2onnx cannot convert the TensorFlow op{'s' if len(missing) > 1 else ''} {', '.join(missing)} to ONNX",
            hint=f"keep it as a custom-domain node with --custom-translation {missing[0]}=ai.onnx.contrib and give ONNX "
            "Runtime its implementation with --custom-ops (a Python module using onnxruntime_extensions.onnx_op, or "
            "a .so library)",
            operators=missing,
        )


def tensor_name(name: str) -> str:
    """TensorFlow's tensor name for a node or tensor name: x -> x:0."""
    return name if re.search(r":\d+$", name) else f"{name}:0"


def strip_index(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def in_output_order(names: list[str]) -> list[str]:
    """Converter output names in the model's output order: Identity:0, Identity_1:0 ... / output_0, output_1 ..."""

    def index(name: str) -> int:
        m = re.search(r"_(\d+)(?::\d+)?$", name)
        return int(m.group(1)) if m else 0

    return sorted(names, key=index)


def sinks(graph_def) -> list[Any]:
    """Nodes whose outputs nothing consumes: the graph's likely outputs."""
    used = {re.sub(r":\d+$", "", i.lstrip("^")) for n in graph_def.node for i in n.input}
    skip = {"NoOp", "Const", "Placeholder", "Assert", "SaveV2", "RestoreV2", "VarHandleOp", "Identity_n"}
    return [n for n in graph_def.node if n.name not in used and n.op not in skip]


def check_tensor(name: str, nodes: dict, role: str, candidates: list) -> str:
    node = re.sub(r":\d+$", "", name)
    if node not in nodes:
        listed = ", ".join(n.name for n in candidates[:12]) or "none"
        close = difflib.get_close_matches(node, list(nodes), n=5)
        hint = f"the graph's {'placeholders' if role == 'input' else 'unconsumed nodes'} are: {listed}"
        if close:
            hint += f"; close names: {', '.join(close)}"
        raise InputSpecError(f"the graph has no tensor named {name} (given as an {role})", hint=hint)
    return name
