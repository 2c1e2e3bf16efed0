"""Deciding a conversion's input specs, dynamic axes, integer ranges and sample inputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from golive.errors import InputSpecError, SourceNotFoundError
from golive.frontends.base import LoadedModel
from golive.spec import ConvertOptions
from golive.tensors import (
    BATCH,
    Sample,
    TensorSpec,
    apply_dynamic,
    bind_inputs,
    parse_dynamic,
    parse_input_spec,
    parse_int_range,
    resolve_sizes,
    specs_from_arrays,
    synthesize,
    with_ranges,
)

PKG_PREFIX = "pkg:"


def resolve_source(source: str) -> str:
    """``pkg:MODULE/sub/path`` names a file or folder shipped inside an installed Python package."""
    if not source.startswith(PKG_PREFIX):
        return source
    module, _, sub = source[len(PKG_PREFIX) :].partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        raise SourceNotFoundError(f"{source}: no installed package {module!r}", hint=f"pip install {module.replace('_', '-')}")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    path = root / sub
    if path.resolve() != root and root not in path.resolve().parents:
        raise SourceNotFoundError(
            f"{source}: the path leaves the package {module}", hint=f"name a file or folder inside it: pkg:{module}/sub/path"
        )
    if not path.exists():
        raise SourceNotFoundError(f"{source}: {path} does not exist")
    return str(path)


def input_specs(loaded: LoadedModel, options: ConvertOptions, data: list[Sample] | None) -> list[TensorSpec]:
    """The inputs to export with: the user's --input, the model's own declaration, or the sample data."""
    user = [parse_input_spec(t) for t in options.inputs]
    declared = loaded.inputs
    if user and declared:
        by_name = {s.name: s for s in user}
        unknown = sorted(set(by_name) - {s.name for s in declared})
        if unknown:
            raise InputSpecError(
                f"--input names unknown input(s) {', '.join(unknown)}",
                hint="the model's inputs are " + ", ".join(s.name for s in declared),
            )
        specs = [with_ranges([by_name[s.name]], [s])[0] if s.name in by_name else s for s in declared]
    elif user:
        specs = user
    elif declared:
        specs = declared
    elif data:
        specs = specs_from_arrays(data[0].inputs, dynamic_batch=False)
    else:
        hint = (
            "give one --input NAME:DTYPE[DIM,...] per forward() argument, in order "
            "(e.g. --input x:float32[batch,1,28,28]), or sample inputs with --data sample.npz"
        )
        if loaded.framework != "pytorch":
            hint = "give --input input:float32[batch,N] with N the number of features, or sample rows with --data x.npy"
        raise InputSpecError(f"golive cannot tell the inputs of this {loaded.framework} model ({loaded.kind})", hint=hint)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InputSpecError(f"input names repeat: {', '.join(names)}")

    if options.dynamic:
        dynamic: dict[str, dict[int, str]] = {}
        for text in options.dynamic:
            name, axes = parse_dynamic(text)
            dynamic.setdefault(name, {}).update(axes)
        specs = apply_dynamic(specs, dynamic)
    elif loaded.framework == "pytorch" and not any(s.is_dynamic for s in specs):
        # By default the first axis is a dynamic batch (kept static if the model does not allow it).
        loaded.default_dynamic = True
        loaded.declared_shapes = {s.name: list(s.shape) for s in specs if s.shape}
        first = next((s.shape[0] for s in specs if s.shape), None)  # an int: no shape here is dynamic
        if (
            isinstance(first, int) and first >= 2
        ):  # trace at the size asked for; 0 and 1 would make torch.export specialize the axis
            loaded.dim_sizes.setdefault(BATCH, first)
        specs = [s.model_copy(update={"shape": [BATCH, *s.shape[1:]]}) if s.shape else s for s in specs]

    for text in options.int_ranges:
        target, lo, hi = parse_int_range(text)
        ints = [s for s in specs if np.dtype(s.dtype).kind in "iu"]
        if target is not None and target not in {s.name for s in specs}:
            raise InputSpecError(f"--int-range names unknown input {target}", hint="the inputs are " + ", ".join(names))
        if target is not None and target not in {s.name for s in ints}:
            raise InputSpecError(f"--int-range {text}: input {target} is not an integer input")
        specs = [s.model_copy(update={"int_range": (lo, hi)}) if s in ints and target in (None, s.name) else s for s in specs]
    return specs


def export_sample(
    loaded: LoadedModel, specs: list[TensorSpec], data: list[Sample] | None, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs to trace the model with: the first sample of the data, or synthetic inputs at the preferred sizes."""
    if data:
        return bind_inputs(data[0].inputs, specs, where=data[0].label or "sample data")
    return synthesize(specs, resolve_sizes(specs, loaded.dim_sizes), seed=seed)
