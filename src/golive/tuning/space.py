"""The search space: candidates (model transforms × session settings) and the rules that reject
impossible combinations before anything runs."""

from __future__ import annotations

import statistics
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from golive.cpu import available_cpus, cpu_features
from golive.optimize import get_transform
from golive.providers import CPU, PLUGINS, Placement, ep_devices
from golive.runtime import SessionConfig
from golive.tuning.estimate import Estimate
from golive.tuning.gate import GateResult

__all__ = [
    "PROVIDER_ALIASES",
    "Candidate",
    "cpu_plan",
    "default_session",
    "invalid_reason",
    "knob_value",
    "session_knobs",
    "session_precision",
    "with_knob",
]

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
NOT_FOR_TUNING = {"AzureExecutionProvider"}
NOISY = 0.15  # a candidate whose repeated p50s spread more than this was measured in a noisy spell  # remote inference, not a local accelerator


class Candidate(BaseModel):
    id: str
    stage: str
    transforms: list[str] = Field(default_factory=list)
    session: SessionConfig = Field(default_factory=SessionConfig)
    precision: str = "fp32"
    status: Status = "pending"
    reason: str = ""
    figures: dict[str, Any] = Field(default_factory=dict)
    gate: GateResult | None = Field(default=None, description="the accuracy gate's verdict and figures, once measured")
    transform_info: list[dict[str, Any]] = Field(default_factory=list)
    model: str = ""
    batch: int | None = Field(default=None, description="batch size of a throughput 'batch' stage candidate")
    placement: Placement | None = Field(default=None, description="which provider ran which nodes, as measured")
    p50_runs: list[float] = Field(default_factory=list, description="p50 of every measurement of it, in order (ms)")
    expected: Estimate | None = Field(default=None, description="what the search expected of it before it ran")
    cost_s: float = Field(default=0.0, description="seconds spent building and measuring it")

    def label(self) -> str:
        chain = "+".join(self.transforms) or "original"
        return f"{chain} | {self.session.describe()}" + (f" | batch {self.batch}" if self.batch else "")

    @property
    def min_cosine(self) -> float | None:
        """The lowest cosine similarity to the reference over the gated outputs (None when not gated)."""
        if self.gate is None:
            return None
        return min((m.get("cosine", 1.0) for m in self.gate.metrics.values()), default=None)

    @field_validator("gate", mode="before")
    @classmethod
    def _not_gated(cls, value: Any) -> Any:
        return None if value == {} else value  # report.json of an earlier golive wrote {} for "not gated yet"

    @property
    def spread(self) -> float | None:
        """How far its repeated measurements lie apart: (max - min) / median of its p50s (None: measured once)."""
        if len(self.p50_runs) < 2:
            return None
        mid = statistics.median(self.p50_runs)
        return (max(self.p50_runs) - min(self.p50_runs)) / mid if mid else None

    @property
    def noisy(self) -> bool:
        """Its measurements spread more than 15%: taken in a noisy spell of the machine."""
        return (self.spread or 0.0) > NOISY

    def shown_p50(self) -> float | None:
        """The p50 a report shows: the median of its confirm rounds (best and baseline), else of its measurements."""
        if "confirm_rounds" in self.figures or not self.p50_runs:
            return self.figures.get("p50_ms")
        return statistics.median(self.p50_runs)

    def score(self, objective: str) -> float:
        """Lower is better: median latency, or negated throughput."""
        return self.score_of(self.figures, objective)

    @staticmethod
    def score_of(figures: dict[str, Any], objective: str) -> float:
        if objective == "throughput":
            return -figures.get("throughput", 0.0)
        return figures.get("p50_ms", float("inf"))


# Each provider's knobs, declared once: (knob, values), the first value being the provider's default. A knob is a
# SessionConfig field, or "provider_options.KEY" / "device_properties.KEY" for one entry of those dicts.
Knobs = list[tuple[str, list[Any]]]


def session_knobs(
    provider: str = CPU, cores: int | None = None, isa: list[str] | None = None, objective: str = "latency"
) -> Knobs:
    """Session settings tried one knob at a time, each starting from the best so far."""

    cores = cores or available_cpus()
    isa = cpu_features()["isa"] if isa is None else isa  # type: ignore[assignment]
    threads = sorted({0, 1, max(1, cores // 2), cores})
    if provider == "OpenVINOExecutionProvider":
        # OpenVINO's own properties (its load_config): ONNX Runtime's thread and graph settings do not reach inside
        # the subgraphs it compiles. bf16 only where the CPU computes it natively (AVX512_BF16, AMX): elsewhere
        # OpenVINO would emulate it, slower than f32. Its default precision on an AMX CPU is bf16: f32 is tried too.
        precisions = _openvino_precisions(isa or [])
        knobs: Knobs = [
            ("device_properties.INFERENCE_PRECISION_HINT", precisions),
            ("device_properties.PERFORMANCE_HINT", ["LATENCY", "THROUGHPUT"]),
            ("device_properties.INFERENCE_NUM_THREADS", [str(t) for t in threads if t]),
        ]
        if objective == "throughput":
            knobs.append(("device_properties.NUM_STREAMS", ["1", *(str(n) for n in (2, cores) if 1 < n <= cores)]))
        return knobs
    # GPU providers: timed with IO binding first (inputs and outputs on the device, as a GPU pipeline feeds them),
    # then a CUDA graph on top (needs fixed shapes and bound buffers: runtime.bound_runner). TensorRT caches its
    # engines and timing beside the model (runtime._provider_options), so a knob's second try does not rebuild.
    if provider == "CUDAExecutionProvider":
        return [
            ("io_binding", [False, True]),
            ("provider_options.enable_cuda_graph", ["0", "1"]),
            ("provider_options.cudnn_conv_algo_search", ["HEURISTIC", "EXHAUSTIVE"]),
            ("provider_options.prefer_nhwc", ["0", "1"]),
            ("graph_optimization_level", ["all", "extended"]),
        ]
    if provider == "TensorrtExecutionProvider":
        return [
            ("io_binding", [False, True]),
            ("provider_options.trt_fp16_enable", ["False", "True"]),
            ("provider_options.trt_cuda_graph_enable", ["False", "True"]),
            ("provider_options.trt_builder_optimization_level", ["3", "5"]),
        ]
    return [
        ("intra_op_num_threads", threads),
        ("execution_mode", ["sequential", "parallel"]),
        ("intra_op_spinning", [True, False]),
        ("graph_optimization_level", ["all", "extended", "basic"]),
        ("enable_mem_pattern", [True, False]),
        ("enable_cpu_mem_arena", [True, False]),
    ]


def _openvino_precisions(isa: list[str]) -> list[str]:
    """OpenVINO's inference precisions to try, the likeliest winner on this CPU first: bf16 on AMX (OpenVINO's own
    default there; 5.3-5.9 ms against 20.9 ms at f32 for the 3-layer BERT on a 2-core AMX Xeon), f32 first where
    only AVX512_BF16 computes it, f32 alone where bf16 would be emulated."""
    if "amx_bf16" in isa:
        return ["bf16", "f32"]
    return ["f32", "bf16"] if "avx512_bf16" in isa else ["f32"]


def cpu_plan(isa: list[str], cpu: str | None, providers: list[str]) -> str:
    """One sentence on how this CPU's INT8 and BF16 instruction sets steer the search (known before it starts)."""
    import platform

    dot = next((name for flag, name in _INT8_DOT if flag in isa), None)
    if dot:
        int8 = f"INT8 dot products with {dot}: dynamic INT8 keeps 8-bit weights"
    elif platform.machine().lower() in ("x86_64", "amd64"):
        int8 = (
            "no INT8 dot-product instructions (no VNNI or AMX): dynamic and per-token INT8 use 7-bit weights, which "
            "ONNX Runtime's u8s8 kernel here multiplies without saturating"
        )
    else:
        int8 = "INT8 as ONNX Runtime's kernels for this CPU compute it"
    parts = [int8]
    if "OpenVINOExecutionProvider" in providers:
        order = _openvino_precisions(isa)
        how = "AMX" if "amx_bf16" in isa else "AVX512_BF16" if "avx512_bf16" in isa else None
        parts.append(
            f"BF16 with {how}: OpenVINO tries {' then '.join(order)}"
            if how
            else "no native BF16: OpenVINO stays at f32 (bf16 would be emulated, slower)"
        )
    return f"this CPU ({cpu or 'unknown'}): " + "; ".join(parts)


_INT8_DOT = (("amx_int8", "AMX"), ("avx512_vnni", "AVX512-VNNI"), ("avx_vnni", "AVX-VNNI"), ("asimddp", "Arm dot product"))


def session_precision(session: SessionConfig) -> str | None:
    """The precision a provider computes in when its settings lower it (None: as the model says)."""
    hint = session.device_properties.get("INFERENCE_PRECISION_HINT", "").lower()
    if hint in ("bf16", "f16"):
        return "bf16" if hint == "bf16" else "fp16"
    options = session.provider_options[0] if session.provider_options else {}
    if str(options.get("trt_fp16_enable", "")).lower() == "true":
        return "fp16"
    return None


def default_session(provider: str, **fields: Any) -> SessionConfig:
    """A provider's starting point: its first value of every knob (OpenVINO's precision pinned to the likeliest
    winner on this CPU, rather than left to OpenVINO; the search tries the other)."""
    config = SessionConfig(providers=[provider], **fields)
    if provider in PLUGINS:  # the device it runs on, named in session.json (a plugin may list CPU, GPU and NPU)
        config.device_type = next((d.device_type for d in ep_devices() if d.provider == provider), None)
    for knob, values in session_knobs(provider, cores=1):
        if "." in knob and knob.startswith("device_properties.INFERENCE_PRECISION"):
            config = with_knob(config, knob, values[0])
    return config


def knob_value(session: SessionConfig, knob: str) -> Any:
    """The knob's value in ``session`` (a provider or device entry not set reads as its default, the first value)."""
    field, _, key = knob.partition(".")
    if not key:
        return getattr(session, field)
    entries = session.provider_options[0] if field == "provider_options" and session.provider_options else {}
    if field == "device_properties":
        entries = session.device_properties
    return entries.get(key)


def with_knob(session: SessionConfig, knob: str, value: Any) -> SessionConfig:
    field, _, key = knob.partition(".")
    if not key:
        update: dict[str, Any] = {field: value}
        if field == "execution_mode" and value == "parallel":
            update["inter_op_num_threads"] = 2
        return session.model_copy(update=update)
    if field == "device_properties":
        return session.model_copy(update={"device_properties": {**session.device_properties, key: value}})
    options = dict(session.provider_options[0]) if session.provider_options else {}
    options[key] = value
    return session.model_copy(update={"provider_options": [options]})


def invalid_reason(session: SessionConfig, transforms: list[str], available: list[str]) -> str | None:
    """Why a combination cannot run or cannot matter, decided before running it (None: it is valid)."""

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
    if session.io_binding and provider not in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        return "IO binding saves host copies only where the provider computes in device memory (CUDA, TensorRT)"
    if provider != "CPUExecutionProvider" and not session.enable_cpu_mem_arena:
        return "the CPU memory arena setting does not apply to GPU providers' device memory"
    return None
