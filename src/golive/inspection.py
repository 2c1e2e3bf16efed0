"""Model summary: I/O with symbolic dims, opsets, producer, op histogram, parameters, size, metadata."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from golive._html import box, escape, table
from golive.frontends.onnxfile import load_onnx
from golive.runtime import custom_domains
from golive.tensors import TensorSpec, specs_from_onnx

__all__ = ["ModelSummary", "summarize"]


class ModelSummary(BaseModel):
    path: str
    file_bytes: int
    external_data: list[str] = Field(default_factory=list, description="external data files, relative to the model")
    external_bytes: int = 0
    ir_version: int
    producer: str
    opsets: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    node_count: int
    subgraph_node_count: int = Field(default=0, description="nodes inside Loop/If/Scan bodies")
    op_types: dict[str, int] = Field(description="op type -> count, including subgraphs, most frequent first")
    functions: int = 0
    custom_ops: dict[str, list[str]] = Field(
        default_factory=dict, description="operators outside ONNX Runtime's own domains, by domain: they need --custom-ops"
    )
    parameters: int
    parameter_bytes: int
    initializers: int
    metadata: dict[str, str] = Field(default_factory=dict)
    doc_string: str = ""
    origins: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "for a convert folder of a model with nested inputs or outputs: where each ONNX input and output lies in "
            "forward()'s arguments and its return value (hc[0], features['values'], returned[1][0])"
        ),
    )

    task: str | None = Field(default=None, description="a Hugging Face folder's task, and how golive told it")
    parts: dict[str, ModelSummary] = Field(
        default_factory=dict, description="a model converted as parts: each part's summary (the figures above are totals)"
    )

    def _repr_html_(self) -> str:
        return summary_html(self)

    @classmethod
    def of_parts(cls, path: str, parts: dict[str, ModelSummary]) -> ModelSummary:
        """The summary of a model converted as parts: totals, and each part's own."""
        first = next(iter(parts.values()))
        ops: Counter = Counter()
        for p in parts.values():
            ops.update(p.op_types)
        return cls(
            path=path,
            file_bytes=sum(p.file_bytes for p in parts.values()),
            external_bytes=sum(p.external_bytes for p in parts.values()),
            ir_version=first.ir_version,
            producer=first.producer,
            opsets=first.opsets,
            inputs=[],
            outputs=[],
            node_count=sum(p.node_count for p in parts.values()),
            subgraph_node_count=sum(p.subgraph_node_count for p in parts.values()),
            op_types=dict(ops.most_common()),
            functions=sum(p.functions for p in parts.values()),
            parameters=sum(p.parameters for p in parts.values()),
            parameter_bytes=sum(p.parameter_bytes for p in parts.values()),
            initializers=sum(p.initializers for p in parts.values()),
            parts=parts,
        )


def _walk(graph, counts: Counter, depth: int = 0) -> tuple[int, int]:
    top = sub = 0
    for node in graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] += 1
        if depth == 0:
            top += 1
        else:
            sub += 1
        for attr in node.attribute:
            graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
            for g in graphs:
                t, s = _walk(g, counts, depth + 1)
                sub += t + s
    return top, sub


def summarize(path: str | Path) -> ModelSummary:
    from onnx import helper

    path = Path(path)
    model = load_onnx(path, load_external_data=False)
    inputs, outputs = specs_from_onnx(model)
    counts: Counter = Counter()
    top, sub = _walk(model.graph, counts)
    params = nbytes = 0
    external: set[str] = set()
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if len(init.dims) else 1
        params += n
        try:
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        except Exception:
            itemsize = 0
        nbytes += n * itemsize
        for entry in init.external_data:
            if entry.key == "location":
                external.add(entry.value)
    folder = path.parent.resolve()
    inside = [folder / f for f in external if folder in (folder / f).resolve().parents]  # never stat a path outside
    ext_bytes = sum(f.stat().st_size for f in inside if f.is_file())
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p)
    return ModelSummary(
        path=str(path),
        file_bytes=path.stat().st_size,
        external_data=sorted(external),
        external_bytes=ext_bytes,
        ir_version=model.ir_version,
        producer=producer,
        opsets={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=inputs,
        outputs=outputs,
        node_count=top,
        subgraph_node_count=sub,
        op_types=dict(counts.most_common()),
        functions=len(model.functions),
        custom_ops=custom_domains(model),
        parameters=params,
        parameter_bytes=nbytes,
        initializers=len(model.graph.initializer),
        metadata={p.key: p.value for p in model.metadata_props},
        doc_string=model.doc_string,
    )


def summary_html(s: ModelSummary) -> str:

    io = [("input", t.name, t.dtype, t.shape, s.origins.get(t.name, "")) for t in s.inputs] + [
        ("output", t.name, t.dtype, t.shape, s.origins.get(t.name, "")) for t in s.outputs
    ]
    facts = [
        ("nodes", s.node_count + s.subgraph_node_count),
        ("parameters", f"{s.parameters:,}"),
        ("size", f"{(s.file_bytes + s.external_bytes) / 2**20:.2f} MB"),
        ("IR version", s.ir_version),
        ("producer", s.producer),
        ("opsets", ", ".join(f"{k} {v}" for k, v in s.opsets.items())),
    ]
    if s.custom_ops:
        facts.append(("custom-domain ops", "; ".join(f"{d}: {', '.join(ops)}" for d, ops in s.custom_ops.items())))
    return box(
        f"model: {escape(s.path)}",
        table(["", "name", "dtype", "shape", "from"], io, "class='summary-io'")
        + table(["", ""], facts, "class='summary-facts'")
        + table(["op", "count"], list(s.op_types.items()), "class='summary-ops'"),
    )
