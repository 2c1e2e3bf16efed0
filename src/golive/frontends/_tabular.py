"""Pieces shared by the tabular frontends (scikit-learn, LightGBM, XGBoost)."""

from __future__ import annotations

import numpy as np

from golive.errors import InputSpecError
from golive.tensors import BATCH, TensorSpec


def feature_count(inputs: list[TensorSpec], framework: str) -> int:
    """N, the fixed width of a tabular model's one [batch, N] input; an InputSpecError when the input is not that."""
    shape = inputs[0].shape
    if not shape or len(shape) != 2 or not isinstance(shape[1], int):
        raise InputSpecError(
            f"a {framework} model takes one [batch, features] input, not {inputs[0]}",
            hint="--input input:float32[batch,N] with N the number of features",
        )
    return shape[1]


def tabular_input(n_features: int, name: str = "input") -> TensorSpec:
    return TensorSpec(name=name, dtype="float32", shape=[BATCH, n_features])


def classifier_outputs(output_names: list[str], labels: np.ndarray, probabilities: np.ndarray) -> dict[str, np.ndarray]:
    """A classifier's reference outputs in the ONNX model's order: label first, then probabilities."""
    return {output_names[0]: labels, output_names[1]: probabilities.astype(np.float32)}


def name_batch_axis(model) -> None:
    """Name the first axis ``batch`` on every input and output.

    Converters leave it unnamed, call it N, or (onnxmltools for a LightGBM label) declare it 1;
    in a tabular model the first axis of every tensor is the row.
    """
    for vi in list(model.graph.input) + list(model.graph.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = BATCH
