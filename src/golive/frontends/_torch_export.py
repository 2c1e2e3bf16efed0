"""PyTorch → ONNX: the dynamo exporter, the TorchScript exporter, and the fallback between them."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from golive._imports import load_object
from golive._io import captured_output
from golive.errors import ExportError, InputSpecError, ModelLoadError, first_line
from golive.frontends import _structure
from golive.frontends._structure import nest
from golive.frontends.base import ExportResult, LoadedModel
from golive.runtime import SessionConfig, make_session, run_session
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec, derived_parts, dim_name

log = logging.getLogger(__name__)

DEFAULT_TORCHSCRIPT_OPSET = 17
_NOISY_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx.experimental.symbolic_shapes")


def flatten_outputs(out) -> list:
    """Tensors of a model output (tensor, tuple/list, dict or ModelOutput), in order."""
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict) or hasattr(out, "to_tuple"):
        values = out.to_tuple() if hasattr(out, "to_tuple") else tuple(out.values())
        return [t for v in values for t in flatten_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in flatten_outputs(v)]
    if out is None:
        return []
    raise ModelLoadError(
        f"the model returned a {type(out).__name__}; golive can export tensors, tuples, lists and dicts of tensors"
    )


def export(
    loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
) -> ExportResult:
    import torch

    tensors = {s.name: torch.from_numpy(np.ascontiguousarray(sample[s.name])) for s in inputs}
    structure = _call_structure(loaded, [s.name for s in inputs])
    if structure is not None:  # tuples/dicts of tensors, or keyword-only arguments: forward(*args, **kwargs)
        order = _structure.leaves(structure)
        inputs = sorted(inputs, key=lambda s: order.index(s.name))  # ONNX inputs in the order the exporters flatten
        args, kwargs = _structure.nest(structure, tensors)
        loaded.input_structure = structure
    else:
        args, kwargs = tuple(tensors[s.name] for s in inputs), {}
    input_names = [s.name for s in inputs]
    output_names = _output_names(loaded, args, options, kwargs)
    axes = {s.name: {i: dim_name(s, i, d) for i, d in enumerate(s.shape or []) if not isinstance(d, int)} for s in inputs}
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
                note = _dynamo(loaded, args, path, input_names, output_names, axes, options, translations, kwargs, structure)
                if note:
                    result.notes.append(note)
                result.notes.extend(loaded.notes)
            elif structure is not None:  # the TorchScript exporter takes flat positional tensors: a wrapper nests them
                _torchscript(
                    _FlatCall(loaded.model, structure, input_names),
                    tuple(tensors[n] for n in input_names),
                    path,
                    input_names,
                    output_names,
                    axes,
                    options,
                )
            else:
                _torchscript(loaded.model, args, path, input_names, output_names, axes, options)
        except Exception as exc:  # the exporters raise many types; each failure is recorded, then the next is tried
            reason = _summary(exc)
            log.info("%s exporter failed: %s", exporter, reason)
            result.attempts.append({"exporter": exporter, "ok": False, "error": reason})
            errors.append(f"{exc!s}")
            _remove_partial(path)
            continue
        last = exporter == [e for e, skip in plan if not skip][-1]
        problem = _probe_dynamic(path, inputs, sample, axes, options) if axes else None
        if problem and not last:  # it exported, but only computes at the traced size: the next exporter may do better
            log.info("%s exporter: %s", exporter, problem)
            result.attempts.append({"exporter": exporter, "ok": False, "error": problem})
            errors.append(problem)
            _remove_partial(path)
            continue
        if problem:
            result.notes.append(f"{exporter} exporter: {problem}")
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
            operators=operators,
            attempts=result.attempts,
        )
    raise ExportError(
        f"no exporter could export the model ({tried})",
        hint="try --exporter torchscript or --exporter dynamo alone, and --debug for the full error",
        attempts=result.attempts,
    )


def _probe_dynamic(
    path: Path, inputs: list[TensorSpec], sample: dict[str, np.ndarray], axes: dict[str, dict[int, str]], options: ConvertOptions
) -> str | None:
    """Run the exported model at the traced sizes and with every dynamic axis one longer. Returns what went wrong
    when it cannot run at the second size (an exporter that baked a traced size into the graph); otherwise
    names the outputs' axes by what they follow (an exporter may record a traced size, or a made-up name, for
    an output axis that follows an input's dynamic axis), and returns None."""
    import onnx

    exported = {i.name: i for i in onnx.load(str(path), load_external_data=False).graph.input}
    # only the axes the exported model left dynamic (an export may keep an axis static by decision)
    axes = {
        name: {
            a: d
            for a, d in dims.items()
            if name in exported
            and a < len(exported[name].type.tensor_type.shape.dim)
            and not exported[name].type.tensor_type.shape.dim[a].HasField("dim_value")
        }
        for name, dims in axes.items()
    }
    axes = {k: v for k, v in axes.items() if v}
    if not axes:
        return None
    sizes: dict[str, int] = {}
    for s in inputs:
        for axis, name in axes.get(s.name, {}).items():
            sizes.setdefault(name, int(sample[s.name].shape[axis]))
    # each dimension one longer; a derived one (past_sequence+sequence) by as many as it adds up
    second = {name: size + len(derived_parts(name)) for name, size in sizes.items()}
    try:
        session = make_session(path, SessionConfig(custom_ops=options.custom_ops))
        first_out = run_session(session, {s.name: sample[s.name] for s in inputs})
    except Exception as exc:  # cannot even run at the traced size: verify reports that, with the details
        log.debug("probe at the traced sizes failed: %s", exc)
        return None
    longer = {}
    for s in inputs:  # the traced sample, each dynamic axis one longer (wrapping): real values stay in range
        arr = sample[s.name]
        for axis, name in axes.get(s.name, {}).items():
            arr = np.take(arr, np.arange(second[name]) % arr.shape[axis], axis=axis)
        longer[s.name] = arr
    try:
        second_out = run_session(session, longer)
    except Exception as exc:
        at = ", ".join(f"{k}={v}" for k, v in second.items())
        return f"the exported graph runs only at the traced sizes (ONNX Runtime fails at {at}: {_summary(exc)})"
    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for out in model.graph.output:
        a, b = first_out.get(out.name), second_out.get(out.name)
        if a is None or b is None or np.ndim(a) != np.ndim(b) or not out.type.HasField("tensor_type"):
            continue
        shape = out.type.tensor_type.shape
        if len(shape.dim) != np.ndim(a):
            continue
        for axis, (x, y) in enumerate(zip(np.shape(a), np.shape(b), strict=True)):
            follows = [n for n in sizes if sizes[n] == x and second[n] == y]
            dim = shape.dim[axis]
            if x == y:
                continue  # a static axis: what the exporter recorded stands
            name = follows[0] if len(follows) == 1 else f"{out.name}_dim{axis}"
            if dim.HasField("dim_param") and dim.dim_param == name:
                continue
            dim.Clear()
            dim.dim_param = name
            changed = True
    if changed:
        tmp = path.with_name(path.name + ".shapes")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    return None


def _plan(loaded: LoadedModel, options: ConvertOptions, translations: bool = False) -> list[tuple[str, str | None]]:
    if options.exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(
            f"--exporter {options.exporter} is for TensorFlow models",
            hint="PyTorch models use --exporter auto, dynamo or torchscript",
        )
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
            raise ExportError(f"--exporter {exporter} cannot export this source: {reason}", hint="use --exporter auto")
        plan.append((exporter, reason))
    return plan


def _call_structure(loaded: LoadedModel, names: list[str]) -> dict | None:
    """The forward call's structure when the inputs are nested (``hc.0``) or keyword-only; None for plain positional."""
    import inspect

    if loaded.kind == "transformers":  # golive's own wrappers take every tensor flat, in order, dotted names included
        return None
    forward = getattr(loaded.model, "forward", None) if loaded.kind in ("import-path", "pickle") else None
    keyword_only = set()
    if forward is not None:
        try:
            keyword_only = {n for n, p in inspect.signature(forward).parameters.items() if p.kind is p.KEYWORD_ONLY}
        except (TypeError, ValueError):
            pass
    if not _structure.is_nested(names) and not keyword_only & set(names):
        return None
    if loaded.kind not in ("import-path", "pickle"):
        raise InputSpecError(
            f"nested inputs ({', '.join(n for n in names if '.' in n)}) need a model given as Python code",
            hint="give the model class as SOURCE (file.py:Class or package.module:Class) with --weights",
        )
    return _structure.input_structure(names, forward)


def _output_names(loaded: LoadedModel, args: tuple, options: ConvertOptions, kwargs: dict | None = None) -> list[str]:
    """Run the model once in eager mode: a clear error if the inputs do not fit, and the output names."""
    import torch

    model = loaded.model.module() if loaded.kind == "torch-export" else loaded.model
    try:
        with torch.no_grad():
            out = model(*args, **(kwargs or {}))
    except Exception as exc:
        flat = flatten_outputs((args, kwargs or {}))
        shapes = ", ".join(f"{tuple(a.shape)} {str(a.dtype).replace('torch.', '')}" for a in flat)
        raise InputSpecError(
            f"the model fails on sample inputs of shapes {shapes}: {type(exc).__name__}: "
            f"{first_line(exc) if str(exc).strip() else ''}",
            hint="check --input (names in forward() order, dtypes, shapes) or pass real inputs with --data",
        ) from exc
    count = len(flatten_outputs(out))
    if options.output_names:
        if len(options.output_names) != count:
            raise InputSpecError(f"--output-names gives {len(options.output_names)} names, the model returns {count} outputs")
        return list(options.output_names)
    if hasattr(loaded.model, "output_names_for"):
        return loaded.model.output_names_for(*args)
    if isinstance(out, torch.Tensor) or (isinstance(out, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in out)):
        return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
    structure = _structure.output_structure(out)  # nested or dict outputs: each named by its path
    loaded.output_structure = structure
    return _structure.leaves(structure)


def _translations(options: ConvertOptions) -> dict | None:
    """The --custom-translation tables, merged: torch operator -> onnxscript function(s)."""
    if not options.custom_translation:
        return None
    import inspect

    table: dict = {}
    for path in options.custom_translation:
        obj = load_object(path, reuse=True)
        if not isinstance(obj, dict) or not obj:
            raise ExportError(
                f"--custom-translation {path} is a {type(obj).__name__}, not a dict from torch operator to onnxscript function",
                hint="TABLE = {torch.ops.my_ns.my_op.default: my_onnxscript_function}",
            )
        for op, functions in obj.items():
            for fn in functions if isinstance(functions, (list, tuple)) else [functions]:
                python = getattr(fn, "function", None)
                if python is None:
                    raise ExportError(
                        f"the translation for {op} in {path} is a {type(fn).__name__}, not an onnxscript function",
                        hint="decorate it with @onnxscript.script(onnxscript.values.Opset('my.domain', 1))",
                    )
                if inspect.signature(python).return_annotation is inspect.Signature.empty:
                    raise ExportError(
                        f"the translation {python.__name__} for {op} has no return type annotation; the "
                        "exporter would give its node no outputs",
                        hint=f"annotate it, e.g. def {python.__name__}(x: FLOAT) -> FLOAT (from onnxscript import FLOAT)",
                    )
        table.update(obj)
    return table


def _dynamo(
    loaded, args, path, input_names, output_names, axes, options, translations=None, kwargs=None, structure=None
) -> str | None:
    import torch

    dims: dict[str, object] = {}

    def dim(name: str):
        if name not in dims:
            dims[name] = torch.export.Dim(re.sub(r"\W", "_", name))
        return dims[name]

    dynamic_shapes: dict[str, Any] | tuple[Any, ...] | None = None

    def spec(name: str):
        return {a: dim(n) for a, n in axes.get(name, {}).items()} or None

    if axes and structure is not None:  # by argument name: nested parts mirror their argument's structure
        dynamic_shapes = {
            **{_top(node): _structure.map_leaves(node, spec) for node in structure["args"]},
            **{k: _structure.map_leaves(v, spec) for k, v in structure["kwargs"].items()},
        }
    elif axes and loaded.kind != "torch-export":
        dynamic_shapes = tuple(spec(name) for name in input_names)
        if _takes_varargs(loaded.model):
            dynamic_shapes = (dynamic_shapes,)  # forward(self, *args): one structured argument

    def run(shapes):
        with captured_output(_NOISY_LOGGERS):
            program = torch.onnx.export(
                loaded.model,
                args,
                None,
                kwargs=kwargs or None,
                dynamo=True,
                input_names=input_names,
                output_names=output_names,
                opset_version=options.opset,
                dynamic_shapes=shapes,
                optimize=options.constant_folding,
                verbose=False,
                custom_translation_table=translations,
            )
        assert program is not None  # dynamo=True always returns an ONNXProgram
        if shapes is not None or loaded.kind == "torch-export":  # fix up the in-memory model: no second parse
            _check_dynamic(program.model, axes)
            _rename_dims(program.model, axes)  # a saved program's own symbols (s77) become the names golive gave
        with captured_output(_NOISY_LOGGERS):
            program.save(str(path))

    default_only = loaded.default_dynamic
    try:
        run(dynamic_shapes)
    except Exception as exc:
        if dynamic_shapes is None or not default_only or not _is_shape_constraint(exc):
            raise
        # The dynamic batch axis was only our default and the model does not allow it: export the shapes declared.
        declared = loaded.declared_shapes
        args = tuple(
            a[: declared[n][0]] if n in declared and declared[n][0] < a.shape[0] else a
            for n, a in zip(input_names, args, strict=False)
        )
        run(None)
        return f"the model does not allow a dynamic batch axis, so its shapes are static ({_summary(exc)})"
    return None


def _top(node) -> str:
    """The forward() argument a structure node stands for (the first part of its first leaf's name)."""

    return _structure.leaves(node)[0].split(".")[0]


def _takes_varargs(model) -> bool:
    import inspect

    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind is p.VAR_POSITIONAL for p in params)


class SpecializedAxisError(RuntimeError):
    """torch.export turned an axis asked to be dynamic into a constant (a shape the model's code depends on)."""


def _FlatCall(model, structure: dict, names: list[str]):
    """``model`` called with flat positional tensors (the ONNX inputs, in order), returning a flat tuple."""
    import torch

    class FlatCall(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *flat):
            args, kwargs = nest(structure, dict(zip(names, flat, strict=True)))
            return tuple(flatten_outputs(self.model(*args, **kwargs)))

    return FlatCall()


def _torchscript(model, args, path, input_names, output_names, axes, options) -> None:
    import torch

    with captured_output(_NOISY_LOGGERS):
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=axes or None,
            opset_version=options.opset or DEFAULT_TORCHSCRIPT_OPSET,
            do_constant_folding=options.constant_folding,
        )


def _check_dynamic(model, axes: dict[str, dict[int, str]]) -> None:
    """Raise when an axis asked to be dynamic came out static in the exported (onnx_ir) model."""
    static = []
    for value in model.graph.inputs:
        shape = value.shape
        for axis, name in axes.get(value.name, {}).items():
            if shape is not None and axis < len(shape) and isinstance(shape[axis], int):
                static.append(f"{value.name} axis {axis} ({name}) became {shape[axis]}")
    if static:
        raise SpecializedAxisError(
            "torch.export specialized axes that were asked to be dynamic: "
            + "; ".join(static)
            + " (the model's code depends on that size, e.g. a Python loop over it)"
        )


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
        dims = [
            ir.SymbolicDim(renames[d.value]) if isinstance(d, ir.SymbolicDim) and d.value in renames else d for d in value.shape
        ]
        value.shape = ir.Shape(dims)


def _is_shape_constraint(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, SpecializedAxisError) or any(
        s in text for s in ("inferred a static shape", "Constraints violated", "specialized", "Not all values of")
    )


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
    patterns = (
        r"No ONNX function found for <OpOverload\(op='([\w.]+)'",
        r"unrecognized namespace ([\w:.]+)",
        r"Exporting the operator '?([\w:.]+)'? to ONNX",
        r"Unsupported: ONNX export of operator ([\w:.]+)",
    )
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
