"""The accuracy gate: every candidate's outputs against the fp32 reference on the same inputs.

Full-precision candidates (fusions, session settings) must pass the verify tolerances. Reduced
precision (INT8, FP16) is judged by metrics that fit it: cosine similarity per output (mean over
the vectors of the last axis), label agreement for integer label outputs, and top-1 agreement for
float outputs that hold class scores ([batch, classes] logits or probabilities: cosine barely moves
when two close scores swap, which is exactly where quantization flips a prediction), with thresholds
the user can set.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet

import numpy as np
from pydantic import BaseModel, Field

from golive.verification import compare_outputs

__all__ = ["GateResult", "class_score_outputs", "judge"]

# What produces class scores: a final linear layer, a softmax, a sigmoid, or a classic-ML classifier.
# (An embedding ends in Tanh, LayerNormalization, a pooling ReduceMean...: its argmax means nothing.)
_SCORE_PRODUCERS = {
    "Gemm",
    "MatMul",
    "Add",
    "Softmax",
    "LogSoftmax",
    "Sigmoid",
    "LinearClassifier",
    "SVMClassifier",
    "TreeEnsembleClassifier",
    "Normalizer",
    "Div",
}
_PASS_THROUGH = {"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}
_NOT_SCORES = ("embed", "pool", "hidden", "feature", "vector", "encoding")


def class_score_outputs(model) -> set[str]:
    """Names of the float outputs of an ``onnx.ModelProto`` that look like class scores: rank 2, a class axis
    of at least 2, produced by a final linear layer, softmax or sigmoid, and not named like an embedding."""
    producers = {out: node for node in model.graph.node for out in node.output}
    found = set()
    for value in model.graph.output:
        t = value.type.tensor_type
        if t.elem_type not in (1, 10, 11, 16) or len(t.shape.dim) != 2:  # float, float16, double, bfloat16
            continue
        classes = t.shape.dim[1]
        if classes.HasField("dim_value") and classes.dim_value < 2:
            continue
        if any(word in value.name.lower() for word in _NOT_SCORES):
            continue
        node = producers.get(value.name)
        while node is not None and node.op_type in _PASS_THROUGH:
            node = producers.get(node.input[0])
        if node is not None and node.op_type in _SCORE_PRODUCERS:
            found.add(value.name)
    return found


class GateResult(BaseModel):
    passed: bool
    reason: str = ""
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict, description="output -> metric -> value")


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    width = a.shape[-1] if a.ndim else 1
    a, b = a.reshape(-1, width), b.reshape(-1, width)
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    same = np.isclose(den, 0) & np.isclose(np.abs(a - b).sum(axis=1), 0)
    vals = np.where(den == 0, np.where(same, 1.0, 0.0), num / np.where(den == 0, 1.0, den))
    return float(vals.mean())


def judge(
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    precision: str,
    tolerances: dict[str, tuple[float, float]],
    metrics: dict[str, float],
    scores: AbstractSet[str] = frozenset(),
) -> GateResult:
    """``scores``: the outputs that hold class scores (see ``class_score_outputs``), gated by top-1 agreement too."""
    figures: dict[str, dict[str, float]] = {}
    missing = sorted(set(reference) - set(outputs))
    if missing:
        return GateResult(passed=False, reason=f"outputs missing: {', '.join(missing)}")
    for name, ref in reference.items():
        out = outputs[name]
        if out.shape != ref.shape:
            return GateResult(passed=False, reason=f"{name} has shape {list(out.shape)}, fp32 has {list(ref.shape)}")
        f: dict[str, float] = {"max_abs": float(np.max(np.abs(out.astype(np.float64) - ref))) if out.size else 0.0}
        if ref.dtype.kind == "f":
            f["cosine"] = cosine(out, ref)
            if name in scores and ref.ndim >= 1 and ref.size:
                f["argmax"] = float(np.mean(out.argmax(-1) == ref.argmax(-1)))
        else:
            f["label"] = float(np.mean(out == ref))
        figures[name] = f
    if precision == "fp32":
        stats = compare_outputs(outputs, reference, tolerances)
        bad = [s for s in stats if not s.passed]
        if bad:
            s = bad[0]
            return GateResult(
                passed=False,
                metrics=figures,
                reason=f"{s.name}: max abs error {s.max_abs:.3g} exceeds rtol {s.rtol:g} / atol {s.atol:g} "
                f"on {s.mismatch_share:.1%} of elements",
            )
        return GateResult(passed=True, metrics=figures)
    for name, f in figures.items():
        for metric, threshold in metrics.items():
            if metric not in f:
                continue
            value = f[metric]
            ok = value <= threshold if metric == "max_abs" else value >= threshold
            if not ok:
                op = "above" if metric == "max_abs" else "below"
                return GateResult(
                    passed=False, metrics=figures, reason=f"{name}: {metric} {value:.4g} is {op} the gate's {threshold:g}"
                )
    return GateResult(passed=True, metrics=figures)
