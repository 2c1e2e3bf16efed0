"""The only place that builds onnxruntime SessionOptions and InferenceSessions."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from golive.errors import GoliveError, ModelLoadError

__all__ = [
    "GraphLevel",
    "SessionConfig",
    "available_cpus",
    "cpu_features",
    "custom_domains",
    "default_intra_threads",
    "make_session",
    "register_custom_ops",
    "resolve_custom_ops",
    "run_session",
    "save_optimized_graph",
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

    def describe(self) -> str:
        """The settings that differ from ONNX Runtime's defaults, on one line."""
        default = SessionConfig()
        parts = [p.replace("ExecutionProvider", "") for p in self.providers]
        for name in type(self).model_fields:
            if name in ("providers", "log_severity_level", "custom_ops"):
                continue
            value = getattr(self, name)
            if value != getattr(default, name):
                short = _SHORT.get(name, name)
                if name == "disabled_optimizers":
                    value = ",".join(value)
                parts.append(short if value is False else f"{short}={value}")
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
    "provider_options": "options",
    "disabled_optimizers": "without",
}


def save_optimized_graph(model: str | Path, config: SessionConfig, target: str | Path) -> None:
    """Let ONNX Runtime optimize ``model`` with these settings and save the graph it would run at ``target``."""
    make_session(model, config, optimized_model_path=target)


def make_session(model: str | Path | bytes, config: SessionConfig | None = None, *, optimized_model_path=None):
    """An InferenceSession for ``model``; ``optimized_model_path`` also saves ORT's optimized graph there."""
    import onnxruntime as ort

    config = config or SessionConfig()
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
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    register_custom_ops(so, config.custom_ops)
    available = ort.get_available_providers()
    missing = [p for p in config.providers if p not in available]
    if missing:
        raise ModelLoadError(
            f"execution provider(s) {', '.join(missing)} are not available in this onnxruntime",
            hint="available here: " + ", ".join(available),
        )
    try:
        extra = {"disabled_optimizers": config.disabled_optimizers} if config.disabled_optimizers else {}
        return ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            sess_options=so,
            providers=config.providers,
            provider_options=config.provider_options or None,
            **extra,
        )
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
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
    from golive.errors import require

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
            from golive._imports import load_module

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


def default_intra_threads() -> int:
    """What "0 intra-op threads" (ONNX Runtime's default) becomes here: ONNX Runtime's own choice (0) when the
    process may use every core, else the CPUs it may use (its default would count cores the quota forbids)."""
    cpus = available_cpus()
    return cpus if cpus < (os.cpu_count() or cpus) else 0


def available_cpus() -> int:
    """The CPUs this process may really use: its CPU affinity, capped by the cgroup CPU quota (a Kubernetes
    pod's CPU limit). ONNX Runtime's default thread count sees the machine's cores, not the quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_quota(root: str = "/sys/fs/cgroup", membership: str = "/proc/self/cgroup") -> float | None:
    """CPUs allowed by the cgroup quota (v2 cpu.max, or v1 cfs quota/period) of this process; None: no quota."""
    try:
        lines = Path(membership).read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # cgroup v2: check the process's group and its parents
            group = Path(root) / rel
            for folder in [group, *group.parents]:
                if not str(folder).startswith(root):
                    break
                try:
                    quota_text, period_text = (folder / "cpu.max").read_text().split()[:2]
                except (OSError, ValueError):
                    continue
                if quota_text != "max" and float(period_text) > 0:
                    limits.append(float(quota_text) / float(period_text))
        elif "cpu" in controllers.split(","):
            for base in (Path(root) / "cpu,cpuacct", Path(root) / "cpu"):
                for folder in (base / rel, base):
                    try:
                        quota = float((folder / "cpu.cfs_quota_us").read_text())
                        period = float((folder / "cpu.cfs_period_us").read_text())
                    except (OSError, ValueError):
                        continue
                    if quota > 0 and period > 0:
                        limits.append(quota / period)
                    break
    return min(limits) if limits else None


_ISA = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimddp", "i8mm")


def cpu_features() -> dict[str, object]:
    """The CPU model and the instruction sets INT8 and BF16 speed depend on (VNNI, AMX, ARM dot products)."""
    model, flags = "", set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"cpu": model or None, "isa": [f for f in _ISA if f in flags]}
