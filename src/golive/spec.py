"""JobSpec: the one description of a golive run that every front door compiles to.

Each knob is declared here once, with its type, default and help text; the CLI takes its
help from these declarations (``help_for``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic.config import JsonDict

from golive._imports import split_file_attr
from golive.errors import GoliveError, InputSpecError, validation_problems

__all__ = [
    "SPEC_VERSION",
    "ConvertOptions",
    "JobSpec",
    "ProfileOptions",
    "Tolerance",
    "TuneOptions",
    "VerifyOptions",
    "default_of",
    "help_for",
    "load_job",
    "map_job_paths",
    "map_paths",
    "path_fields",
    "paths_in",
]

SPEC_VERSION: Final = 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_PATH: JsonDict = {"path": True}  # a field naming files: recorded relative to the run folder, made absolute when read back


def _custom_ops_field():
    return Field(
        default_factory=list,
        json_schema_extra=_PATH,
        description=(
            "Implementations of custom-domain operators, registered on every ONNX Runtime session: a custom-op library "
            "(.so/.dll/.dylib), a Python module or .py file whose functions carry onnxruntime_extensions.onnx_op, or "
            "onnxruntime_extensions for the operators that package ships. Saved with the model; verify and tune reuse it."
        ),
    )


class ConvertOptions(_Strict):
    framework: Literal["pytorch", "tensorflow", "sklearn", "lightgbm", "xgboost", "onnx", "libsvm", "coreml", "spark"] | None = (
        Field(
            default=None,
            description="Source framework: pytorch, tensorflow (Keras included), sklearn, lightgbm, xgboost, libsvm, "
            "coreml, spark (a saved SparkML PipelineModel) or onnx; "
            "guessed from the source when left out.",
        )
    )
    inputs: list[str] = Field(
        default_factory=list,
        description="Input spec NAME:DTYPE[DIM,...], e.g. input_ids:int64[batch,128]; repeat for each input. "
        "A tuple or dict argument gives one input per tensor, named by its path: hc.0, hc.1 "
        "(forward(input, hc) with hc = (h0, c0)), past.key (a dict).",
    )
    dynamic: list[str] = Field(
        default_factory=list,
        description="Dynamic axes NAME:AXIS=DIMNAME,..., e.g. input_ids:0=batch,1=sequence. Default: axis 0 is a dynamic 'batch'.",
    )
    output_names: list[str] = Field(default_factory=list, description="Names for the ONNX outputs, in order.")
    task: str | None = Field(
        default=None,
        description="Hugging Face folders: the task to export for (feature-extraction, text-classification, "
        "image-classification, automatic-speech-recognition, text2text-generation, text-generation, "
        "zero-shot-image-classification, ...); guessed from config.json when left out.",
    )
    cache: bool = Field(
        default=True,
        description="Hugging Face generative models: export with the key/value cache (past in, present out; an "
        "encoder-decoder as encoder and decoder parts). --no-cache exports one model that returns logits only.",
    )
    opset: int | None = Field(default=None, ge=7, le=30, description="ONNX opset to export to (default: the exporter's own).")
    exporter: Literal["auto", "dynamo", "torchscript", "tf2onnx", "keras"] = Field(
        default="auto",
        description="Exporter. PyTorch: auto tries dynamo, then torchscript. TensorFlow: tf2onnx; Keras files: auto "
        "tries keras (model.export), then tf2onnx through a SavedModel.",
    )
    signature: str | None = Field(
        default=None, description="TensorFlow SavedModel signature to convert (default: serving_default, or the only one)."
    )
    custom_translation: list[str] = Field(
        default_factory=list,
        json_schema_extra=_PATH,
        description="Operators the exporter lacks. PyTorch: onnxscript translations as module:table or "
        "file.py:table (a dict from torch operator to onnxscript function; dynamo exporter only). "
        "TensorFlow: TF_OP=DOMAIN keeps that op as one node of a custom domain (tf2onnx's custom_ops); "
        "give its implementation with --custom-ops.",
    )
    constant_folding: bool = Field(default=True, description="Fold constants while exporting.")
    weights: str | None = Field(
        default=None,
        json_schema_extra=_PATH,
        description="State dict (.pt/.pth/.safetensors) for a PyTorch import-path source, loaded with weights_only=True.",
    )
    trust_pickle: bool = Field(
        default=False,
        description="Allow unpickling the source (whole pickled nn.Module, joblib/pickle files). Only for files you trust: unpickling runs code.",
    )
    zipmap: bool = Field(
        default=False, description="Classifiers: emit a ZipMap (list of dicts) instead of a plain probability tensor."
    )
    int_ranges: list[str] = Field(
        default_factory=list,
        description="[NAME=]LOW:HIGH range for synthetic integer inputs (HIGH exclusive), e.g. input_ids=0:30522.",
    )
    data: str | None = Field(
        default=None,
        json_schema_extra=_PATH,
        description="Sample data: .npz (name -> array), .npy (one input) or an ONNX test_data_set folder.",
    )
    custom_ops: list[str] = _custom_ops_field()
    imports: list[str] = Field(
        default_factory=list,
        json_schema_extra=_PATH,
        description="Python modules or .py files to import before loading the source, e.g. the "
        "module that registers a Keras model's custom layers. Imported code runs: only "
        "name code you trust.",
    )
    verify: bool = Field(default=True, description="Verify the exported model against the source model.")

    @field_validator("inputs", "dynamic", "int_ranges")
    @classmethod
    def _check_syntax(cls, v: list[str], info: ValidationInfo) -> list[str]:
        from golive import tensors

        assert info.field_name is not None  # a validator bound to named fields always gets the field's name
        parse = {"inputs": tensors.parse_input_spec, "dynamic": tensors.parse_dynamic, "int_ranges": tensors.parse_int_range}[
            info.field_name
        ]
        for item in v:
            parse(item)  # raises InputSpecError naming the problem
        return v


class Tolerance(_Strict):
    rtol: float | None = Field(default=None, ge=0)
    atol: float | None = Field(default=None, ge=0)


class VerifyOptions(_Strict):
    data: str | None = Field(
        default=None,
        json_schema_extra=_PATH,
        description="Test data: .npz, .npy or ONNX test_data_set folder(s); synthetic inputs when left out.",
    )
    rtol: float | None = Field(
        default=None, ge=0, description="Relative tolerance for every output (default by dtype: 1e-3 for float32)."
    )
    atol: float | None = Field(
        default=None, ge=0, description="Absolute tolerance for every output (default by dtype: 1e-4 for float32)."
    )
    per_output: dict[str, Tolerance] = Field(default_factory=dict, description="Tolerances for single outputs, by output name.")
    batches: int = Field(default=3, ge=1, le=100, description="Synthetic batches per size of the dynamic axes.")
    dim_sizes: dict[str, list[int]] = Field(
        default_factory=dict, description="Sizes to verify each dynamic axis at, DIMNAME=SIZE[,SIZE...], e.g. batch=1,7."
    )
    seed: int = Field(default=0, description="Seed for synthetic inputs.")
    new_tokens: int = Field(
        default=8,
        ge=0,
        le=512,
        description="Generative models: tokens of the greedy-generation check, the ONNX model(s) against the source's "
        "generate (0 skips it).",
    )
    custom_ops: list[str] = _custom_ops_field()


class TuneOptions(_Strict):
    budget: float | Literal["auto"] = Field(
        default="auto",
        description="Seconds the tune may take, building, measuring, confirming and profiling included; auto: what it "
        "takes to try the most promising candidate of each family and confirm the winner (planned from the baseline's "
        "run time and said before the search).",
    )

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return "auto"
        try:
            seconds = float(v)
        except (TypeError, ValueError):
            raise InputSpecError(f"cannot read the budget {v!r}", hint="give seconds (e.g. 60) or auto") from None
        if not seconds > 0:
            raise InputSpecError(f"the budget must be more than 0 seconds, not {v!r}", hint="give seconds (e.g. 60) or auto")
        return seconds

    providers: list[str] = Field(
        default_factory=list,
        description="Execution providers to try, e.g. cpu,openvino,cuda (default: every one with a device here; "
        "`golive devices` lists them).",
    )
    objective: Literal["latency", "throughput"] = Field(
        default="latency",
        description="latency: median time of one request; throughput: items per second under concurrent requests.",
    )
    data: str | None = Field(
        default=None,
        json_schema_extra=_PATH,
        description="Inputs to measure and calibrate with (.npz, .npy, test_data_set); synthetic when left out.",
    )
    metrics: dict[str, float] = Field(
        default_factory=lambda: {"cosine": 0.999, "label": 0.99, "argmax": 0.99},
        description="Gate for INT8/FP16 candidates, METRIC=THRESHOLD: cosine (min mean cosine similarity), label (min agreement of "
        "integer labels), argmax (min agreement of the top class of float outputs holding class scores, "
        "[batch, classes] logits or probabilities; argmax=0 turns it off), max_abs (max difference).",
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(v) - {"cosine", "label", "argmax", "max_abs"})
        if unknown:
            raise InputSpecError(f"unknown gate metric(s) {', '.join(unknown)}", hint="use cosine, label, argmax or max_abs")
        return v

    transforms: list[str] | None = Field(
        default=None,
        description="Model transforms to try (default: all that apply), by the names golive.optimize.TRANSFORMS "
        "declares, or your own as module:function or file.py:function (tried alone).",
    )
    dim_sizes: dict[str, int] = Field(
        default_factory=dict, description="Sizes of the dynamic axes to measure at, DIMNAME=SIZE, e.g. batch=1 sequence=128."
    )
    concurrency: int = Field(default=4, ge=1, le=64, description="Concurrent requests per session for the throughput objective.")
    fixed_shape: bool = Field(
        default=False,
        description="The deployment always sends the shape measured (--dim sizes): "
        "also try a model fixed to it (it then accepts only that shape).",
    )
    max_batch: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="Throughput objective: the largest batch size tried; "
        "the best configuration is measured at 1, 2, 4, ... up to it.",
    )
    seed: int = Field(default=0, description="Seed for synthetic inputs.")
    time_source: bool = Field(
        default=True,
        description="Time the source model (PyTorch eager, scikit-learn, ...) beside the candidates, for the speedup over it.",
    )
    session_search: bool = Field(
        default=True,
        description="Also try session settings on the best models (threads, execution mode, graph optimization level, "
        "memory options, a provider's own options); off: every candidate runs with the provider's default session, as "
        "where the deployment sets its session itself.",
    )
    cpu_fallback: bool = Field(
        default=True,
        description="Nodes a provider other than the CPU's does not take may run on the CPU provider; "
        "off: such a candidate is rejected, naming the operators.",
    )
    custom_ops: list[str] = _custom_ops_field()


class ProfileOptions(_Strict):
    runs: int = Field(default=20, ge=1, le=10_000, description="Timed runs (after 5 warm-up runs).")
    dim_sizes: dict[str, int] = Field(
        default_factory=dict, description="Size of each dynamic axis, DIMNAME=SIZE (default: the tune's inputs, or 1)."
    )


class JobSpec(_Strict):
    """A whole run: where the model comes from, where results go, and how each step runs."""

    version: Literal[1] = SPEC_VERSION
    source: str = Field(description="Model file, folder, or import path (package.module:name or file.py:name).")
    output_dir: str = Field(description="Folder for model.onnx, golive.json and reports.")
    convert: ConvertOptions = Field(default_factory=ConvertOptions)
    verify: VerifyOptions = Field(default_factory=VerifyOptions)
    tune: TuneOptions | None = Field(default=None, description="Tune after converting (left out: convert and verify only).")
    tune_dir: str | None = Field(default=None, description="Folder for the tuning results (default: OUTPUT_DIR/tuned).")
    profile: ProfileOptions | None = Field(
        default=None,
        description="Profile per operator after the other steps: the tuned best and baseline (TUNE_DIR/profile), "
        "or the converted model (OUTPUT_DIR/profile).",
    )

    def tune_folder(self) -> Path:
        """Where the tuning results go: ``tune_dir``, or OUTPUT_DIR/tuned."""
        return Path(self.tune_dir).absolute() if self.tune_dir else Path(self.output_dir).absolute() / "tuned"

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_defaults=False)


def load_job(path: str | Path) -> JobSpec:
    """Read a JobSpec from a YAML or JSON file; relative paths in it are taken from the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise GoliveError(f"job file {path} does not exist", hint="golive run JOB.yaml (see examples/quickstart.yaml)")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except Exception as exc:
        raise GoliveError(f"cannot parse job file {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise GoliveError(f"job file {path} must hold a mapping with at least source and output_dir")
    try:
        job = JobSpec.model_validate(raw)
    except InputSpecError:
        raise
    except ValidationError as exc:
        raise GoliveError(f"job file {path} is not a valid JobSpec: {validation_problems(exc)}") from None
    return _resolve_paths(job, path.parent)


OptionsT = TypeVar("OptionsT", bound=BaseModel)


def path_fields(options: type[BaseModel] | BaseModel) -> list[str]:
    """The fields of an options model that name files (declared once, on the field: ``json_schema_extra={"path": True}``)."""
    model = options if isinstance(options, type) else type(options)
    return [
        name
        for name, f in model.model_fields.items()
        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("path")
    ]


def map_paths(options: OptionsT, fn: Callable[[str], str | None]) -> OptionsT:
    """A copy of ``options`` with ``fn`` applied to every path it names (a value ``fn`` maps to None stays as it was)."""
    update: dict[str, object] = {}
    for name in path_fields(options):
        value = getattr(options, name)
        if isinstance(value, list):
            update[name] = [fn(p) or p for p in value]
        elif value is not None:
            update[name] = fn(value) or value
    return options.model_copy(update=update)


def paths_in(options: BaseModel) -> list[str]:
    """Every path an options object names, in field order."""
    found: list[str] = []
    map_paths(options, lambda p: found.append(p))
    return found


def map_job_paths(job: JobSpec, fn: Callable[[str], str]) -> JobSpec:
    """A copy of ``job`` with ``fn`` applied to every file path it names except output_dir and tune_dir:
    the source (``file.py:name`` included) and the path fields of its options (weights, data, translation tables,
    imports, custom ops)."""
    job = job.model_copy(deep=True)
    job.source = fn(job.source) or job.source
    job.convert = map_paths(job.convert, fn)
    job.verify = map_paths(job.verify, fn)
    if job.tune:
        job.tune = map_paths(job.tune, fn)
    return job


def _resolve_paths(job: JobSpec, base: Path) -> JobSpec:
    def fix(p: str) -> str:
        if Path(p).is_absolute():
            return p
        head, attr = split_file_attr(p)  # file.py:name keeps its :name
        return os.path.normpath(base / head) + attr if (base / head).exists() else p

    job = map_job_paths(job, fix)
    if job.tune_dir and not Path(job.tune_dir).is_absolute():
        job.tune_dir = os.path.normpath(base / job.tune_dir)
    out = Path(job.output_dir)
    if not out.is_absolute():
        job.output_dir = os.path.normpath(base / out)
    return job


def help_for(model: type[BaseModel], field: str) -> str:
    """The help text declared for ``field`` of ``model``."""
    return model.model_fields[field].description or ""


def default_of(model: type[BaseModel], field: str):
    """The default declared for ``field`` of ``model`` (a front door's option defaults to it, never to a copy)."""
    return model.model_fields[field].get_default(call_default_factory=True)
