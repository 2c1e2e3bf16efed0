"""The search space: candidates (model transforms × session settings) and the rules that reject
impossible combinations before anything runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from golive.runtime import SessionConfig

__all__ = ["PROVIDER_ALIASES", "Candidate", "invalid_reason", "provider_options", "session_knobs"]

Status = Literal["pending", "passed", "rejected", "failed", "invalid", "skipped"]

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dnnl": "DnnlExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
NOT_FOR_TUNING = {"AzureExecutionProvider"}  # remote inference, not a local accelerator


class Candidate(BaseModel):
    id: str
    stage: str
    transforms: list[str] = Field(default_factory=list)
    session: SessionConfig = Field(default_factory=SessionConfig)
    precision: str = "fp32"
    status: Status = "pending"
    reason: str = ""
    figures: dict[str, Any] = Field(default_factory=dict)
    gate: dict[str, Any] = Field(default_factory=dict)
    transform_info: list[dict[str, Any]] = Field(default_factory=list)
    model: str = ""
    batch: int | None = Field(default=None, description="batch size of a throughput 'batch' stage candidate")

    def label(self) -> str:
        chain = "+".join(self.transforms) or "original"
        return f"{chain} | {self.session.describe()}" + (f" | batch {self.batch}" if self.batch else "")

    @property
    def min_cosine(self) -> float | None:
        """The lowest cosine similarity to the reference over the gated outputs (None when not gated)."""
        if not self.gate:
            return None
        return min((m.get("cosine", 1.0) for m in self.gate.get("metrics", {}).values()), default=None)

    def score(self, objective: str) -> float:
        """Lower is better: median latency, or negated throughput."""
        return self.score_of(self.figures, objective)

    @staticmethod
    def score_of(figures: dict[str, Any], objective: str) -> float:
        if objective == "throughput":
            return -figures.get("throughput", 0.0)
        return figures.get("p50_ms", float("inf"))


def provider_options(provider: str) -> list[dict[str, Any]]:
    """The main options worth trying per provider (the first is the provider's default)."""
    if provider == "CUDAExecutionProvider":
        return [{}, {"cudnn_conv_algo_search": "EXHAUSTIVE"}]
    if provider == "TensorrtExecutionProvider":
        return [{}, {"trt_fp16_enable": "True"}]
    return [{}]


def session_knobs(cores: int | None = None) -> list[tuple[str, list[Any]]]:
    """Session settings tried one knob at a time, each starting from the best so far."""
    from golive.runtime import available_cpus

    cores = cores or available_cpus()
    threads = sorted({0, 1, max(1, cores // 2), cores})
    return [
        ("intra_op_num_threads", threads),
        ("execution_mode", ["sequential", "parallel"]),
        ("intra_op_spinning", [True, False]),
        ("graph_optimization_level", ["all", "extended", "basic"]),
        ("enable_mem_pattern", [True, False]),
        ("enable_cpu_mem_arena", [True, False]),
    ]


def invalid_reason(session: SessionConfig, transforms: list[str], available: list[str]) -> str | None:
    """Why a combination cannot run or cannot matter, decided before running it (None: it is valid)."""
    from golive.optimize import get_transform

    provider = session.providers[0]
    if provider not in available:
        return f"{provider} is not available in this onnxruntime (available: {', '.join(available)})"
    for name in transforms:
        why = get_transform(name).unavailable_for(provider)
        if why:
            return why
    if session.custom_ops and "int8_static_qdq" in transforms:
        return (
            "static QDQ calibration runs in a session ONNX Runtime's calibrator makes itself, without the custom-op registration"
        )
    precisions = [get_transform(t).precision for t in transforms if get_transform(t).precision in ("int8", "fp16")]
    if len(precisions) > 1:
        return "at most one precision change (int8 or fp16) per chain"
    for i, name in enumerate(transforms):
        for later in transforms[i + 1 :]:
            if later in get_transform(name).after:
                return f"{name} must come after {later} (its result is not what {later} expects)"
    fusions = [t for t in transforms if t.endswith("_fusion")]
    if len(fusions) > 1:
        return "the two fusion passes rewrite the same patterns; a chain uses one"
    if session.execution_mode == "sequential" and session.inter_op_num_threads not in (0, 1):
        return "inter-op threads only matter in parallel execution mode"
    if session.intra_op_num_threads == 1 and not session.intra_op_spinning:
        return "spinning only matters with more than one intra-op thread"
    if provider != "CPUExecutionProvider" and not session.enable_cpu_mem_arena:
        return "the CPU memory arena setting does not apply to GPU providers' device memory"
    return None
