"""The only place that builds onnxruntime SessionOptions and InferenceSessions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from golive.errors import ModelLoadError

__all__ = ["SessionConfig", "make_session", "run_session"]


class SessionConfig(BaseModel):
    """How to build an InferenceSession: provider, its options, and session options."""

    providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    provider_options: list[dict[str, Any]] = Field(default_factory=list)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    intra_op_num_threads: int = 0
    inter_op_num_threads: int = 0
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    intra_op_spinning: bool = True
    inter_op_spinning: bool = True
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    log_severity_level: int = 3  # errors only: ORT's own warnings go through our report instead

    def describe(self) -> str:
        """The settings that differ from ONNX Runtime's defaults, on one line."""
        default = SessionConfig()
        parts = [p.replace("ExecutionProvider", "") for p in self.providers]
        for name in type(self).model_fields:
            if name in ("providers", "log_severity_level"):
                continue
            value = getattr(self, name)
            if value != getattr(default, name):
                short = _SHORT.get(name, name)
                parts.append(short if value is False else f"{short}={value}")
        return " ".join(parts)


_SHORT = {"intra_op_num_threads": "intra", "inter_op_num_threads": "inter", "execution_mode": "mode",
          "graph_optimization_level": "opt", "intra_op_spinning": "no-spin", "inter_op_spinning": "no-inter-spin",
          "enable_cpu_mem_arena": "no-arena", "enable_mem_pattern": "no-mem-pattern", "provider_options": "options"}


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
    so.intra_op_num_threads = config.intra_op_num_threads
    so.inter_op_num_threads = config.inter_op_num_threads
    so.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if config.execution_mode == "parallel"
                         else ort.ExecutionMode.ORT_SEQUENTIAL)
    so.log_severity_level = config.log_severity_level
    so.enable_cpu_mem_arena = config.enable_cpu_mem_arena
    so.enable_mem_pattern = config.enable_mem_pattern
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.intra_op_spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "1" if config.inter_op_spinning else "0")
    if optimized_model_path:
        so.optimized_model_filepath = str(optimized_model_path)
    available = ort.get_available_providers()
    missing = [p for p in config.providers if p not in available]
    if missing:
        raise ModelLoadError(f"execution provider(s) {', '.join(missing)} are not available in this onnxruntime",
                             hint="available here: " + ", ".join(available))
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                    providers=config.providers, provider_options=config.provider_options or None)
    except Exception as exc:
        raise ModelLoadError(f"ONNX Runtime cannot load the model: {str(exc).strip().splitlines()[0][:400]}") from exc


def run_session(session, feeds: dict) -> dict:
    """Run all outputs; sequences of maps (ZipMap) come back as they are."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))
