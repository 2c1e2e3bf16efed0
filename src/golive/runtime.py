"""The only place that builds onnxruntime SessionOptions and InferenceSessions, and runs them through IO binding.
Providers and devices are golive.providers', the CPU's facts golive.cpu's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from golive._imports import load_module
from golive.cpu import default_intra_threads
from golive.errors import FallbackError, GoliveError, ModelLoadError, ProviderError, first_line, require
from golive.providers import (
    CPU,
    PLUGINS,
    Placement,
    built_in,
    device_type_of,
    placement,
    plugin_devices,
    provider_problem,
    short_name,
)

__all__ = [
    "GraphLevel",
    "SessionConfig",
    "bound_runner",
    "custom_domains",
    "io_device",
    "make_session",
    "register_custom_ops",
    "resolve_custom_ops",
    "run_session",
    "save_optimized_graph",
    "without_graph_capture",
]


EXTENSIONS = "onnxruntime_extensions"  # --custom-ops name for onnxruntime-extensions' own operator library
_LIBRARY_SUFFIXES = (".so", ".dll", ".dylib")

GraphLevel = Literal["disable", "basic", "extended", "all"]  # ONNX Runtime's graph optimization levels


class SessionConfig(BaseModel):
    """How to build an InferenceSession: provider, its options, and session options."""

    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: list[dict[str, Any]] = Field(default_factory=list)
    graph_optimization_level: GraphLevel = "all"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default, capped at the CPUs the process may use (available_cpus)
    inter_op_num_threads: int = 0
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    intra_op_spinning: bool = True
    inter_op_spinning: bool = True
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    log_severity_level: int = 3  # errors only: ORT's own warnings go through our report instead
    custom_ops: list[str] = Field(default_factory=list)  # libraries and Python op modules, see register_custom_ops
    # ONNX Runtime graph optimizers not to run at load (a transform that undoes a fusion keeps it undone)
    disabled_optimizers: list[str] = Field(default_factory=list)
    # A plugin provider (OpenVINO): which of its devices (CPU, GPU, NPU; None: the first it lists), and the
    # device's own properties (OpenVINO: INFERENCE_PRECISION_HINT, PERFORMANCE_HINT, NUM_STREAMS, INFERENCE_NUM_THREADS),
    # passed as its load_config
    device_type: str | None = None
    device_properties: dict[str, str] = Field(default_factory=dict)
    # Nodes the provider does not take run on the CPU provider; False: loading fails instead, naming them
    cpu_fallback: bool = True
    # Timed with IO binding: inputs copied to the provider's device once, outputs kept there at fixed addresses
    # (bound_runner), so a GPU provider's figure is its compute, not host copies. Implied by a CUDA graph.
    io_binding: bool = False

    def graph_capture(self) -> bool:
        """Whether the provider captures the run as a CUDA graph (replayed on the same device buffers)."""
        options = self.provider_options[0] if self.provider_options else {}
        return any(str(options.get(key, "")).lower() in ("1", "true") for key in _GRAPH_CAPTURE)

    def bound(self) -> bool:
        """Whether runs go through IO binding (asked for, or needed by a CUDA graph)."""
        return self.io_binding or self.graph_capture()

    def describe(self) -> str:
        """The settings that differ from ONNX Runtime's defaults, on one line."""
        default = SessionConfig()
        parts = [short_name(p) for p in self.providers]
        for name in type(self).model_fields:
            if name in ("providers", "log_severity_level", "custom_ops"):
                continue
            value = getattr(self, name)
            if value != getattr(default, name):
                short = _SHORT.get(name, name)
                if name == "disabled_optimizers":
                    value = ",".join(value)
                if name == "device_properties":
                    parts.extend(f"{_PROPERTY_SHORT.get(k, k)}={v}" for k, v in value.items())
                    continue
                if name == "provider_options":  # the first provider's, as ONNX Runtime names them
                    parts.extend(f"{k}={v}" for k, v in (value[0] if value else {}).items())
                    continue
                parts.append(short if isinstance(value, bool) else f"{short}={value}")
        return " ".join(parts)


_SHORT = {
    "intra_op_num_threads": "intra",
    "inter_op_num_threads": "inter",
    "execution_mode": "mode",
    "graph_optimization_level": "opt",
    "intra_op_spinning": "no-spin",
    "inter_op_spinning": "no-inter-spin",
    "enable_cpu_mem_arena": "no-arena",
    "enable_mem_pattern": "no-mem-pattern",
    "disabled_optimizers": "without",
    "device_type": "device",
    "cpu_fallback": "no-fallback",
    "io_binding": "io-binding",
}
_GRAPH_CAPTURE = ("enable_cuda_graph", "trt_cuda_graph_enable")  # CUDA's and TensorRT's provider options
_PROPERTY_SHORT = {
    "INFERENCE_PRECISION_HINT": "precision",
    "PERFORMANCE_HINT": "hint",
    "NUM_STREAMS": "streams",
    "INFERENCE_NUM_THREADS": "threads",
}


def save_optimized_graph(model: str | Path, config: SessionConfig, target: str | Path) -> None:
    """Let ONNX Runtime optimize ``model`` with these settings and save the graph it would run at ``target``."""
    make_session(model, config, optimized_model_path=target)


def make_session(
    model: str | Path | bytes,
    config: SessionConfig | None = None,
    *,
    optimized_model_path: str | Path | None = None,
    record_placement: bool = False,
    profile_prefix: str | None = None,
    io_bound: bool = False,
):
    """An InferenceSession for ``model``; ``optimized_model_path`` also saves ORT's optimized graph there;
    ``record_placement`` keeps which provider took which node (read it with :func:`placement`); ``profile_prefix``
    turns ONNX Runtime's profiler on, its trace written at that path prefix (``session.end_profiling()``).
    A CUDA graph in ``config`` is captured only for a caller that runs the session through IO binding
    (``io_bound``, :func:`bound_runner`): ``session.run`` would replay the graph on stale device buffers."""
    config = config or SessionConfig()
    if not io_bound:
        config = without_graph_capture(config)
    provider = config.providers[0]
    if not config.cpu_fallback and provider != CPU:
        try:
            return _make_session(model, config, optimized_model_path, record_placement, profile_prefix)
        except FallbackError:
            raise
        except ModelLoadError as exc:
            if "fallback" not in str(exc).lower() and "CPU" not in str(exc):
                raise
            # ONNX Runtime refused: load again with fallback allowed, to name the nodes it would have moved
            allowed = config.model_copy(update={"cpu_fallback": True})
            where = placement(_make_session(model, allowed, None, True, None), provider)
            if where is None or not where.fallback:
                raise
            _raise_fallback(where)
    return _make_session(model, config, optimized_model_path, record_placement, profile_prefix)


def _raise_fallback(where: Placement) -> None:
    raise FallbackError(
        f"{where.describe()}; CPU fallback is off",
        hint="allow the fallback (drop --no-fallback), or change the model so the provider takes these operators",
    )


def _make_session(
    model: str | Path | bytes, config: SessionConfig, optimized_model_path, record_placement: bool, profile_prefix: str | None
):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[config.graph_optimization_level]
    so.intra_op_num_threads = config.intra_op_num_threads or default_intra_threads()
    so.inter_op_num_threads = config.inter_op_num_threads
    so.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if config.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    so.log_severity_level = config.log_severity_level
    so.enable_cpu_mem_arena = config.enable_cpu_mem_arena
    so.enable_mem_pattern = config.enable_mem_pattern
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.intra_op_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if config.inter_op_spinning else "0")
    provider = config.providers[0]
    if record_placement or not config.cpu_fallback:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if not config.cpu_fallback and provider != CPU:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    register_custom_ops(so, config.custom_ops)
    problem = provider_problem(provider) or next(filter(None, (provider_problem(p) for p in config.providers[1:])), None)
    if problem:
        raise ProviderError(problem[0], hint=problem[1])
    kwargs: dict[str, Any] = {"disabled_optimizers": config.disabled_optimizers} if config.disabled_optimizers else {}
    options = {str(k): str(v) for k, v in (config.provider_options[0] if config.provider_options else {}).items()}
    if provider in PLUGINS and not built_in(provider):
        # a plugin provider: ONNX Runtime's device API (the CPU provider is its fallback)
        devices = plugin_devices(provider, config.device_type)
        if config.device_properties:
            options["load_config"] = json.dumps({device_type_of(devices[0].device): config.device_properties})
        so.add_provider_for_devices(devices, options)
    elif provider in PLUGINS:  # the same provider built into this onnxruntime: its device and properties as options
        device = (config.device_type or "CPU").upper()
        options["device_type"] = device
        if config.device_properties:
            options["load_config"] = json.dumps({device: config.device_properties})
        rest = config.provider_options[1:] + [{}] * (len(config.providers) - max(1, len(config.provider_options)))
        kwargs.update(providers=config.providers, provider_options=[options, *rest])
    else:
        kwargs.update(providers=config.providers, provider_options=_provider_options(config, model))
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so, **kwargs)
    except Exception as exc:
        text = first_line(exc, 400)
        missing_op = re.search(r"([\w.]+):(\w+)\(-?\d+\) is not a registered function/op", text)
        if missing_op:
            domain, op = missing_op.groups()
            raise ModelLoadError(
                f"the model uses the custom operator {domain}::{op}, which this ONNX Runtime does not implement",
                hint="give its implementation with --custom-ops: a custom-op library (path/to/libops.so), a Python module "
                "whose functions are decorated with onnxruntime_extensions.onnx_op (ops.py or pkg.ops), or "
                f"{EXTENSIONS} for the operators onnxruntime-extensions ships",
            ) from exc
        raise ModelLoadError(f"ONNX Runtime cannot load the model: {text}") from exc
    if not config.cpu_fallback and provider != CPU:
        where = placement(session, provider)
        if where is not None and where.fallback:  # ONNX Runtime let it pass (a node it keeps on CPU by design)
            _raise_fallback(where)
    return session


TRT_CACHE = "trt_cache"  # TensorRT's engine and timing caches, in this folder beside the model


def _provider_options(config: SessionConfig, model: str | Path | bytes) -> list[dict[str, Any]] | None:
    """The providers' options as ONNX Runtime takes them. TensorRT caches its engines and its timing cache (a
    relative trt_*_cache_path is the model's folder's: best/trt_cache for a tuned best), so only the first session
    of a model builds its engine, which takes seconds to minutes. A tune points its candidates at one cache in its
    work folder instead (tuning.worker)."""
    options = [dict(o) for o in config.provider_options]
    if "TensorrtExecutionProvider" in config.providers and not isinstance(model, bytes):
        i = config.providers.index("TensorrtExecutionProvider")
        options += [{}] * (i + 1 - len(options))
        trt = options[i]
        for key in ("trt_engine_cache", "trt_timing_cache"):
            trt.setdefault(f"{key}_enable", "True")
            folder = Path(str(trt.get(f"{key}_path", TRT_CACHE)))
            trt[f"{key}_path"] = str(folder if folder.is_absolute() else Path(model).resolve().parent / folder)
    return options or None


def without_graph_capture(config: SessionConfig) -> SessionConfig:
    """``config`` without CUDA graph capture: for callers whose inputs change shape or arrive from the host (a
    server); a captured graph replays fixed device buffers of one shape."""
    if not config.graph_capture():
        return config
    first = {k: v for k, v in config.provider_options[0].items() if k not in _GRAPH_CAPTURE}
    return config.model_copy(update={"provider_options": [first, *config.provider_options[1:]]})


def io_device(config: SessionConfig) -> str:
    """The device IO binding keeps a session's inputs and outputs on."""
    return "cuda" if config.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"


def bound_runner(session, feeds: dict, device: str = "cpu", like: list[Any] | None = None) -> tuple[Any, Any]:
    """IO binding, as a GPU provider is best driven: the inputs copied to ``device`` once, the outputs kept there in
    buffers bound for every run, so a CUDA graph replays on the addresses it was captured with. The output buffers
    take the shapes and types of ``like`` (arrays shaped as this run's outputs: needed with a CUDA graph, which
    ONNX Runtime captures during the first run), else of a first run's outputs, its buffers left to ONNX Runtime.
    Returns ``run()`` and ``outputs()`` (host copies of the last run's outputs). Tensor inputs and outputs only."""
    import numpy as np
    import onnxruntime as ort

    binding = session.io_binding()
    inputs = {name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device, 0) for name, x in feeds.items()}
    for name, value in inputs.items():
        binding.bind_ortvalue_input(name, value)
    names = [o.name for o in session.get_outputs()]
    if like is None:
        for name in names:
            binding.bind_output(name, device)
        session.run_with_iobinding(binding)
        like = [v.numpy() for v in binding.get_outputs()]
        binding.clear_binding_outputs()
    fixed = [ort.OrtValue.ortvalue_from_shape_and_type(list(v.shape), v.dtype, device, 0) for v in like]
    for name, value in zip(names, fixed, strict=True):
        binding.bind_ortvalue_output(name, value)

    def run(_buffers: Any = (inputs, fixed)) -> None:  # the device buffers live as long as run does
        session.run_with_iobinding(binding)

    def outputs() -> list[Any]:
        return [v.numpy() for v in fixed]

    return run, outputs


def run_session(session, feeds: dict) -> dict:
    """Run all outputs; sequences of maps (ZipMap) come back as they are."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def is_library(entry: str) -> bool:
    name = Path(entry).name
    return name.endswith(_LIBRARY_SUFFIXES) or ".so." in name


def resolve_custom_ops(entries: list[str]) -> list[str]:
    """Check each --custom-ops entry now (a clear error before any work) and make file paths absolute,
    so that the settings saved with the model work from any folder."""
    resolved = []
    for entry in entries:
        if entry == EXTENSIONS or not (is_library(entry) or entry.endswith(".py")):
            resolved.append(entry)  # a module name: imported where the session is made
            continue
        path = Path(entry)
        if not path.is_file():
            kind = "custom-op library" if is_library(entry) else "Python custom-op module"
            raise GoliveError(
                f"{kind} {entry} does not exist",
                hint="--custom-ops takes a library (.so/.dll/.dylib), a .py file or module name with "
                f"onnxruntime_extensions.onnx_op functions, or {EXTENSIONS}",
            )
        resolved.append(str(path.absolute()))
    return resolved


def register_custom_ops(so, entries: list[str]) -> None:
    """Register custom operators on ``so`` (an ``onnxruntime.SessionOptions``).

    Each entry is a shared library of custom ops (``.so``/``.dll``/``.dylib``), ``onnxruntime_extensions``
    (the operators that package ships), or a Python module or ``.py`` file whose functions are decorated
    with ``onnxruntime_extensions.onnx_op``: importing it registers them, and onnxruntime-extensions'
    library runs them. Modules are imported once per process.
    """
    if not entries:
        return

    needs_extensions = False
    for entry in entries:
        if is_library(entry):
            try:
                so.register_custom_ops_library(str(entry))
            except Exception as exc:
                raise ModelLoadError(
                    f"ONNX Runtime cannot load the custom-op library {entry}: {str(exc).strip()[:300]}",
                    hint="it must be built against this onnxruntime's C API (see onnxruntime.__version__)",
                ) from exc
        elif entry == EXTENSIONS:
            needs_extensions = True
        else:
            require(
                "onnxruntime_extensions",
                package="onnxruntime-extensions",
                extra="extensions",
                purpose="Running Python custom operators",
            )
            load_module(entry, reuse=True)
            needs_extensions = True
    if needs_extensions:
        ortx = require(
            "onnxruntime_extensions",
            package="onnxruntime-extensions",
            extra="extensions",
            purpose="Running onnxruntime-extensions operators",
        )
        so.register_custom_ops_library(ortx.get_library_path())


def custom_domains(model) -> dict[str, list[str]]:
    """Operators of an ``onnx.ModelProto`` outside the domains ONNX Runtime implements itself, by domain."""
    builtin = {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "com.microsoft",
        "com.microsoft.nchwc",
        "ai.onnx.training",
        "ai.onnx.preview.training",
        "com.microsoft.experimental",
        "org.pytorch.aten",
        "com.ms.internal.nhwc",
    }
    local = {f.domain for f in model.functions}
    found: dict[str, list[str]] = {}

    def visit(nodes) -> None:
        for node in nodes:
            if node.domain not in builtin and node.domain not in local:
                ops = found.setdefault(node.domain, [])
                if node.op_type not in ops:
                    ops.append(node.op_type)
            for attr in node.attribute:
                if attr.g.node:
                    visit(attr.g.node)
                for g in attr.graphs:
                    visit(g.node)

    visit(model.graph.node)
    for f in model.functions:
        visit(f.node)
    return found
