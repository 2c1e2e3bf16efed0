"""PyTorch → ONNX: the dynamo exporter, the TorchScript exporter, and the fallback between them."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from golive._io import captured_output
from golive.errors import ExportError, InputSpecError
from golive.frontends.base import ExportResult, LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec, dim_name

log = logging.getLogger(__name__)

DEFAULT_TORCHSCRIPT_OPSET = 17
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")


def export(loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray],
           path: Path, options: ConvertOptions) -> ExportResult:
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[s.name])) for s in inputs)
    input_names = [s.name for s in inputs]
    output_names = _output_names(loaded, args, options)
    axes = {s.name: {i: dim_name(s, i, d) for i, d in enumerate(s.shape or []) if not isinstance(d, int)}
            for s in inputs}
    axes = {k: v for k, v in axes.items() if v}

    translations = _translations(options)
    plan = _plan(loaded, options, bool(translations))
    result = ExportResult(exporter="")
    errors: list[str] = []
    for exporter, skip_reason in plan:
        if skip_reason:
            result.attempts.append({"exporter": exporter, "ok": False, "skipped": skip_reason})
            continue
        try:
            if exporter == "dynamo":
                note = _dynamo(loaded, args, path, input_names, output_names, axes, options, translations)
                if note:
                    result.notes.append(note)
            else:
                _torchscript(loaded.model, args, path, input_names, output_names, axes, options)
        except Exception as exc:  # the exporters raise many types; each failure is recorded, then the next is tried
            reason = _summary(exc)
            log.info("%s exporter failed: %s", exporter, reason)
            result.attempts.append({"exporter": exporter, "ok": False, "error": reason})
            errors.append(f"{str(exc)}")
            _remove_partial(path)
            continue
        result.attempts.append({"exporter": exporter, "ok": True})
        result.exporter = exporter
        failed = [a for a in result.attempts if not a["ok"]]
        if failed:
            why = failed[0].get("error") or failed[0].get("skipped")
            result.fallback_reason = f"{failed[0]['exporter']} exporter: {why}"
        return result

    operators = _operators(errors)
    tried = "; ".join(f"{a['exporter']}: {a.get('error') or a.get('skipped')}" for a in result.attempts)
    if operators:
        raise ExportError(
            f"PyTorch cannot export the operator{'s' if len(operators) > 1 else ''} {', '.join(operators)} to ONNX "
            f"(tried: {', '.join(a['exporter'] for a in result.attempts)}; reasons with --verbose)",
            hint=f"two ways out: (1) write an onnxscript function that computes it with existing ONNX ops, typed "
                 f"(def f(x: FLOAT) -> FLOAT), and pass --custom-translation my_ops.py:TABLE with TABLE = "
                 f"{{torch.ops.{operators[0].replace('::', '.')}.default: f}}; (2) have that function emit one "
                 f"custom-domain node (onnxscript.values.Opset('ai.onnx.contrib', 1).MyOp(x)) and give ONNX Runtime "
                 f"its implementation with --custom-ops (a .so library, or a Python module using "
                 f"onnxruntime_extensions.onnx_op)",
            operators=operators, attempts=result.attempts)
    raise ExportError(f"no exporter could export the model ({tried})",
                      hint="try --exporter torchscript or --exporter dynamo alone, and --debug for the full error",
                      attempts=result.attempts)


def _plan(loaded: LoadedModel, options: ConvertOptions, translations: bool = False) -> list[tuple[str, str | None]]:
    if options.exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(f"--exporter {options.exporter} is for TensorFlow models",
                          hint="PyTorch models use --exporter auto, dynamo or torchscript")
    wanted = ["dynamo", "torchscript"] if options.exporter == "auto" else [options.exporter]
    plan = []
    for exporter in wanted:
        reason = None
        if exporter == "torchscript" and translations:
            reason = "--custom-translation applies to the dynamo exporter only"
        if exporter == "dynamo" and loaded.kind == "torchscript":
            reason = "torch.export cannot trace a TorchScript module; its graph goes to the TorchScript exporter"
        if exporter == "torchscript" and loaded.kind == "torch-export":
            reason = "a torch.export archive can only go through the dynamo exporter"
        if reason and options.exporter != "auto":
            raise ExportError(f"--exporter {exporter} cannot export this source: {reason}",
                              hint="use --exporter auto")
        plan.append((exporter, reason))
    return plan


def _output_names(loaded: LoadedModel, args: tuple, options: ConvertOptions) -> list[str]:
    """Run the model once in eager mode: a clear error if the inputs do not fit, and the output count."""
    import torch

    from golive.frontends.pytorch import flatten_outputs

    model = loaded.model.module() if loaded.kind == "torch-export" else loaded.model
    try:
        with torch.no_grad():
            out = model(*args)
    except Exception as exc:
        shapes = ", ".join(f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" for a in args)
        raise InputSpecError(f"the model fails on sample inputs of shapes {shapes}: {type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ''}",
                             hint="check --input (names in forward() order, dtypes, shapes) or pass real inputs with --data") from exc
    count = len(flatten_outputs(out))
    if options.output_names:
        if len(options.output_names) != count:
            raise InputSpecError(f"--output-names gives {len(options.output_names)} names, the model returns {count} outputs")
        return list(options.output_names)
    if hasattr(loaded.model, "output_names_for"):
        return loaded.model.output_names_for(*args)
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _translations(options: ConvertOptions) -> dict | None:
    """The --custom-translation tables, merged: torch operator -> onnxscript function(s)."""
    if not options.custom_translation:
        return None
    import inspect

    from golive._imports import load_object

    table: dict = {}
    for path in options.custom_translation:
        obj = load_object(path, reuse=True)
        if not isinstance(obj, dict) or not obj:
            raise ExportError(f"--custom-translation {path} is a {type(obj).__name__}, not a dict from torch operator "
                              "to onnxscript function", hint="TABLE = {torch.ops.my_ns.my_op.default: my_onnxscript_function}")
        for op, functions in obj.items():
            for fn in functions if isinstance(functions, (list, tuple)) else [functions]:
                python = getattr(fn, "function", None)
                if python is None:
                    raise ExportError(f"the translation for {op} in {path} is a {type(fn).__name__}, not an onnxscript "
                                      "function", hint="decorate it with @onnxscript.script(onnxscript.values.Opset('my.domain', 1))")
                if inspect.signature(python).return_annotation is inspect.Signature.empty:
                    raise ExportError(f"the translation {python.__name__} for {op} has no return type annotation; the "
                                      "exporter would give its node no outputs",
                                      hint=f"annotate it, e.g. def {python.__name__}(x: FLOAT) -> FLOAT (from onnxscript import FLOAT)")
        table.update(obj)
    return table


def _dynamo(loaded, args, path, input_names, output_names, axes, options, translations=None) -> str | None:
    import torch

    dims: dict[str, object] = {}

    def dim(name: str):
        if name not in dims:
            dims[name] = torch.export.Dim(re.sub(r"\W", "_", name))
        return dims[name]

    dynamic_shapes = None
    if axes and loaded.kind != "torch-export":
        dynamic_shapes = tuple({a: dim(n) for a, n in axes.get(name, {}).items()} or None for name in input_names)
        if _takes_varargs(loaded.model):
            dynamic_shapes = (dynamic_shapes,)  # forward(self, *args): one structured argument

    def run(shapes):
        with captured_output(_NOISY_LOGGERS):
            program = torch.onnx.export(
                loaded.model, args, None, dynamo=True, input_names=input_names, output_names=output_names,
                opset_version=options.opset, dynamic_shapes=shapes, optimize=options.constant_folding, verbose=False,
                custom_translation_table=translations)
        if shapes is not None:  # fix up the in-memory model: no second parse of a large file
            _check_dynamic(program.model, axes)
            _rename_dims(program.model, axes)
        with captured_output(_NOISY_LOGGERS):
            program.save(str(path))

    default_only = bool(loaded.details.get("default_dynamic"))
    try:
        run(dynamic_shapes)
    except Exception as exc:
        if dynamic_shapes is None or not default_only or not _is_shape_constraint(exc):
            raise
        # The dynamic batch axis was only our default and the model does not allow it: export the shapes declared.
        declared = loaded.details.get("declared_shapes", {})
        args = tuple(a[: declared[n][0]] if n in declared and declared[n][0] < a.shape[0] else a
                     for n, a in zip(input_names, args))
        run(None)
        return f"the model does not allow a dynamic batch axis, so its shapes are static ({_summary(exc)})"
    return None


def _takes_varargs(model) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_POSITIONAL for p in params)


class SpecializedAxisError(RuntimeError):
    """torch.export turned an axis asked to be dynamic into a constant (a shape the model's code depends on)."""


def _torchscript(model, args, path, input_names, output_names, axes, options) -> None:
    import torch

    with captured_output(_NOISY_LOGGERS):
        torch.onnx.export(model, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=axes or None, opset_version=options.opset or DEFAULT_TORCHSCRIPT_OPSET,
                          do_constant_folding=options.constant_folding)


def _check_dynamic(model, axes: dict[str, dict[int, str]]) -> None:
    """Raise when an axis asked to be dynamic came out static in the exported (onnx_ir) model."""
    static = []
    for value in model.graph.inputs:
        shape = value.shape
        for axis, name in axes.get(value.name, {}).items():
            if shape is not None and axis < len(shape) and isinstance(shape[axis], int):
                static.append(f"{value.name} axis {axis} ({name}) became {shape[axis]}")
    if static:
        raise SpecializedAxisError("torch.export specialized axes that were asked to be dynamic: " + "; ".join(static)
                                   + " (the model's code depends on that size, e.g. a Python loop over it)")


def _rename_dims(model, axes: dict[str, dict[int, str]]) -> None:
    """Keep the user's dimension names (the dynamo exporter may call them s0, s1...) on inputs and outputs."""
    import onnx_ir as ir

    renames: dict[str, str] = {}
    for value in model.graph.inputs:
        for axis, name in axes.get(value.name, {}).items():
            dim = value.shape[axis] if value.shape is not None and axis < len(value.shape) else None
            if isinstance(dim, ir.SymbolicDim) and dim.value and dim.value != name:
                renames[dim.value] = name
    if not renames:
        return
    for value in [*model.graph.inputs, *model.graph.outputs]:
        if value.shape is None:
            continue
        dims = [ir.SymbolicDim(renames[d.value]) if isinstance(d, ir.SymbolicDim) and d.value in renames else d
                for d in value.shape]
        value.shape = ir.Shape(dims)


def _is_shape_constraint(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, SpecializedAxisError) or any(
        s in text for s in ("inferred a static shape", "Constraints violated", "specialized", "Not all values of"))


def _summary(exc: BaseException) -> str:
    """The informative part of an exporter error, on one line."""
    text = str(exc)
    m = re.search(r"## Exception summary\s*(.*?)(?:\(Refer to the full stack trace|\Z)", text, re.S)
    if m:
        text = m.group(1)
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and ln.strip() != "⬆️"]
    text = " ".join(lines) if lines else type(exc).__name__
    return text[:600]


def _operators(errors: list[str]) -> list[str]:
    found: list[str] = []
    patterns = (r"No ONNX function found for <OpOverload\(op='([\w.]+)'",
                r"unrecognized namespace ([\w:.]+)",
                r"Exporting the operator '?([\w:.]+)'? to ONNX",
                r"Unsupported: ONNX export of operator ([\w:.]+)")
    for text in errors:
        for pat in patterns:
            for op in re.findall(pat, text):
                op = op.rstrip(".:")
                op = op.replace(".", "::", 1) if "::" not in op else op
                if op not in found:
                    found.append(op)
    return found


def _remove_partial(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".data")):
        p.unlink(missing_ok=True)
