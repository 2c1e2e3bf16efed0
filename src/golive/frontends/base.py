"""What every framework frontend provides, the registry of frontends, and framework guessing.

A frontend loads a source model (``load``), exports it to ONNX (``export``) and runs it on
numpy inputs for verification (``run``). Guessing the framework looks only at file names and
folder contents, so it never imports a heavy framework.
"""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from golive._imports import is_import_path
from golive.errors import FrameworkError, SourceNotFoundError
from golive.spec import ConvertOptions
from golive.tensors import TensorSpec

if TYPE_CHECKING:
    from golive.frontends.hf_tasks import GenerationSpec, TaskGuess

__all__ = [
    "FRAMEWORKS",
    "ExportResult",
    "Frontend",
    "LoadedModel",
    "get_frontend",
    "guess_framework",
    "is_import_path",
    "load_source",
]

# framework name -> module holding its ``FRONTEND``
FRAMEWORKS: dict[str, str] = {
    "pytorch": "golive.frontends.pytorch",
    "tensorflow": "golive.frontends.tensorflow",
    "sklearn": "golive.frontends.sklearn",
    "lightgbm": "golive.frontends.gbdt",
    "xgboost": "golive.frontends.gbdt",
    "onnx": "golive.frontends.onnxfile",
    "libsvm": "golive.frontends.libsvm",
    "coreml": "golive.frontends.coreml",
    "spark": "golive.frontends.spark",
}


@dataclass
class LoadedModel:
    """A source model in memory, with what the frontend learned about it."""

    framework: str
    source: str
    model: Any
    kind: str  # how it was loaded: import-path, torchscript, torch-export, transformers, pickle, skops, booster ...
    inputs: list[TensorSpec] | None = None  # inputs the model declares itself, if it does
    output_names: list[str] | None = None
    dim_sizes: dict[str, int] = field(default_factory=dict)  # preferred sizes for its dynamic axes
    classifier: bool = False
    details: dict[str, Any] = field(default_factory=dict)  # what the frontend keeps for itself (a session, an evaluator)
    # how the ONNX inputs and outputs make up forward()'s arguments and return value (nested or keyword-only)
    input_structure: dict[str, Any] | None = None
    output_structure: Any = None
    notes: list[str] = field(default_factory=list)  # what the conversion should say in golive.json (axis names...)
    default_dynamic: bool = False  # the leading axis became a dynamic batch by golive's default, not the user's ask
    declared_shapes: dict[str, list] = field(default_factory=dict)  # the shapes asked for, before that default
    compute_dtype: str | None = None  # a mixed-precision source computes in this dtype: verified at its tolerances
    task: TaskGuess | None = None  # a Hugging Face folder: its task, how it was told, its inputs
    parts: dict[str, LoadedModel] = field(default_factory=dict)  # a model that exports as several (encoder, decoder)
    tune_sizes: dict[str, int] = field(default_factory=dict)  # the sizes of its usual call (a decode step) for tune
    generation: GenerationSpec | None = None  # how the exported model(s) make a generate loop
    generate: Callable[..., np.ndarray] | None = None  # the source's own greedy generate (feeds, new tokens, left out)

    def part(self, name: str | None) -> LoadedModel:
        """The part ``name`` of a model that exports as several (the model itself for None)."""
        if name is None:
            return self
        if name not in self.parts:
            raise FrameworkError(
                f"the source model has no part {name!r}" + (f" (its parts: {', '.join(self.parts)})" if self.parts else ""),
                hint="convert it again: the source may have changed since golive.json was written",
            )
        return self.parts[name]


@dataclass
class ExportResult:
    """Which exporter produced the model, and what was tried before it."""

    exporter: str
    attempts: list[dict[str, Any]] = field(default_factory=list)  # {exporter, ok, error?, skipped?}
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)


class Frontend(Protocol):
    name: str

    def load(self, source: str, options: ConvertOptions) -> LoadedModel: ...

    def export(
        self, loaded: LoadedModel, inputs: list[TensorSpec], sample: dict[str, np.ndarray], path: Path, options: ConvertOptions
    ) -> ExportResult: ...

    def run(self, loaded: LoadedModel, feeds: dict[str, np.ndarray], output_names: list[str]) -> dict[str, np.ndarray]: ...


def get_frontend(framework: str) -> Frontend:
    try:
        module = FRAMEWORKS[framework]
    except KeyError:
        raise FrameworkError(f"unknown framework {framework!r}", hint="use one of " + ", ".join(FRAMEWORKS)) from None
    return importlib.import_module(module).FRONTEND


def load_source(
    framework: str,
    source: str,
    options: ConvertOptions,
    *,
    part: str | None = None,
    input_structure: dict[str, Any] | None = None,
    attention: str | None = None,
) -> tuple[Frontend, LoadedModel]:
    """The source of a conversion loaded again as its run folder records it (the part it exported, the structure of its
    inputs): what verify, the source's timing and the re-export run. ``attention``: eager attention for a Hugging Face
    folder (the TorchScript re-export)."""
    frontend = get_frontend(framework)
    eager = getattr(frontend, "load_for_torchscript", None) if attention == "eager" else None
    loaded = eager(source, options) if eager else frontend.load(source, options)
    loaded = loaded.part(part)
    if input_structure:
        loaded.input_structure = input_structure
    return frontend, loaded


def guess_framework(source: str) -> str:
    """Guess the framework of ``source`` from its name and contents, without importing any framework."""
    if is_import_path(source):
        return "pytorch"
    path = Path(source)
    if not path.exists():
        raise SourceNotFoundError(
            f"source {source} does not exist",
            hint="give a model file, a model folder, or an import path such as mypkg.models:Net or model.py:Net",
        )
    if path.is_dir():
        if path.suffix.lower() == ".mlpackage":
            return "coreml"
        if (path / "metadata").is_dir() and (path / "stages").is_dir():  # a saved SparkML PipelineModel
            return "spark"
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return "tensorflow"
        if (path / "config.json").exists():
            return "pytorch"
        if (path / "model.onnx").exists():
            raise FrameworkError(
                f"{source} is a folder; pass the model file inside it", hint=f"golive convert {path / 'model.onnx'} ..."
            )
        raise FrameworkError(
            f"cannot tell which framework the folder {source} holds",
            hint="a Hugging Face model folder needs config.json; otherwise pass the model file itself",
        )
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return "onnx"
    if suffix in (".mlmodel", ".mlpackage"):
        return "coreml"
    if suffix in (".keras", ".h5", ".hdf5", ".pb"):
        return "tensorflow"
    if suffix in (".pt", ".pth", ".pt2", ".ts", ".ptl", ".bin"):
        return "pytorch"
    if suffix in (".skops", ".joblib", ".pkl", ".pickle"):
        return "sklearn"
    if suffix in (".ubj", ".xgb", ".json"):
        return "xgboost"
    head = _head(path)
    if head.startswith(b"svm_type "):  # svm_save_model's text format
        return "libsvm"
    if head.startswith(b"tree\n") or b"\ntree\n" in head[:64]:
        return "lightgbm"
    if suffix in (".txt", ".model", ".lgb", ".lgbm"):
        return "lightgbm"
    if zipfile.is_zipfile(path):
        return "pytorch"
    raise FrameworkError(
        f"cannot tell the framework of {path.name} from its name or contents",
        hint="pass --framework (" + ", ".join(FRAMEWORKS) + ")",
    )


def _head(path: Path, n: int = 256) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)
