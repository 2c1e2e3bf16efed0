"""ONNX files as sources: validated and copied through, so every later step accepts any ONNX model.

Its reference for verification is the onnx package's own ReferenceEvaluator, an implementation
independent of ONNX Runtime (or the expected outputs stored with the test data, when given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from golive.errors import ModelLoadError, SourceNotFoundError, first_line
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import BATCH, TensorSpec, dim_name, specs_from_onnx

__all__ = ["FRONTEND", "check_onnx", "load_onnx", "name_dims", "rename_values", "save_onnx"]

_EXTERNAL_THRESHOLD = 1_800_000_000  # protobuf cannot hold more than 2 GB
_EXTERNAL_TENSOR_MIN = 1024  # smaller tensors stay inside model.onnx


def load_onnx(path: str | Path, *, load_external_data: bool = True):
    """``onnx.load`` with a clear error for a missing, truncated or corrupt file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise SourceNotFoundError(f"ONNX model {path} does not exist")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a readable ONNX model (truncated or corrupt?): {first_line(exc, 200)}",
            hint="re-export or re-download the model",
        ) from exc


def check_onnx(path: str | Path) -> None:
    """``onnx.checker`` on the file: works with external data, and is faster than checking a parsed model."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{Path(path).name} fails the ONNX checker: {first_line(exc)}") from exc


def save_onnx(model, path: Path) -> None:
    """Save, moving weights to ``<name>.data`` when the model is too large for one protobuf."""
    import onnx

    size = sum(t.ByteSize() for t in model.graph.initializer)
    if size > _EXTERNAL_THRESHOLD:
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=_EXTERNAL_TENSOR_MIN,
        )
    else:
        onnx.save(model, str(path))


def rename_values(model, renames: dict[str, str]) -> None:
    """Rename graph inputs/outputs (and every node reference to them) in an ``onnx.ModelProto``."""
    renames = {old: new for old, new in renames.items() if old != new}
    if not renames:
        return
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in renames:
                node.input[i] = renames[name]
        for i, name in enumerate(node.output):
            if name in renames:
                node.output[i] = renames[name]
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        if value.name in renames:
            value.name = renames[value.name]


def name_dims(model, inputs: list[TensorSpec]) -> None:
    """Give the inputs' dynamic axes golive's names (converters write unk__N), and a batch output axis its name."""

    by_name = {s.name: s for s in inputs}
    batch = False
    for value in model.graph.input:
        spec = by_name.get(value.name)
        if spec is None or not spec.shape or not value.type.HasField("tensor_type"):
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, (d, want) in enumerate(zip(dims, spec.shape, strict=False)):  # a rank mismatch is reported elsewhere
            name = dim_name(spec, axis, want)
            if name and not d.HasField("dim_value"):
                d.dim_param = name
                batch = batch or (axis == 0 and name == BATCH)
    if not batch:
        return
    for value in model.graph.output:
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else []
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = BATCH


class OnnxFrontend:
    name = "onnx"

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        model = load_onnx(path)
        check_onnx(path)
        inputs, outputs = specs_from_onnx(model)
        return LoadedModel(
            framework=self.name, source=source, model=model, kind="onnx", inputs=inputs, output_names=[o.name for o in outputs]
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        notes = []
        if options.opset:
            notes.append("--opset is ignored for ONNX sources: the model is copied as it is")
        save_onnx(loaded.model, path)
        return ExportResult(exporter="copy", attempts=[{"exporter": "copy", "ok": True}], notes=notes)

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        from onnx.reference import ReferenceEvaluator

        if "evaluator" not in loaded.details:
            try:
                loaded.details["evaluator"] = ReferenceEvaluator(loaded.model)
            except Exception as exc:
                raise ModelLoadError(
                    f"the ONNX reference evaluator cannot run this model: {first_line(exc, 200)}",
                    hint="verify it against expected outputs instead: --data with test_data_set_N/output_K.pb",
                ) from exc
        outs = loaded.details["evaluator"].run(output_names, feeds)
        return dict(zip(output_names, (np.asarray(o) for o in outs), strict=True))


FRONTEND = OnnxFrontend()
