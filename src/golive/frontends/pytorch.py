"""PyTorch sources: import paths, TorchScript archives, torch.export archives, Hugging Face
folders and (only with --trust-pickle) whole pickled modules.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from golive._imports import load_object
from golive.errors import FrameworkError, ModelLoadError, SourceNotFoundError, UntrustedPickleError, first_line, require
from golive.frontends import _torch_export
from golive.frontends._hf_models import load_folder
from golive.frontends._structure import nest
from golive.frontends._torch_export import flatten_outputs
from golive.frontends.base import ExportResult, LoadedModel, is_import_path
from golive.spec import ConvertOptions
from golive.tensors import Dim, TensorSpec

__all__ = ["FRONTEND", "PyTorchFrontend"]


def _torch():
    return require("torch", extra="torch", purpose="Converting a PyTorch model")


class PyTorchFrontend:
    name = "pytorch"

    # ------------------------------------------------------------ load
    def load(self, source: str, options: ConvertOptions) -> LoadedModel:
        torch = _torch()
        if is_import_path(source) and not Path(source).exists():
            module = _load_import_path(source)
            kind = "import-path"
        else:
            path = Path(source)
            if not path.exists():
                raise SourceNotFoundError(f"source {source} does not exist")
            if path.is_dir():
                return _load_transformers(path, options)
            if options.weights:
                raise FrameworkError(
                    "--weights goes with an import-path source (package.module:Class or file.py:Class)",
                    hint=f"{path.name} already holds its weights; drop --weights",
                )
            module, kind = _load_file(path, options.trust_pickle)
        if options.weights:
            _load_weights(module, options.weights)
        if isinstance(module, torch.nn.Module):
            module.eval()
        loaded = LoadedModel(framework=self.name, source=source, model=module, kind=kind)
        if kind == "torch-export":
            loaded.inputs = _exported_program_inputs(module)
            named = sorted({d for spec in loaded.inputs for d in spec.shape or [] if isinstance(d, str)})
            if named:
                loaded.notes.append(
                    "the .pt2 keeps only symbols for its dynamic axes, not the names of its Dims: they are named "
                    + ", ".join(named)
                    + " (a leading dynamic axis is batch; others INPUT_AXIS), the names --dim takes"
                )
        return loaded

    def load_for_torchscript(self, source: str, options: ConvertOptions) -> LoadedModel:
        """The source loaded for a TorchScript export: a Hugging Face model with its eager attention, whose traced
        graph ONNX Runtime's transformers optimizer fuses into Attention (it does not recognize the scaled-dot-
        product kernel's graph); anything else as ``load`` loads it."""
        if Path(source).is_dir():
            return _load_transformers(Path(source), options, attention="eager")
        return self.load(source, options)

    # ------------------------------------------------------------ export
    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult:

        return _torch_export.export(loaded, inputs, sample, path, options)

    # ------------------------------------------------------------ run
    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]:
        torch = _torch()
        model = loaded.model
        if loaded.kind == "torch-export":
            model = model.module()
        tensors = {n: torch.from_numpy(np.ascontiguousarray(a)) for n, a in feeds.items()}
        structure = loaded.input_structure
        if structure:  # nested or keyword-only inputs: the call is rebuilt from the recorded structure
            args, kwargs = nest(structure, tensors)
        else:  # feeds come in the ONNX model's input order, which is the order of the exported arguments
            args, kwargs = tuple(tensors.values()), {}
        with torch.no_grad():
            out = model(*args, **kwargs)

        flat = flatten_outputs(out)
        if len(flat) != len(output_names):
            raise ModelLoadError(f"the source model returned {len(flat)} outputs, the ONNX model has {len(output_names)}")
        return {n: t.detach().cpu().numpy() for n, t in zip(output_names, flat, strict=True)}


# ---------------------------------------------------------------- sources


def _load_import_path(source: str):

    torch = _torch()
    attr = source.rpartition(":")[2]
    obj = load_object(source)
    if isinstance(obj, torch.nn.Module):
        return obj
    if callable(obj):
        try:
            built = obj()
        except TypeError as exc:
            raise ModelLoadError(
                f"{attr}() needs arguments: {exc}",
                hint="point at a class or factory function that builds the model with no arguments",
            ) from exc
        if not isinstance(built, torch.nn.Module):
            raise FrameworkError(f"{attr}() returned a {type(built).__name__}, not a torch.nn.Module")
        return built
    raise FrameworkError(f"{source} is a {type(obj).__name__}, not a torch.nn.Module, class or factory")


def _load_weights(module, weights: str) -> None:
    torch = _torch()
    path = Path(weights)
    if not path.is_file():
        raise SourceNotFoundError(f"weights file {weights} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load {path.name} as a state dict with weights_only=True: {first_line(exc)}",
                hint="save the weights with torch.save(model.state_dict(), path)",
            ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path.name} holds a {type(state).__name__}, not a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(
            f"the weights in {path.name} do not fit the model: {first_line(exc)}",
            hint="check that the import path names the class the weights were saved from",
        ) from exc


def _load_file(path: Path, trust_pickle: bool):
    torch = _torch()
    if path.suffix == ".pt2":
        try:
            return torch.export.load(str(path)), "torch-export"
        except Exception as exc:
            raise ModelLoadError(f"cannot load {path.name} as a torch.export archive: {first_line(exc)}") from exc
    if not zipfile.is_zipfile(path) and not _is_legacy_pickle(path):
        raise ModelLoadError(f"{path.name} is not a PyTorch file (neither a zip archive nor a pickle); it may be truncated")
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu"), "torchscript"
        except Exception as exc:
            raise ModelLoadError(f"cannot load TorchScript archive {path.name}: {first_line(exc)}") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not trust_pickle:
            raise UntrustedPickleError(
                f"{path.name} is a pickled Python object (a whole nn.Module?); loading it would run arbitrary code",
                hint="save the model with torch.export.save (.pt2) or torch.jit.save, or give its class as "
                "package.module:Class with --weights state_dict.pt; if you trust the file, pass --trust-pickle",
            ) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(
                f"cannot unpickle {path.name}: {first_line(exc2)}",
                hint="the classes it was pickled with must be importable here",
            ) from exc2
        if not isinstance(obj, torch.nn.Module):
            raise FrameworkError(f"{path.name} holds a {type(obj).__name__}, not a torch.nn.Module") from None
        return obj, "pickle"
    if isinstance(obj, torch.nn.Module):
        return obj, "pickle"
    if isinstance(obj, dict):
        raise FrameworkError(
            f"{path.name} holds a state dict (weights only), not a model",
            hint=f"give the model class as SOURCE (package.module:Class or file.py:Class) and --weights {path}",
        )
    raise FrameworkError(f"{path.name} holds a {type(obj).__name__}, not a model")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in z.namelist())


def _is_legacy_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"\x80"


def _exported_program_inputs(ep) -> list[TensorSpec]:
    """Input specs of an ExportedProgram, from the fake tensors on its user-input placeholders. A saved program keeps
    only symbols for its dynamic axes (s77), not the names of the Dims it was exported with: they are named as
    golive's other PyTorch routes name them (a leading dynamic axis is batch, another INPUT_AXIS), one name per
    symbol, so an axis shared by several inputs keeps one name."""
    user_inputs = set(ep.graph_signature.user_inputs)
    specs = []
    names: dict[str, str] = {}  # symbol -> the name given to it
    for node in ep.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            continue
        shape: list[Dim] = []
        for i, d in enumerate(val.shape):
            if str(d).isdigit():
                shape.append(int(d))
                continue
            symbol = str(d)
            if symbol not in names:
                names[symbol] = "batch" if i == 0 and "batch" not in names.values() else f"{node.name}_{i}"
            shape.append(names[symbol])
        specs.append(TensorSpec(name=node.name, dtype=str(val.dtype).replace("torch.", ""), shape=shape))
    return specs


def _load_transformers(path: Path, options: ConvertOptions, attention: str | None = None) -> LoadedModel:

    return load_folder(path, options, attention)


FRONTEND = PyTorchFrontend()
