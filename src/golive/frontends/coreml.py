"""Core ML models (``.mlmodel``: neural-network and classic-ML specs) through onnxmltools, with an adapter.

onnxmltools 1.16's Core ML converter does not import: it asks for ``find_type_conversion`` (data_types),
``check_input_and_output_numbers`` / ``check_input_and_output_types`` (utils) and ``onnx.onnx_proto``, all
gone, and its package never imports the neural-network converters and shape calculators, so no layer is
registered (onnx/onnxmltools#735, fix in PR #776, both open). ``_adapt`` puts those four names back and
imports the registrations; it does nothing once upstream has them.

Core ML cannot run a prediction on Linux, so there is no source model to verify against: verify compares
with the expected outputs given in ``--data``, and otherwise refuses to say "passed" (exit 2, unless
--no-verify).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from golive._io import captured_output
from golive.errors import DataError, ExportError, ModelLoadError, SourceNotFoundError, require
from golive.frontends._tabular import name_batch_axis
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import BATCH, TensorSpec

__all__ = ["FRONTEND"]

_ARRAY_DTYPES = {65568: "float32", 65600: "float64", 131104: "int32", 65552: "float16"}


def _adapt() -> None:
    """Make onnxmltools' Core ML converter importable and register its neural-network layers."""
    import onnx
    import onnxmltools.convert.common.data_types as data_types
    import onnxmltools.convert.common.utils as utils

    if not hasattr(onnx, "onnx_proto"):
        # the converters spell onnx.TensorProto as onnx_proto.TensorProto; a name onnx no longer has, added here
        onnx.onnx_proto = onnx  # type: ignore[attr-defined]

    if not hasattr(data_types, "find_type_conversion"):

        def find_type_conversion(source_type, target_type):
            if type(source_type) is type(target_type):
                return "identity"
            raise ExportError(
                f"onnxmltools cannot connect a {type(source_type).__name__} to a {type(target_type).__name__} "
                "inside this Core ML pipeline"
            )

        data_types.find_type_conversion = find_type_conversion

    def _within(count: int, allowed) -> bool:
        if allowed is None:
            return True
        if isinstance(allowed, int):
            return count == allowed
        low, high = allowed
        return (low is None or count >= low) and (high is None or count <= high)

    if not hasattr(utils, "check_input_and_output_numbers"):

        def check_input_and_output_numbers(operator, input_count_range=None, output_count_range=None):
            for what, items, allowed in (
                ("inputs", operator.inputs, input_count_range),
                ("outputs", operator.outputs, output_count_range),
            ):
                if not _within(len(items), allowed):
                    raise ExportError(
                        f"Core ML layer {operator.full_name} has {len(items)} {what}; onnxmltools expects {allowed}"
                    )

        utils.check_input_and_output_numbers = check_input_and_output_numbers

    if not hasattr(utils, "check_input_and_output_types"):

        def check_input_and_output_types(operator, good_input_types=None, good_output_types=None):
            for what, items, good in (
                ("input", operator.inputs, good_input_types),
                ("output", operator.outputs, good_output_types),
            ):
                for variable in items:
                    if good is not None and type(variable.type) not in good:
                        raise ExportError(
                            f"Core ML layer {operator.full_name}: its {what} {variable.raw_name} is a "
                            f"{type(variable.type).__name__}; onnxmltools converts {', '.join(t.__name__ for t in good)}"
                        )

        utils.check_input_and_output_types = check_input_and_output_types

    import onnxmltools.convert.coreml.operator_converters.neural_network
    import onnxmltools.convert.coreml.shape_calculators.neural_network  # noqa: F401


class CoreMLFrontend:
    name = "coreml"
    runs_here = False  # Core ML predicts on Apple platforms only: verify needs expected outputs

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        if not path.exists():
            raise SourceNotFoundError(f"source {source} does not exist")
        if path.suffix.lower() == ".mlpackage" or path.is_dir():
            raise ModelLoadError(
                f"{path.name} is a Core ML package (an ML program): onnxmltools converts the neural-network "
                "and classic-ML .mlmodel specs only",
                hint="convert the model from its original framework (PyTorch, TensorFlow) instead",
            )

        with captured_output(("coremltools",)):  # on import it warns about every framework version it has not tested
            require("coremltools", extra="coreml", purpose="Reading a Core ML model")
            from coremltools.proto import Model_pb2

        spec = Model_pb2.Model()
        try:
            spec.ParseFromString(path.read_bytes())
        except Exception as exc:
            raise ModelLoadError(
                f"{path.name} is not a readable Core ML model: {exc}",
                hint="save it with coremltools (model.save('model.mlmodel'))",
            ) from None
        kind = spec.WhichOneof("Type")
        if kind is None:
            raise ModelLoadError(f"{path.name} holds no Core ML model", hint="is it a .mlmodel written by coremltools?")
        if kind == "mlProgram":
            raise ModelLoadError(
                f"{path.name} is an ML program: onnxmltools converts neural-network and classic-ML specs only",
                hint="convert the model from its original framework instead",
            )
        declared = [_input_spec(f) for f in spec.description.input]
        inputs = [i for i in declared if i is not None]
        return LoadedModel(
            framework=self.name,
            source=source,
            model=spec,
            kind=kind,
            inputs=inputs if len(inputs) == len(declared) else None,
            output_names=[o.name for o in spec.description.output],
            classifier=kind.endswith("Classifier"),
        )

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        onnxmltools = require("onnxmltools", extra="coreml", purpose="Converting a Core ML model")
        _adapt()
        try:
            onx = onnxmltools.convert_coreml(loaded.model, target_opset=options.opset)
        except ExportError:
            raise
        except Exception as exc:
            raise ExportError(
                f"onnxmltools cannot convert this Core ML {loaded.kind} model: {type(exc).__name__}: {exc}",
                hint="onnxmltools converts Core ML neural networks (common layers) and classic-ML models",
            ) from None
        name_batch_axis(onx)
        path.write_bytes(onx.SerializeToString())
        return ExportResult(
            exporter="onnxmltools",
            attempts=[{"exporter": "onnxmltools", "ok": True}],
            notes=["onnxmltools' Core ML converter runs with golive's adapter (onnx/onnxmltools#735)"],
        )

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:

        raise DataError(
            "Core ML cannot run predictions on Linux: there is no source model to compare with",
            hint="give inputs with their expected outputs (--data x.npz holding inputs and outputs), or --no-verify",
        )


def _input_spec(feature) -> TensorSpec | None:
    """A Core ML input as golive sees it: a multi-array gets a batch axis in front (as onnxmltools converts it)."""
    kind = feature.type.WhichOneof("Type")
    if kind == "multiArrayType":
        t = feature.type.multiArrayType
        return TensorSpec(name=feature.name, dtype=_ARRAY_DTYPES.get(t.dataType, "float32"), shape=[BATCH, *t.shape])
    if kind in ("doubleType", "int64Type"):
        return TensorSpec(name=feature.name, dtype="float32" if kind == "doubleType" else "int64", shape=[BATCH, 1])
    return None


FRONTEND = CoreMLFrontend()
