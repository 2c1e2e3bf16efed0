"""TensorFlow and Keras: SavedModel folders, Keras 3 ``.keras`` files and frozen graphs (``.pb``).

Routes to ONNX:

- ``tf2onnx``: a SavedModel signature (or a Keras model, through a SavedModel it is exported to first)
  traced as a ``tf.function`` and converted by ``tf2onnx.convert.from_function``; a frozen graph by
  ``tf2onnx.convert.from_graph_def``.
- ``keras``: Keras 3's own ``model.export(path, format="onnx")``.

``tf2onnx.convert.from_keras`` is not used: it fails on Keras 3 models. A ``.keras`` file tries the
Keras route first, then the SavedModel route; each failure is recorded with its reason.
Verification runs the same TensorFlow function (signature, Keras model, or graph session).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from golive._io import captured_output
from golive.errors import (
    ExportError,
    FrameworkError,
    InputSpecError,
    ModelLoadError,
    SourceNotFoundError,
    UntrustedPickleError,
    first_line,
    require,
)
from golive.frontends._tf_names import (
    check_converted,
    check_tensor,
    custom_op_domains,
    extra_opsets,
    in_output_order,
    sinks,
    strip_index,
    tensor_name,
)
from golive.frontends.base import ExportResult, LoadedModel
from golive.frontends.onnxfile import name_dims, rename_values, save_onnx
from golive.spec import ConvertOptions
from golive.tensors import BATCH, Dim, TensorSpec, parse_input_spec

__all__ = ["FRONTEND"]

log = logging.getLogger(__name__)

_NOISY_LOGGERS = ("tensorflow", "tf2onnx", "absl", "keras", "h5py")
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
GRAPH_SUFFIXES = (".pb",)
DEFAULT_SIGNATURE = "serving_default"


def _tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines go nowhere useful
    with captured_output(_NOISY_LOGGERS):  # the import itself prints C++ log lines
        return require("tensorflow", package="tensorflow-cpu", extra="tensorflow", purpose="Converting a TensorFlow model")


def _tf2onnx():
    tf2onnx = require("tf2onnx", extra="tensorflow", purpose="Converting a TensorFlow model to ONNX")
    try:  # tf2onnx 1.17 still uses numpy<2 spellings in a few passes; Keras ships the patch it applies itself
        from keras.src.export.tf2onnx_lib import patch_tf2onnx

        patch_tf2onnx()
    except Exception:  # an older or newer Keras without it: tf2onnx works for most graphs anyway
        log.debug("keras' tf2onnx patch is not available", exc_info=True)
    return tf2onnx


def _dim_names(name: str, dims: list[int | None] | None, integer: bool) -> list[Dim] | None:
    """TensorFlow's unknown sizes (None) become named dynamic axes: batch first, sequence for token ids."""
    if dims is None:
        return None
    out: list[Dim] = []
    for axis, d in enumerate(dims):
        if d is not None and d >= 0:
            out.append(int(d))
        elif axis == 0:
            out.append(BATCH)
        elif axis == 1 and integer and len(dims) == 2:
            out.append("sequence")
        else:
            out.append(f"{name}_{axis}")
    return out


def _golive_spec(name: str, dtype: str, dims: list[int | None] | None) -> TensorSpec:
    if dtype in ("string", "resource", "variant"):
        raise InputSpecError(
            f"input {name} is a {dtype} tensor; golive converts models with numeric inputs only",
            hint="export a signature that takes the numeric tensors (e.g. token ids after the tokenizer)",
        )
    integer = np.dtype(dtype).kind in "iu"
    return TensorSpec(name=name, dtype=dtype, shape=_dim_names(name, dims, integer))


def _tf_signature(specs: list[TensorSpec]):
    tf = _tensorflow()
    return [
        tf.TensorSpec(
            [d if isinstance(d, int) else None for d in s.shape] if s.shape is not None else None,
            tf.as_dtype(s.dtype),
            name=s.name,
        )
        for s in specs
    ]


def _keras_signature(model, inputs: list[TensorSpec]):
    """Keras' own input structure for ``model.export`` (one list or dict argument for functional models),
    with golive's shapes and dtypes; None lets Keras work it out when its helper is not there."""
    try:
        import keras
        from keras.src.export.export_utils import get_input_signature
    except ImportError:
        return None
    structure = get_input_signature(model)
    if len(keras.tree.flatten(structure)) != len(inputs):
        return structure
    specs = _tf_signature(inputs)
    by_name: dict[str | None, Any] = {s.name: spec for s, spec in zip(inputs, specs, strict=True)}
    by_position = iter(specs)
    return keras.tree.map_structure(lambda spec: by_name.get(getattr(spec, "name", None)) or next(by_position), structure)


class TensorFlowFrontend:
    name = "tensorflow"

    # ---------------------------------------------------------------- load

    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        path = Path(source)
        if not path.exists():
            raise SourceNotFoundError(f"source {source} does not exist")
        if path.is_file() and path.name == "saved_model.pb":
            path = path.parent  # the file names its folder: the variables sit beside it
        if path.is_dir():
            return self._load_saved_model(path, options)
        suffix = path.suffix.lower()
        if suffix in KERAS_SUFFIXES:
            return self._load_keras(path, options)
        if suffix in GRAPH_SUFFIXES:
            return self._load_graph(path, options)
        raise FrameworkError(
            f"{path.name} is not a TensorFlow model golive reads",
            hint="give a SavedModel folder, a Keras .keras/.h5 file or a frozen graph .pb",
        )

    def _load_saved_model(self, path: Path, options: ConvertOptions) -> LoadedModel:
        if not (path / "saved_model.pb").is_file() and not (path / "saved_model.pbtxt").is_file():
            raise FrameworkError(f"{path} is not a TensorFlow SavedModel folder (it has no saved_model.pb)")
        if not (path / "variables").is_dir():
            raise ModelLoadError(
                f"the SavedModel {path} has no variables/ folder, so its weights are missing",
                hint="copy the whole folder written by tf.saved_model.save or model.export, variables/ included",
            )
        tf = _tensorflow()
        try:
            with captured_output(_NOISY_LOGGERS):
                saved = tf.saved_model.load(str(path))
        except Exception as exc:
            raise ModelLoadError(
                f"TensorFlow cannot load the SavedModel {path}: {first_line(exc)}",
                hint="check that the folder is complete and was written by a compatible TensorFlow",
            ) from exc
        signatures = {k: v for k, v in saved.signatures.items() if not k.startswith("_")}
        if not signatures:
            raise ModelLoadError(
                f"the SavedModel {path} has no serving signature",
                hint="save it with tf.saved_model.save(obj, path, signatures=obj.f) or keras' model.export(path)",
            )
        if options.signature:
            key = options.signature
            if key not in signatures:
                raise InputSpecError(
                    f"the SavedModel has no signature {key!r}", hint="its signatures are " + ", ".join(sorted(signatures))
                )
        elif DEFAULT_SIGNATURE in signatures:
            key = DEFAULT_SIGNATURE
        elif len(signatures) == 1:
            key = next(iter(signatures))
        else:
            raise InputSpecError(
                f"the SavedModel has several signatures and none is {DEFAULT_SIGNATURE}: " + ", ".join(sorted(signatures)),
                hint="choose one with --signature NAME",
            )
        function = signatures[key]
        _, kwargs = function.structured_input_signature
        # signatures take keyword arguments; keep the order of the function's own parameters
        order = [t.name.rsplit(":", 1)[0] for t in function.inputs]
        ordered = sorted(kwargs.items(), key=lambda kv: order.index(kv[1].name) if kv[1].name in order else len(order))
        inputs = [
            _golive_spec(name, spec.dtype.name, spec.shape.as_list() if spec.shape.rank is not None else None)
            for name, spec in ordered
        ]
        outputs = function.structured_outputs
        output_names = sorted(outputs) if isinstance(outputs, dict) else None
        return LoadedModel(
            framework=self.name,
            source=str(path),
            model=function,
            kind="saved-model",
            inputs=inputs,
            output_names=output_names,
            details={"signature": key, "signatures": sorted(signatures), "saved": saved},
        )

    def _load_keras(self, path: Path, options: ConvertOptions) -> LoadedModel:
        _tensorflow()
        with captured_output(_NOISY_LOGGERS):
            keras = require("keras", extra="tensorflow", purpose="Reading a Keras model")
        try:
            with captured_output(_NOISY_LOGGERS):
                model = keras.saving.load_model(str(path), compile=False, safe_mode=not options.trust_pickle)
        except Exception as exc:
            text = str(exc)
            if "safe_mode" in text or "Lambda" in text:
                raise UntrustedPickleError(
                    f"{path.name} holds Python code (a Lambda layer or a custom object) that Keras only loads outside safe mode",
                    hint="loading it runs that code; if you trust the file, pass --trust-pickle",
                ) from exc
            raise ModelLoadError(
                f"Keras cannot load {path.name}: {first_line(exc)}",
                hint="custom layers must be importable and registered (keras.saving.register_keras_serializable)",
            ) from exc
        if not getattr(model, "inputs", None):
            inputs = None  # a subclassed model that was never built: --input gives the shapes
        else:
            inputs = [_golive_spec(t.name, str(t.dtype), list(t.shape)) for t in model.inputs]
            inputs = _embedding_ranges(keras, model, inputs)
        names = list(getattr(model, "output_names", None) or [])
        count = len(model.outputs) if getattr(model, "outputs", None) else None
        if count is not None and len(names) != count:
            names = ["output"] if count == 1 else [f"output_{i}" for i in range(count)]
        details: dict[str, Any] = {"class": type(model).__name__}
        compute = {
            str(getattr(getattr(layer, "dtype_policy", None), "compute_dtype", "float32"))
            for layer in getattr(model, "layers", [])
        }
        low = sorted(compute & {"float16", "bfloat16"})
        return LoadedModel(
            framework=self.name,
            source=str(path),
            model=model,
            kind="keras",
            inputs=inputs,
            output_names=names or None,
            details=details,
            compute_dtype=(low[-1] if "bfloat16" not in low else "bfloat16") if low else None,
        )

    def _load_graph(self, path: Path, options: ConvertOptions) -> LoadedModel:
        tf = _tensorflow()
        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(path.read_bytes())
        except Exception as exc:
            raise ModelLoadError(
                f"{path.name} is not a TensorFlow GraphDef: {first_line(exc)}",
                hint="a frozen graph is written by tf.io.write_graph(frozen.graph.as_graph_def(), ...)",
            ) from exc
        nodes = {n.name: n for n in graph_def.node}
        if not nodes:
            raise ModelLoadError(f"{path.name} holds an empty graph")
        placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
        if options.inputs:
            inputs = None  # input_specs() takes the user's; only their names are checked here
            for text in options.inputs:
                check_tensor(parse_input_spec(text).name, nodes, "input", placeholders)
        else:
            inputs = []
            for node in placeholders:
                shape = node.attr["shape"].shape
                dims = None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]
                inputs.append(_golive_spec(node.name, tf.as_dtype(node.attr["dtype"].type).name, dims))
            if not inputs:
                raise InputSpecError(
                    f"{path.name} has no Placeholder to feed", hint="name the input tensors with --input NAME:DTYPE[DIM,...]"
                )
        if options.output_names:
            outputs = [strip_index(check_tensor(n, nodes, "output", sinks(graph_def))) for n in options.output_names]
        else:
            outputs = [n.name for n in sinks(graph_def)]
            if not outputs:
                raise InputSpecError(f"cannot tell the outputs of {path.name}", hint="name them with --output-names")
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
        return LoadedModel(
            framework=self.name,
            source=str(path),
            model=graph_def,
            kind="frozen-graph",
            inputs=inputs,
            output_names=outputs,
            details={"graph": graph, "guessed_outputs": not options.output_names},
        )

    # ---------------------------------------------------------------- export

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:
        if options.exporter not in ("auto", "tf2onnx", "keras"):
            raise ExportError(
                f"--exporter {options.exporter} is a PyTorch exporter",
                hint="TensorFlow models use --exporter auto, tf2onnx or keras",
            )
        custom = custom_op_domains(options.custom_translation)
        if loaded.kind == "keras":
            plan = ["keras", "tf2onnx"] if options.exporter == "auto" else [options.exporter]
            if custom and "keras" in plan:
                if options.exporter == "keras":
                    raise ExportError(
                        "--custom-translation needs the tf2onnx route; Keras' exporter takes no custom ops",
                        hint="use --exporter auto or tf2onnx",
                    )
                plan = ["tf2onnx"]
        elif options.exporter == "keras":
            raise ExportError(
                f"--exporter keras needs a Keras model; this source is a {loaded.kind}", hint="use --exporter auto or tf2onnx"
            )
        else:
            plan = ["tf2onnx"]
        if loaded.kind == "keras":
            self._call_once(loaded, sample)
        result = ExportResult(exporter="")
        for route in plan:
            captured = None
            try:
                with captured_output(_NOISY_LOGGERS) as captured:
                    model, notes = self._route(route, loaded, inputs, options, custom)
                check_converted(model, custom)
            except (ExportError, InputSpecError):
                raise
            except Exception as exc:  # converters raise many types; record this route's reason, try the next
                reason = first_line(exc)
                log.info("%s route failed: %s\n%s", route, reason, captured.tail(3) if captured else "")
                result.attempts.append({"exporter": route, "ok": False, "error": reason})
                continue
            self._finish(model, loaded, inputs, path)
            result.attempts.append({"exporter": route, "ok": True})
            result.exporter = route
            result.notes.extend(notes)
            if (
                not options.inputs
                and not options.dynamic
                and inputs
                and all(s.shape and isinstance(s.shape[0], int) for s in inputs)
            ):
                result.notes.append(
                    "the model fixes its batch size ("
                    + ", ".join(f"{s.name}: {(s.shape or ['?'])[0]}" for s in inputs)
                    + "), so the ONNX model has static shapes; save it with a None batch dimension "
                    "for a dynamic batch"
                )
            failed = [a for a in result.attempts if not a["ok"]]
            if failed:
                result.fallback_reason = f"{failed[0]['exporter']} route: {failed[0]['error']}"
            return result
        tried = "; ".join(f"{a['exporter']}: {a['error']}" for a in result.attempts)
        raise ExportError(
            f"no route could convert the {loaded.kind} to ONNX ({tried})",
            hint="--debug shows the converters' full output; an op tf2onnx lacks can be kept as a "
            "custom-domain node with --custom-translation TF_OP=DOMAIN",
        )

    def _call_once(self, loaded: LoadedModel, sample: dict[str, np.ndarray]) -> None:
        """Keras exports only a model that has been called; a clear error when the inputs do not fit."""
        try:
            with captured_output(_NOISY_LOGGERS):
                self.run(loaded, sample, loaded.output_names or [])
        except Exception as exc:
            shapes = ", ".join(f"{k} {tuple(v.shape)} {v.dtype}" for k, v in sample.items())
            raise InputSpecError(
                f"the Keras model fails on sample inputs ({shapes}): {first_line(exc)}",
                hint="check --input (names, dtypes, shapes) or pass real inputs with --data",
            ) from exc

    def _route(self, route: str, loaded: LoadedModel, inputs: list[TensorSpec], options: ConvertOptions, custom: dict[str, str]):
        notes: list[str] = []
        if loaded.kind == "frozen-graph":
            if loaded.details.get("guessed_outputs"):
                notes.append(
                    f"outputs taken from the graph's unconsumed nodes ({', '.join(loaded.output_names or [])}); "
                    "name others with --output-names"
                )
            return self._from_graph(loaded, inputs, options, custom), notes
        if loaded.kind == "saved-model":
            return self._from_function(loaded.model, inputs, options, custom), notes
        with tempfile.TemporaryDirectory(prefix="golive-keras-") as tmp:
            if route == "keras":
                target = Path(tmp) / "model.onnx"
                loaded.model.export(
                    str(target),
                    format="onnx",
                    verbose=False,
                    input_signature=_keras_signature(loaded.model, inputs),
                    opset_version=options.opset,
                )
                import onnx

                return onnx.load(str(target)), notes
            folder = Path(tmp) / "saved_model"
            loaded.model.export(
                str(folder), format="tf_saved_model", verbose=False, input_signature=_keras_signature(loaded.model, inputs)
            )
            tf = _tensorflow()
            saved = tf.saved_model.load(str(folder))
            function = saved.signatures[DEFAULT_SIGNATURE]
            notes.append("converted through a SavedModel written by model.export(format='tf_saved_model')")
            return self._from_function(function, inputs, options, custom), notes

    def _from_function(self, function, inputs: list[TensorSpec], options: ConvertOptions, custom: dict[str, str]):
        """A signature function (keyword arguments) traced with positional arguments for tf2onnx."""
        tf = _tensorflow()
        tf2onnx = _tf2onnx()
        names = [s.name for s in inputs]

        @tf.function
        def call(*args):
            return function(**dict(zip(names, args, strict=True)))

        model, _ = tf2onnx.convert.from_function(
            call,
            input_signature=_tf_signature(inputs),
            opset=options.opset,
            custom_ops=custom or None,
            extra_opset=extra_opsets(custom),
        )
        return model

    def _from_graph(self, loaded: LoadedModel, inputs: list[TensorSpec], options: ConvertOptions, custom: dict[str, str]):
        tf2onnx = _tf2onnx()
        overrides = {tensor_name(s.name): [d if isinstance(d, int) else None for d in s.shape] for s in inputs if s.shape}
        model, _ = tf2onnx.convert.from_graph_def(
            loaded.model,
            input_names=[tensor_name(s.name) for s in inputs],
            output_names=[tensor_name(n) for n in loaded.output_names or []],
            opset=options.opset,
            shape_override=overrides,
            custom_ops=custom or None,
            extra_opset=extra_opsets(custom),
        )
        return model

    def _finish(self, model, loaded: LoadedModel, inputs: list[TensorSpec], path: Path) -> None:
        """golive's names on the ONNX inputs, outputs and dynamic axes, then save."""

        renames: dict[str, str] = {}
        wanted_inputs = {s.name for s in inputs}
        for value in model.graph.input:  # tf2onnx names a graph's inputs by tensor: x:0
            if value.name not in wanted_inputs and strip_index(value.name) in wanted_inputs:
                renames[value.name] = strip_index(value.name)
        outputs = [o.name for o in model.graph.output]
        wanted = list(loaded.output_names or [])
        if wanted and sorted(outputs) != sorted(wanted):
            if len(outputs) != len(wanted):
                raise ExportError(f"the converter wrote {len(outputs)} outputs, the model has {len(wanted)}")
            renames.update(zip(in_output_order(outputs), wanted, strict=True))
        rename_values(model, renames)
        name_dims(model, inputs)
        save_onnx(model, path)

    # ---------------------------------------------------------------- run

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        tf = _tensorflow()
        if loaded.kind == "saved-model":
            out = loaded.model(**{k: tf.constant(v) for k, v in feeds.items()})
            return {n: np.asarray(out[n]) for n in output_names}
        if loaded.kind == "frozen-graph":
            session = loaded.details.get("session")
            if session is None:
                session = loaded.details["session"] = tf.compat.v1.Session(graph=loaded.details["graph"])
            fetched = session.run([tensor_name(n) for n in output_names], {tensor_name(k): v for k, v in feeds.items()})
            return dict(zip(output_names, (np.asarray(v) for v in fetched), strict=True))
        model = loaded.model
        if len(feeds) == 1:
            out = model(next(iter(feeds.values())), training=False)
        else:  # Keras 3 matches several inputs by their names
            out = model({k: tf.constant(v) for k, v in feeds.items()}, training=False)
        flat = list(out.values()) if isinstance(out, dict) else list(out) if isinstance(out, (list, tuple)) else [out]
        return {n: np.asarray(v) for n, v in zip(output_names, flat, strict=True)}


def _embedding_ranges(keras, model, inputs: list[TensorSpec]) -> list[TensorSpec]:
    """Integer inputs that feed an Embedding straight away get its vocabulary as their synthetic range."""
    ranges: dict[str, tuple[int, int]] = {}
    by_id = {id(t): t.name for t in model.inputs}
    for layer in getattr(model, "layers", []):
        if not isinstance(layer, keras.layers.Embedding):
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            for tensor in getattr(node, "input_tensors", []):
                if id(tensor) in by_id:
                    ranges[by_id[id(tensor)]] = (0, int(layer.input_dim))
    return [s.model_copy(update={"int_range": ranges[s.name]}) if s.name in ranges else s for s in inputs]


FRONTEND = TensorFlowFrontend()
