"""Before a candidate runs: what it may gain and what it will cost.

The gain comes from the model's op mix (the share of its work in MatMul/Gemm with constant weights, in MatMuls of two
activations, in Conv, and in everything else, from ONNX shape inference at the measured input sizes), the CPU's
instruction sets, and priors that golive's own benchmarks measured, declared once in ``PRIORS``. The cost comes from
the model's size, the baseline's measured run time and what building and measuring earlier candidates really took
(the estimate learns from each one). The search orders by it, leaves out what the budget left cannot pay for, and the
report says what it expected beside what it measured.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = [
    "PRIORS",
    "Estimate",
    "Estimator",
    "OpMix",
    "Prior",
    "cpu_class",
    "measure_seconds",
]


@dataclass(frozen=True)
class Prior:
    """A transform's effect on each kind of work: the time it leaves, as a share of the time before it (0.5: twice as
    fast on that work; 1.0: untouched)."""

    weights: float = 1.0  # MatMul/Gemm with a constant weight (the projections and feed-forward of a transformer)
    activations: float = 1.0  # MatMul of two activations (attention scores and their weighted sum)
    conv: float = 1.0
    rest: float = 1.0  # elementwise, normalization, softmax, data movement, and the per-node overhead


# The priors, by transform and CPU class ("*": any other class). Where the figures come from (2-core slices, batch 1):
# - INT8 on the weight MatMuls with INT8 dot products (VNNI): the 3-layer BERT at seq 128 went 25-27 ms fp32 -> 10.6 ms
#   with dynamic INT8 on the fused graph (benchmarks/tune_bert.py), all-MiniLM-L6-v2 17-20.7 ms -> 8.6-10 ms with
#   per-token INT8 (test and benchmark figures of issue 24), ViT 6L 29.8 -> 19.3 ms (benchmarks/hf_families.py), and
#   the 3-layer BERT's whole tune 31.5 -> 10.3 ms (issue 30's first --budget auto run, 91% of its work in them):
#   0.30-0.45 of their fp32 time. AMX runs them faster still,
#   AVX-512 without VNNI and AVX2 (7-bit weights, u8s8 without saturation) gain less (the 2-core AVX2 EPYC: ~1.5x).
# - Dynamic INT8 on Conv becomes ConvInteger, slower than fp32 Conv on every CPU measured (MNIST CNN, ResNet-18 shape):
#   static QDQ is the INT8 route for Conv (QLinearConv).
# - The fp32 fusions: 0-15% on transformers (issue 30's DistilBERT/ViT/RoBERTa runs, hf_families' 1.00-1.27x),
#   nothing on convolution networks (ONNX Runtime's default session fuses Conv+BN+ReLU already). ONNX Runtime's
#   optimizer fuses no Attention in a dynamo export; onnxscript's fusions often do (MultiHeadAttention); the
#   TorchScript re-export is fused whole (Attention, EmbedLayerNormalization): all-MiniLM-L6-v2 fp32 19.8 ms ->
#   18.7 (ort_fusion) / 17.1 (onnxscript) / 17.0 (re-export), and with dynamic INT8 the 3-layer BERT ran 9.1 ms on
#   the re-export against 11.3 ms on ort_fusion and 17.3 ms on onnxscript's fusion (benchmarks/tune_regret.py, side
#   by side): onnxscript's fp32 lead does not carry into INT8, so it ranks just below ort_fusion.
# - The variations (split SkipLayerNorm, GELU approximation, fixed shape, larger blocks): 0-13% (search.py's notes).
PRIORS: dict[str, dict[str, Prior]] = {
    "ort_fusion": {"*": Prior(activations=0.9, rest=0.85)},
    "onnxscript_fusion": {"*": Prior(activations=0.9, rest=0.87)},
    "torchscript_export": {"*": Prior(activations=0.5, rest=0.6)},
    "int8_dynamic": {
        "amx": Prior(weights=0.28, conv=1.6, rest=1.05),
        "vnni": Prior(weights=0.35, conv=1.6, rest=1.05),
        "avx512": Prior(weights=0.6, conv=1.6, rest=1.05),
        "avx2": Prior(weights=0.65, conv=1.6, rest=1.05),
        "*": Prior(weights=0.7, conv=1.6, rest=1.05),
    },
    "int8_dynamic_per_channel": {
        "amx": Prior(weights=0.29, conv=1.6, rest=1.05),
        "vnni": Prior(weights=0.36, conv=1.6, rest=1.05),
        "avx512": Prior(weights=0.62, conv=1.6, rest=1.05),
        "avx2": Prior(weights=0.66, conv=1.6, rest=1.05),
        "*": Prior(weights=0.72, conv=1.6, rest=1.05),
    },
    "int8_per_token": {
        "amx": Prior(weights=0.38, activations=0.8, rest=1.1),
        "vnni": Prior(weights=0.4, activations=0.8, rest=1.1),
        "*": Prior(weights=0.7, activations=0.9, rest=1.1),
    },
    "int8_static_qdq": {
        "amx": Prior(weights=0.45, conv=0.45, rest=1.15),
        "vnni": Prior(weights=0.55, conv=0.55, rest=1.15),
        "*": Prior(weights=0.75, conv=0.7, rest=1.15),
    },
    "int8_qdq_matmul": {
        "amx": Prior(weights=0.45, rest=1.08),
        "vnni": Prior(weights=0.55, rest=1.08),
        "*": Prior(weights=0.75, rest=1.08),
    },
    "int8_blockwise": {"vnni": Prior(weights=0.6, rest=1.02), "amx": Prior(weights=0.5, rest=1.02), "*": Prior(weights=0.8)},
    "int8_blockwise_128": {"*": Prior(weights=0.97)},
    "int8_dynamic_keep_sensitive": {
        "amx": Prior(weights=0.4, conv=1.3, rest=1.05),
        "vnni": Prior(weights=0.5, conv=1.3, rest=1.05),
        "*": Prior(weights=0.75, conv=1.3, rest=1.05),
    },
    "fp16": {"gpu": Prior(weights=0.5, activations=0.5, conv=0.5, rest=0.7), "*": Prior(weights=1.5, conv=1.5, rest=1.3)},
    "split_skip_layernorm": {"*": Prior(rest=0.95)},
    "gelu_approximation": {"*": Prior(rest=0.96)},
    "fixed_shape": {"*": Prior(rest=0.97)},
}
SESSION_KNOB = 0.98  # one session setting tried from the best so far: a few percent, often nothing


# What building a candidate costs before it is measured (seconds, seconds per MB of model), by transform: a worker
# start and the model read and written, plus the transform's own work. Calibration runs are added for the ones that
# run the model (8 batches). These start the estimate; the search scales them by what builds really took.
BUILD: dict[str, tuple[float, float]] = {
    "torchscript_export": (4.5, 0.05),
    "ort_fusion": (1.5, 0.02),
    "onnxscript_fusion": (2.5, 0.04),
    "int8_static_qdq": (2.0, 0.05),
    "int8_per_token": (2.0, 0.05),
    # dynamic INT8 of GPT-2's 500 MB: 5.3 s (7.1 per channel) in one process, where 0.03 s/MB said 16 s
    "int8_dynamic": (1.0, 0.011),
    "int8_dynamic_per_channel": (1.0, 0.014),
    "int8_dynamic_keep_sensitive": (1.0, 0.014),
    "*": (1.0, 0.03),
}
CALIBRATED = ("int8_static_qdq", "int8_per_token")
# A TorchScript re-export costs at least this share of what its convert run took to load the source and export it
REEXPORT_OF_CONVERT = 0.8
# Beyond its timed runs, a measurement costs a worker start, the session's creation and the outputs saved for the gate
MEASURE_OVERHEAD_S = 0.4


def cpu_class(isa: list[str], provider: str = "CPUExecutionProvider") -> str:
    """The class the priors are declared for: gpu, amx, vnni (AVX512-VNNI or AVX-VNNI), avx512, avx2, or other."""
    if provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider"):
        return "gpu"
    if "amx_int8" in isa:
        return "amx"
    if "avx512_vnni" in isa or "avx_vnni" in isa:
        return "vnni"
    if "avx512f" in isa:
        return "avx512"
    return "avx2" if "avx2" in isa else "other"


def measure_seconds(run_ms: float) -> float:
    """How long one measurement times a model that runs in ``run_ms``: about 200 runs, at least 10 and at least 0.3 s
    (a 0.2 ms model gets 1,500 runs for a stable median), at most 4 s (a 250 ms model is judged in 2.5 s)."""
    run_s = max(run_ms, 0.0) / 1000
    return float(min(max(10 * run_s, min(1.0, 200 * run_s), 0.3), 4.0))


# Per-node work beside the arithmetic, in FLOP-equivalents: an elementwise output element moves memory (~100 FLOPs of
# a GEMM's time on a core: with 50 the 3-layer BERT's non-MatMul work came out at 8% of its time, where its profile
# and the fusions' effect put it nearer 20%), a node costs ONNX Runtime a few microseconds of dispatch whatever it does.
ELEMENT = 100.0
NODE = 2e5
# A weight read from memory once a run: ~20 FLOPs of a GEMM's time per fp32 element. A MatMul over a few rows (a
# decoder's step: one token) costs its weight's bytes, not its arithmetic (GPT-2's step: 500 MB read, 18.6 ms here).
WEIGHT_READ = 20.0


@dataclass(frozen=True)
class OpMix:
    """Where a model's time goes, as shares of the baseline's run (they sum to 1), and its size."""

    weights: float
    activations: float
    conv: float
    rest: float
    size_mb: float
    nodes: int
    inferred: bool  # from shapes inferred at the measured sizes (False: guessed from node counts)

    def describe(self) -> str:
        how = "from shapes at the measured sizes" if self.inferred else "guessed from node counts (shapes unknown)"
        return (
            f"op mix {how}: {self.weights:.0%} MatMul/Gemm on weights, {self.activations:.0%} MatMul of activations, "
            f"{self.conv:.0%} Conv, {self.rest:.0%} other; {self.size_mb:.1f} MB, {self.nodes} nodes"
        )

    @classmethod
    def of(cls, model: str | Path, sizes: dict[str, tuple[int, ...]], proto: Any = None) -> OpMix:
        """Read from the model's graph, its inputs fixed to ``sizes`` (name -> shape) for shape inference; ``proto``:
        the model already loaded (a 500 MB GPT-2 takes seconds to read), changed in place."""
        import onnx

        if proto is None:
            proto = onnx.load(str(model), load_external_data=False)
        graph = proto.graph
        size = Path(model).stat().st_size + sum(p.stat().st_size for p in Path(model).parent.glob("*.data") if p.is_file())
        for i in graph.input:
            shape = sizes.get(i.name)
            dims = i.type.tensor_type.shape.dim if i.type.HasField("tensor_type") else []
            if shape is not None and len(dims) == len(shape):
                for d, n in zip(dims, shape, strict=True):
                    d.ClearField("dim_param")
                    d.dim_value = int(n)
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True).graph
        except Exception:  # an operator shape inference does not know, a model over 2 GB: shapes stay unknown
            inferred = graph
        shapes: dict[str, tuple[int, ...]] = {}
        for v in [*inferred.value_info, *inferred.input, *inferred.output]:
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                dims = v.type.tensor_type.shape.dim
                if all(d.HasField("dim_value") for d in dims):
                    shapes[v.name] = tuple(int(d.dim_value) for d in dims)
        for t in graph.initializer:
            shapes[t.name] = tuple(t.dims)
        constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        work = {"weights": 0.0, "activations": 0.0, "conv": 0.0, "rest": 0.0}
        known = unknown = 0
        for n in graph.node:
            if n.input and all(i in constants or not i for i in n.input):  # folded when the session is made
                constants.update(n.output)
                continue
            out = shapes.get(n.output[0]) if n.output else None
            work["rest"] += NODE
            if out is None:
                unknown += n.op_type in ("MatMul", "Gemm", "Conv")
                continue
            elements = float(_prod(out))
            if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1:
                a = shapes.get(n.input[0])
                k = (a[-1] if n.op_type == "MatMul" or not _attr(n, "transA") else a[-2]) if a else None
                if k is None:
                    unknown += 1
                    continue
                known += 1
                if n.input[1] in constants:  # a few rows (a decode step) read the whole weight: memory, not arithmetic
                    weight = shapes.get(n.input[1])
                    read = WEIGHT_READ * _prod(weight) if weight else 0.0
                    work["weights"] += max(2.0 * elements * k, read)
                else:
                    work["activations"] += 2.0 * elements * k
            elif n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in shapes:
                known += 1
                work["conv"] += 2.0 * elements * _prod(shapes[n.input[1]][1:])
            else:
                work["rest"] += ELEMENT * elements
        total = sum(work.values()) or 1.0
        if unknown and not known:  # no shapes: the node counts say where the work likely is
            counts = {k: 0 for k in work}
            for n in graph.node:
                if n.op_type in ("MatMul", "Gemm"):
                    counts["weights" if len(n.input) > 1 and n.input[1] in constants else "activations"] += 1
                elif n.op_type == "Conv":
                    counts["conv"] += 1
            heavy = sum(counts.values())
            shares = {k: 0.8 * v / heavy for k, v in counts.items()} if heavy else {k: 0.0 for k in counts}
            shares["rest"] = 1.0 - sum(v for k, v in shares.items() if k != "rest")
            return cls(**shares, size_mb=size / 1e6, nodes=len(graph.node), inferred=False)
        return cls(**{k: v / total for k, v in work.items()}, size_mb=size / 1e6, nodes=len(graph.node), inferred=True)


def _prod(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _attr(node, name: str) -> int:
    return next((a.i for a in node.attribute if a.name == name), 0)


class Estimate(BaseModel):
    """What the search expected of a candidate before it ran: its speed-up over the baseline and its cost (seconds to
    build and measure)."""

    speedup: float
    cost_s: float


@dataclass
class Estimator:
    """Expected gain and cost of a candidate, for one model on one CPU class; learns its costs as candidates run."""

    mix: OpMix
    cpu: str  # cpu_class()
    run_ms: float  # the baseline's median run
    seconds: float  # one measurement's timed part
    build_scale: list[float] = field(default_factory=list)  # actual / estimated build seconds, per build
    measure_scale: list[float] = field(default_factory=list)  # actual / estimated seconds, per measurement
    # what the convert run took to load the source model and to export this model (its events), when known: a
    # re-export does both again (a Whisper-size encoder's took 17 s where the size-based prior said 6 s)
    source_load_s: float | None = None
    export_s: float | None = None
    session_s: float = 0.0  # the baseline's session creation, as measured (GPT-2's 500 MB: 1.4 s)

    def ratio(self, transforms: list[str], cpu: str | None = None) -> float:
        """The chain's expected time as a share of the baseline's."""
        shares = {"weights": self.mix.weights, "activations": self.mix.activations, "conv": self.mix.conv, "rest": self.mix.rest}
        for name in transforms:
            by_cpu = PRIORS.get(name)
            if not by_cpu:
                continue
            prior = by_cpu.get(cpu or self.cpu) or by_cpu.get("*") or Prior()
            shares = {k: v * getattr(prior, k) for k, v in shares.items()}
        return max(sum(shares.values()), 1e-3)

    def speedup(self, transforms: list[str], session_knobs: int = 0) -> float:
        return 1.0 / (self.ratio(transforms) * SESSION_KNOB**session_knobs)

    def build_seconds(self, transforms: list[str], built: set[str] | None = None, scaled: bool = True) -> float:
        """Seconds to build the links of the chain not built yet (``built``: the chain prefixes already on disk)."""
        total = 0.0
        for i, name in enumerate(transforms):
            prefix = "+".join(transforms[: i + 1])
            if built is not None and prefix in built:
                continue
            fixed, per_mb = BUILD.get(name, BUILD["*"])
            link = fixed + per_mb * self.mix.size_mb
            if name == "torchscript_export" and self.export_s is not None:
                # its convert's load and export: the re-export took 0.7-1.5x them (ViT, MiniLM, the 3-layer BERT,
                # GPT-2, a Whisper-size encoder); the size-based prior stands where it says more
                link = max(link, REEXPORT_OF_CONVERT * ((self.source_load_s or 0.0) + self.export_s))
            total += link
            if name in CALIBRATED:
                total += 8 * 3 * self.run_ms / 1000  # eight batches, each run through a model with its ranges recorded
        return total * (statistics.median(self.build_scale) if scaled and self.build_scale else 1.0)

    def measure_cost(self, seconds: float | None = None, beside: bool = True, scaled: bool = True) -> float:
        """Seconds one measurement takes: its timed runs, the warm-up, the baseline timed beside it, the worker."""
        timed = self.seconds if seconds is None else seconds
        expected = timed + MEASURE_OVERHEAD_S + self.session_s + 3 * self.run_ms / 1000
        if beside:  # the baseline's session in the same worker, and its runs
            expected += self.session_s + max(0.25, timed / 4)
        return expected * (statistics.median(self.measure_scale) if scaled and self.measure_scale else 1.0)

    def estimate(self, transforms: list[str], built: set[str] | None = None, session_knobs: int = 0) -> Estimate:
        return Estimate(
            speedup=round(self.speedup(transforms, session_knobs), 3),
            cost_s=round(self.build_seconds(transforms, built) + self.measure_cost(), 2),
        )

    def learn_build(self, transforms: list[str], built: set[str], seconds: float) -> None:
        """A build took ``seconds``: scale later build estimates by how far off this one was."""
        expected = self.build_seconds(transforms, built, scaled=False)
        if expected > 0.2 and seconds > 0:  # bounded: one build in a busy spell must not price the rest out
            self.build_scale.append(min(max(seconds / expected, 0.25), 3.0))

    def learn_measure(self, wall_s: float, timed_s: float, beside: bool) -> None:
        """A measurement took ``wall_s`` (its timing stops early when the median is steady, its worker starts fast or
        slowly): scale later measurement estimates by how far off this one was."""
        expected = self.measure_cost(timed_s, beside, scaled=False)
        self.measure_scale.append(min(max(wall_s / expected, 0.25), 3.0))

    def ending_seconds(self, source: bool, profile: bool = True) -> float:
        """What a tune spends after its search: the winner and the baseline re-measured in 3 alternating rounds,
        ONNX Runtime's optimized graph saved and measured against it, each profiled (a worker, two sessions and the
        optimized graph written, 10 runs with the profiler and 10 without: a 240 ms Whisper encoder's pair took 11 s,
        GPT-2's 500 MB 15 s), and the source model timed (a
        framework's import, the model's load as its convert run took it, warm-up and timed runs)."""
        confirm = 6 * self.measure_cost(beside=False)
        offline = self.build_seconds(["*"]) + 2 * self.measure_cost(beside=False)
        prof = 2 * (1.0 + 4 * self.session_s + 20 * self.run_ms / 1000) if profile else 0.0
        timing = (3.0 + (self.source_load_s or 1.0) + 1.2 * max(2.0, self.seconds * 2.5)) if source else 0.0
        return confirm + offline + prof + timing
