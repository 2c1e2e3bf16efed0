"""ONNX → ONNX transforms. Each is declared once here: its name, what it does, where it applies.

A transform reads one model file and writes another; it never touches its input. Whether a
transform helps, and whether its result is still correct, is for the tuner to measure.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from golive._imports import is_import_path
from golive._io import folder_in_place
from golive.errors import GoliveError, TransformError

if TYPE_CHECKING:
    from golive.runtime import GraphLevel

__all__ = [
    "TRANSFORMS",
    "ChainError",
    "ModelFacts",
    "Transform",
    "TransformContext",
    "TransformError",
    "TransformResult",
    "apply_chain",
    "check_transforms",
    "get_transform",
]


@dataclass
class TransformContext:
    """What a transform may need besides the model: calibration inputs, the target provider, the work folder."""

    calibration: list[dict[str, Any]] = field(default_factory=list)
    provider: str = "CPUExecutionProvider"
    work_dir: Path | None = None
    custom_ops: list[str] = field(default_factory=list)  # registered on any session a transform makes
    source: str | None = None  # the convert folder, when the model came from one (its source can be exported again)
    gate: dict[str, float] = field(default_factory=dict)  # the accuracy gate's thresholds: a transform that searches meets them
    deadline: float | None = None  # time.monotonic() by which the tune must end: a transform that searches stops there
    fixed_sizes: dict[str, int] = field(default_factory=dict)  # fixed_shape: the sizes measured
    # INT8 weight levels (per-token; dynamic INT8 reduces its range below 127), when not this CPU's rule (pertoken.weight_levels)
    weight_levels: int | None = None
    graph_optimization_level: GraphLevel = "all"  # ort_optimized_graph: the level ONNX Runtime optimizes at before saving


class TransformResult(BaseModel):
    """What one transform did: the model it wrote and what it reports of its work (fused operators, quantized nodes,
    calibration batches... as each transform counts them)."""

    transform: str
    model: str
    details: dict[str, Any] = Field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The form a tune report keeps (a candidate's transform_info): the name, then the details."""
        return {"transform": self.transform, **self.details}


class ChainError(TransformError):
    """A chain of transforms failed at one link: which, after which links that had worked, and why."""

    def __init__(self, link: str, done: list[str], reason: str) -> None:
        after = f" (after {' + '.join(done)}, which worked)" if done else ""
        super().__init__(f"{link}{after}: {reason}")
        self.link, self.done, self.reason = link, done, reason


@dataclass(frozen=True)
class Transform:
    name: str
    help: str
    target: str  # "module:function(src, dst, ctx) -> dict" (figures about what it did)
    precision: str = "fp32"  # fp32 | approx | int8 | fp16: the accuracy gate a result must pass (approx: by metrics)
    providers: tuple[str, ...] = ()  # providers it is for; empty: all
    after: tuple[str, ...] = ()  # transforms it must follow when both are in a chain
    disables: tuple[str, ...] = ()  # ONNX Runtime optimizers the session must not run on its result (they would undo it)
    staged: bool = True  # the search places it in its stages itself; False: tried alone, when asked for by name

    def apply(self, src: Path, dst: Path, ctx: TransformContext) -> TransformResult:
        """Run the transform in this process. It changes the working folder while it runs and the tools
        it calls set loggers: the tuner calls it in a worker process (``apply_chain``), never in the caller's."""
        from golive._imports import load_module

        module, _, func = self.target.rpartition(":")
        fn: Callable = getattr(load_module(module, reuse=True), func)
        # onnxruntime's quantization and optimizer tools leave temporary files (sym_shape_infer_temp.onnx,
        # <uuid>.data) in the current folder: run them in a scratch folder, removed afterwards.
        src, dst = Path(src).absolute(), Path(dst).absolute()
        scratch = Path(tempfile.mkdtemp(prefix=".golive-transform-", dir=dst.parent))
        here = os.getcwd()
        os.chdir(scratch)
        try:
            details = fn(src, dst, ctx) or {}
        finally:
            os.chdir(here)
            shutil.rmtree(scratch, ignore_errors=True)
        return TransformResult(transform=self.name, model=str(dst), details=details)

    def not_applicable(self, facts: ModelFacts) -> str | None:
        """Why this transform has nothing to do on a model with these facts (None: it may apply), decided from the
        graph before anything is tried."""
        needs = _NEEDS.get(self.name)
        if needs is None:
            return None
        if not facts.standard:
            return "the model has no standard ONNX operators (only " + ", ".join(sorted(facts.domains)) + ")"
        if needs == "weights" and not facts.weighted:
            return "the model has no MatMul, Gemm or Conv with a constant weight to quantize"
        if needs == "matmul_weights" and not facts.matmul_weights:
            return "the model has no MatMul with a constant weight"
        if needs == "fusable" and not facts.op_types & _FUSABLE:
            return "the model has no MatMul, normalization or GELU for the fusions to combine"
        return None

    def unavailable_for(self, provider: str) -> str | None:
        """Why this transform cannot be used with ``provider`` (None when it can)."""
        if self.providers and provider not in self.providers:
            return f"{self.name} is for {', '.join(p.replace('ExecutionProvider', '') for p in self.providers)} only"
        return None


_REEXPORT = ("torchscript_export",)  # a new export comes first: it replaces the model the chain starts from
_FUSIONS = ("ort_fusion", "onnxscript_fusion")  # quantizing and fp16 come after fusing, never before
_BEFORE_PRECISION = (*_REEXPORT, *_FUSIONS)
_GPU = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "DmlExecutionProvider")
_PRECISION = (
    "int8_dynamic",
    "int8_dynamic_per_channel",
    "int8_per_token",
    "int8_blockwise",
    "int8_blockwise_128",
    "int8_dynamic_keep_sensitive",
    "int8_static_qdq",
    "int8_qdq_matmul",
    "fp16",
)
# Where the results run: ONNX Runtime's contrib operators (fusions) have CPU and CUDA kernels; its QOperator and
# MatMulNBits INT8 are the CPU provider's; OpenVINO and TensorRT take standard operators and QDQ.
_CPU = ("CPUExecutionProvider",)
_ORT = ("CPUExecutionProvider", "CUDAExecutionProvider")

TRANSFORMS: dict[str, Transform] = {
    t.name: t
    for t in [
        Transform(
            "torchscript_export",
            "the PyTorch source exported again with the TorchScript exporter (Hugging Face models "
            "with eager attention), whose graph ONNX Runtime's transformers optimizer fuses fully; needs the source",
            "golive.optimize.reexport:torchscript_export",
        ),
        Transform(
            "ort_fusion",
            "ONNX Runtime's transformers optimizer (Attention, EmbedLayerNorm, SkipLayerNorm, BiasGelu...; "
            "fuses attention in TorchScript exports)",
            "golive.optimize.fusion:ort_fusion",
            providers=_ORT,
            after=_REEXPORT,
        ),
        Transform(
            "onnxscript_fusion",
            "onnxscript's ONNX Runtime fusions (attention in dynamo exports, SkipLayerNorm, BiasGelu)",
            "golive.optimize.fusion:onnxscript_fusion",
            providers=_ORT,
            after=_REEXPORT,
        ),
        Transform(
            "int8_dynamic",
            "dynamic INT8 quantization of MatMul/Gemm weights, per tensor",
            "golive.optimize.quantize:dynamic_per_tensor",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_dynamic_per_channel",
            "dynamic INT8 quantization, weights per output channel",
            "golive.optimize.quantize:dynamic_per_channel",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_per_token",
            "INT8 GEMMs with activations quantized per token at run time, outlier input channels "
            "kept in fp32 and SmoothQuant scales chosen per layer on the calibration inputs (Attention's QKV too): "
            "the accuracy of MatMulNBits blocks at the speed of ONNX Runtime's u8s8 kernels",
            "golive.optimize.pertoken:int8_per_token",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_blockwise",
            "8-bit weights in blocks of 32 (MatMulNBits) with int8 compute per block: keeps accuracy "
            "where per-tensor INT8 loses it",
            "golive.optimize.quantize:int8_blockwise",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_blockwise_128",
            "8-bit weights in blocks of 128 (MatMulNBits): fewer scales than blocks of 32",
            "golive.optimize.quantize:int8_blockwise_128",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "gelu_approximation",
            "Gelu/BiasGelu replaced by FastGelu (tanh approximation); gated by cosine",
            "golive.optimize.shape:gelu_approximation",
            precision="approx",
            providers=_ORT,
            after=(*_BEFORE_PRECISION, *_PRECISION),
        ),
        Transform(
            "int8_dynamic_keep_sensitive",
            "dynamic INT8 per channel, leaving the nodes whose quantization moves the output most in fp32",
            "golive.optimize.quantize:dynamic_keep_sensitive",
            precision="int8",
            providers=_CPU,
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_static_qdq",
            "static INT8 (QDQ) with activation ranges calibrated on the given inputs",
            "golive.optimize.quantize:static_qdq",
            precision="int8",
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "int8_qdq_matmul",
            "static INT8 (QDQ) on MatMuls only, weights per channel, unsigned activations calibrated on the given "
            "inputs: the INT8 form OpenVINO compiles into its own kernels",
            "golive.optimize.quantize:qdq_matmul",
            precision="int8",
            providers=("OpenVINOExecutionProvider",),
            after=_BEFORE_PRECISION,
        ),
        Transform(
            "split_skip_layernorm",
            "SkipLayerNormalization split back into Add + LayerNormalization, and ONNX Runtime "
            "told not to fuse them again: the fused CPU kernel measured slower than the two ops (onnxruntime 1.32, "
            "[1, 128, 384]: 248 us against 40 us on one thread, 129 us against 77 us on two)",
            "golive.optimize.fusion:split_skip_layernorm",
            providers=_CPU,
            after=(*_BEFORE_PRECISION, *_PRECISION),
            disables=("SkipLayerNormFusion",),
        ),
        Transform(
            "fixed_shape",
            "every dynamic axis fixed to the size measured (--dim), for deployments that always send "
            "that shape (tune --fixed-shape)",
            "golive.optimize.shape:fixed_shape",
            after=(*_BEFORE_PRECISION, *_PRECISION, "gelu_approximation", "split_skip_layernorm"),
        ),
        Transform(
            "ort_optimized_graph",
            "ONNX Runtime's own graph optimizations, saved ahead of time so that start-up skips them",
            "golive.optimize.fusion:ort_optimized_graph",
            after=(*_BEFORE_PRECISION, *_PRECISION, "gelu_approximation", "fixed_shape", "split_skip_layernorm"),
            staged=False,
        ),
        Transform(
            "fp16",
            "float16 weights and activations (inputs and outputs stay float32)",
            "golive.optimize.fp16:to_fp16",
            precision="fp16",
            providers=_GPU,
            after=_BEFORE_PRECISION,
        ),
    ]
}


@dataclass(frozen=True)
class ModelFacts:
    """What decides whether a transform can apply, read from the graph once."""

    op_types: frozenset[str]
    domains: frozenset[str]  # of the nodes ("" is ai.onnx)
    standard: bool  # the model has ai.onnx operators (not only ai.onnx.ml: a tree ensemble, a linear classifier)
    weighted: bool  # a MatMul, Gemm or Conv with a constant weight
    matmul_weights: bool  # a MatMul with a constant weight

    @classmethod
    def of(cls, model: str | Path | Any) -> ModelFacts:
        """From a model file, or its ModelProto already loaded."""
        import onnx

        graph = (model if isinstance(model, onnx.ModelProto) else onnx.load(str(model), load_external_data=False)).graph
        constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
        weighted = [
            n for n in graph.node if n.op_type in ("MatMul", "Gemm", "Conv") and len(n.input) > 1 and n.input[1] in constants
        ]
        domains = frozenset(n.domain or "" for n in graph.node)
        return cls(
            op_types=frozenset(n.op_type for n in graph.node),
            domains=frozenset(d or "ai.onnx" for d in domains),
            standard="" in domains or "ai.onnx" in domains,
            weighted=bool(weighted),
            matmul_weights=any(n.op_type == "MatMul" for n in weighted),
        )


_FUSABLE = frozenset(
    {"MatMul", "Gemm", "LayerNormalization", "SkipLayerNormalization", "ReduceMean", "Gelu", "Erf", "Softmax", "Attention"}
)
# What each transform needs in the graph to have anything to do
_NEEDS = {
    "ort_fusion": "fusable",
    "onnxscript_fusion": "fusable",
    "int8_dynamic": "weights",
    "int8_dynamic_per_channel": "weights",
    "int8_dynamic_keep_sensitive": "weights",
    "int8_static_qdq": "weights",
    "int8_qdq_matmul": "matmul_weights",
    "int8_per_token": "matmul_weights",
    "int8_blockwise": "matmul_weights",
    "int8_blockwise_128": "matmul_weights",
    "fp16": "standard",
    "gelu_approximation": "standard",
    "split_skip_layernorm": "standard",
}


def get_transform(name: str) -> Transform:
    """A transform by its registered name, or a user's own as an import path ``module:function`` or
    ``file.py:function`` (``function(src, dst, ctx) -> dict`` writing ``dst``; fp32: gated exactly)."""
    t = TRANSFORMS.get(name)
    if t is not None:
        return t
    if is_import_path(name):
        return Transform(name, f"the user transform {name}", name, staged=False)
    raise GoliveError(
        f"unknown transform {name!r}",
        hint="transforms: " + ", ".join(TRANSFORMS) + "; or your own as module:function or file.py:function",
    )


def _folder_name(name: str) -> str:
    """A transform's name as a folder name: a user transform's import path holds '/' (and an absolute one would
    replace the folder it is joined to), so it becomes ``user-`` and a digest of the path."""
    if name in TRANSFORMS:
        return name
    return "user-" + hashlib.sha1(name.encode()).hexdigest()[:12]


def check_transforms(names: list[str] | None) -> None:
    """Fail on a name that is neither a registered transform nor an import path, before any work starts."""
    for name in names or []:
        get_transform(name)


def apply_in_this_process(name: str, src: str, dst: str, ctx: TransformContext) -> TransformResult:
    """The worker's side of ``apply_chain``: one transform, by name."""
    return get_transform(name).apply(Path(src), Path(dst), ctx)


def apply_chain(
    src: Path,
    names: list[str],
    work: Path,
    ctx: TransformContext,
    *,
    timeout: float = 600.0,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[Path, list[TransformResult]]:
    """Apply transforms in order, caching each prefix of the chain under ``work``; returns the final path and what each
    link did.

    Each transform runs in a worker process of its own, so one that crashes (or builds an ONNX Runtime
    session that does) fails its candidate only; it raises :class:`ChainError`, naming the link and the links before it.
    Each result is written into a ``.partial`` folder renamed when complete, so a transform that
    fails (or is killed) never leaves a model that looks finished.
    """
    from golive._isolate import in_worker

    path, done = src, list[TransformResult]()
    for i, name in enumerate(names):
        folder = work / "+".join(_folder_name(n) for n in names[: i + 1])
        if not (folder / "transform.json").exists():
            with folder_in_place(folder) as partial:
                ok, result = in_worker(
                    "golive.optimize:apply_in_this_process",
                    (name, str(path), str(partial / "model.onnx"), ctx),
                    timeout,
                    should_stop,
                )
                if not ok:
                    raise ChainError(name, [r.transform for r in done], str(result))
                (partial / "transform.json").write_text(json.dumps(result.details, default=str))
        details = json.loads((folder / "transform.json").read_text())
        done.append(TransformResult(transform=name, model=str(folder / "model.onnx"), details=details))
        path = folder / "model.onnx"
    return path, done
