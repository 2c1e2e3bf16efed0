"""Tensor specifications, their text syntax, test data on disk, and synthetic inputs.

A dimension is an ``int`` (static), a ``str`` (a named dynamic axis: axes with the same
name always get the same size) or ``None`` (dynamic, unnamed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

import numpy as np
from pydantic import BaseModel, Field

from golive.errors import DataError, InputSpecError

__all__ = [
    "DTYPES",
    "Sample",
    "TensorSpec",
    "apply_dynamic",
    "bind_inputs",
    "check_dim_names",
    "derived_parts",
    "dim_size",
    "dynamic_dims",
    "load_data",
    "parse_dim_sizes",
    "parse_dynamic",
    "parse_input_spec",
    "parse_int_range",
    "specs_from_arrays",
    "specs_from_onnx",
    "synthesize",
    "with_ranges",
    "write_test_data",
]

Dim = int | str | None

# Names users type, mapped to numpy dtype names.
DTYPES: dict[str, str] = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "float64": "float64",
    "double": "float64",
    "fp64": "float64",
    "int64": "int64",
    "long": "int64",
    "int32": "int32",
    "int": "int32",
    "int16": "int16",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "bool",
}

BATCH = "batch"
_DEFAULT_SIZE = {BATCH: 2}
_FALLBACK_SIZE = 8


class TensorSpec(BaseModel):
    """Name, element type and shape of one model input or output."""

    name: str
    dtype: str = Field(description="numpy dtype name, e.g. float32 or int64")
    shape: list[Dim] | None = Field(default=None, description="None when the rank is unknown")
    int_range: tuple[int, int] | None = Field(
        default=None, description="[low, high) for synthetic integer values (token ids: vocabulary size)"
    )
    float_range: tuple[float, float] | None = Field(
        default=None,
        description="[low, high) for synthetic float values (normalized pixels, audio); standard normal when unset",
    )

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.name}:{self.dtype}[?]"
        dims = ",".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}:{self.dtype}[{dims}]"

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) for d in self.shape)


@dataclass
class Sample:
    """One batch of inputs, with the expected outputs when the data carries them."""

    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray] | None = None
    label: str = ""
    sizes: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- text syntax

_SPEC_RE = re.compile(r"^\s*(?P<name>[^:\s]+)\s*:\s*(?P<dtype>[A-Za-z0-9]+)\s*\[(?P<dims>[^\]]*)\]\s*$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPEC_HELP = "write it as NAME:DTYPE[DIM,...], e.g. input_ids:int64[batch,128] or x:float32[1,3,224,224]"


def _parse_dim(text: str, where: str) -> Dim:
    text = text.strip()
    if text in ("?", ""):
        return None
    if text.isdigit():
        return int(text)
    if _IDENT_RE.match(text):
        return text
    raise InputSpecError(f"bad dimension {text!r} in {where}", hint="a dimension is a number, a name like batch, or ?")


def parse_input_spec(text: str) -> TensorSpec:
    """Parse ``NAME:DTYPE[DIM,...]`` (e.g. ``input_ids:int64[batch,128]``)."""
    m = _SPEC_RE.match(text)
    if not m:
        raise InputSpecError(f"cannot read the input spec {text!r}", hint=_SPEC_HELP)
    dtype = DTYPES.get(m["dtype"].lower())
    if dtype is None:
        raise InputSpecError(
            f"unknown element type {m['dtype']!r} in {text!r}", hint="use one of " + ", ".join(sorted(set(DTYPES.values())))
        )
    dims_text = m["dims"].strip()
    shape = [] if not dims_text else [_parse_dim(d, repr(text)) for d in dims_text.split(",")]
    return TensorSpec(name=m["name"], dtype=dtype, shape=shape)


def parse_dynamic(text: str) -> tuple[str, dict[int, str]]:
    """Parse ``NAME:AXIS=DIMNAME,...`` (e.g. ``input_ids:0=batch,1=sequence``)."""
    name, sep, rest = text.partition(":")
    hint = "write it as NAME:AXIS=DIMNAME,..., e.g. input_ids:0=batch,1=sequence"
    if not sep or not name.strip() or not rest.strip():
        raise InputSpecError(f"cannot read the dynamic-axes spec {text!r}", hint=hint)
    axes: dict[int, str] = {}
    for part in rest.split(","):
        axis, eq, dim = part.partition("=")
        axis, dim = axis.strip(), dim.strip()
        if not eq or not axis.lstrip("-").isdigit() or not _IDENT_RE.match(dim):
            raise InputSpecError(f"cannot read {part!r} in the dynamic-axes spec {text!r}", hint=hint)
        axes[int(axis)] = dim
    return name.strip(), axes


def parse_int_range(text: str) -> tuple[str | None, int, int]:
    """Parse ``[NAME=]LOW:HIGH`` (HIGH exclusive, as numpy's randint)."""
    name, eq, rng = text.rpartition("=")
    low, sep, high = rng.partition(":")
    lo: int | None
    hi: int | None
    try:
        lo, hi = int(low), int(high)
    except ValueError:
        lo = hi = None
    if not sep or lo is None or hi is None or hi <= lo:
        raise InputSpecError(
            f"cannot read the integer range {text!r}",
            hint="write it as [NAME=]LOW:HIGH with HIGH > LOW (HIGH is exclusive), e.g. input_ids=0:30522",
        )
    return (name.strip() or None) if eq else None, lo, hi


def parse_dim_sizes(items: Iterable[str]) -> dict[str, list[int]]:
    """Parse ``DIMNAME=SIZE[,SIZE...]`` items (e.g. ``batch=1,7``)."""
    sizes: dict[str, list[int]] = {}
    for text in items:
        name, eq, values = text.partition("=")
        try:
            parsed = [int(v) for v in values.split(",")]
        except ValueError:
            parsed = []
        if not eq or not _IDENT_RE.match(name.strip()) or not parsed or min(parsed) < 1:
            raise InputSpecError(
                f"cannot read the dimension sizes {text!r}", hint="write it as DIMNAME=SIZE[,SIZE...], e.g. batch=1,7"
            )
        sizes[name.strip()] = parsed
    return sizes


def apply_dynamic(specs: list[TensorSpec], dynamic: dict[str, dict[int, str]]) -> list[TensorSpec]:
    """Give the named axes of ``specs`` their dynamic dimension names."""
    by_name = {s.name: s for s in specs}
    unknown = sorted(set(dynamic) - set(by_name))
    if unknown:
        raise InputSpecError(
            f"--dynamic names unknown input(s) {', '.join(unknown)}", hint="the model's inputs are " + ", ".join(by_name)
        )
    out = []
    for spec in specs:
        axes = dynamic.get(spec.name)
        if not axes:
            out.append(spec)
            continue
        if spec.shape is None:
            raise InputSpecError(f"--dynamic for {spec.name} needs its rank; give --input {spec.name}:DTYPE[...]")
        shape = list(spec.shape)
        for axis, dim in axes.items():
            if not -len(shape) <= axis < len(shape):
                raise InputSpecError(f"--dynamic {spec.name}:{axis}={dim}: {spec.name} has only {len(shape)} axes")
            shape[axis] = dim
        out.append(spec.model_copy(update={"shape": shape}))
    return out


def check_dim_names(specs: Iterable[TensorSpec], names: Iterable[str]) -> None:
    """--dim NAME=SIZE: every NAME must be a dynamic axis of the model."""
    specs = list(specs)
    dims = dynamic_dims(specs)
    unknown = sorted(set(names) - set(dims))
    if unknown:
        raise InputSpecError(
            f"--dim names {', '.join(unknown)}, which is not a dynamic axis of the model",
            hint="its dynamic axes are " + (", ".join(dims) or "none"),
        )


def dynamic_dims(specs: Iterable[TensorSpec]) -> list[str]:
    """Names of the dynamic dimensions, in order of first appearance. A derived dimension (``past_sequence+sequence``,
    an attention mask over the cache and the new tokens) is not one of them: its parts are."""
    seen: list[str] = []
    for spec in specs:
        for i, d in enumerate(spec.shape or []):
            name = dim_name(spec, i, d)
            for part in derived_parts(name) if name else []:
                if part not in seen:
                    seen.append(part)
    return seen


def derived_parts(name: str) -> list[str]:
    """The dimensions a dimension name adds up (``past_sequence+sequence``: both; ``batch``: itself; ``+1``: none)."""
    return [p.strip() for p in name.split("+") if p.strip() and not p.strip().isdigit()]


def dim_size(name: str, sizes: dict[str, int]) -> int:
    """The size of a dimension: its own, or the sum of its parts for a derived one (``past_sequence+sequence``)."""
    if "+" not in name:
        return sizes[name]
    return sum(int(p) if p.strip().isdigit() else sizes[p.strip()] for p in name.split("+"))


@overload
def dim_name(spec: TensorSpec, axis: int, dim: str | None) -> str: ...
@overload
def dim_name(spec: TensorSpec, axis: int, dim: Dim) -> str | None: ...
def dim_name(spec: TensorSpec, axis: int, dim: Dim) -> str | None:
    """The name of a dynamic axis (its own, or the one golive gives an unnamed axis); None for a fixed size."""
    if isinstance(dim, int):
        return None
    if isinstance(dim, str):
        return dim
    return BATCH if axis == 0 else f"{spec.name}_{axis}"


# ---------------------------------------------------------------- ONNX and arrays


def specs_from_onnx(model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output specs of an ``onnx.ModelProto`` (initializers that are also inputs excluded)."""
    from onnx import helper

    def value_spec(vi) -> TensorSpec:
        t = vi.type
        if not t.HasField("tensor_type"):
            return TensorSpec(name=vi.name, dtype=t.WhichOneof("value") or "unknown", shape=None)
        tt = t.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        except Exception:
            dtype = f"onnx:{tt.elem_type}"
        shape: list[Dim] | None = None
        if tt.HasField("shape"):
            shape = []
            for d in tt.shape.dim:
                if d.HasField("dim_value"):
                    shape.append(int(d.dim_value))
                elif d.dim_param:
                    shape.append(d.dim_param)
                else:
                    shape.append(None)
        return TensorSpec(name=vi.name, dtype=dtype, shape=shape)

    inits = {i.name for i in model.graph.initializer}
    inputs = [value_spec(v) for v in model.graph.input if v.name not in inits]
    outputs = [value_spec(v) for v in model.graph.output]
    return inputs, outputs


def specs_from_arrays(arrays: dict[str, np.ndarray], *, dynamic_batch: bool = True) -> list[TensorSpec]:
    """Specs from sample data; the first axis becomes the dynamic ``batch`` axis when asked."""
    specs = []
    for name, arr in arrays.items():
        shape: list[Dim] = list(arr.shape)
        if dynamic_batch and shape:
            shape[0] = BATCH
        specs.append(TensorSpec(name=name, dtype=arr.dtype.name, shape=shape))
    return specs


# ---------------------------------------------------------------- synthetic inputs


def resolve_sizes(specs: list[TensorSpec], overrides: dict[str, int] | None = None) -> dict[str, int]:
    """A concrete size for every dynamic dimension of ``specs``."""
    overrides = overrides or {}
    return {d: overrides.get(d, _DEFAULT_SIZE.get(d, _FALLBACK_SIZE)) for d in dynamic_dims(specs)}


def synthesize(specs: list[TensorSpec], sizes: dict[str, int], seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs that respect dtype, shape and integer ranges."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.shape is None:
            raise InputSpecError(
                f"the shape of input {spec.name} is unknown, so golive cannot make test inputs for it",
                hint=f"give it with --input {spec.name}:{spec.dtype}[...] or pass --data",
            )
        shape = tuple(d if isinstance(d, int) else dim_size(dim_name(spec, i, d), sizes) for i, d in enumerate(spec.shape))
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f" and spec.float_range:
            arr = rng.uniform(*spec.float_range, size=shape).astype(dtype)
        elif dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.integers(0, 2, shape).astype(bool)
        elif dtype.kind in "iu":
            lo, hi = spec.int_range or (0, 10)
            arr = rng.integers(lo, hi, shape, dtype=np.int64).astype(dtype)
        else:
            raise InputSpecError(
                f"golive cannot make synthetic values of type {spec.dtype} for input {spec.name}",
                hint="pass real inputs with --data",
            )
        feeds[spec.name] = arr
    return feeds


# ---------------------------------------------------------------- data on disk


def load_data(path: str | Path, input_names: list[str], output_names: list[str] | None = None) -> list[Sample]:
    """Read test data: ``.npz`` (name -> array), ``.npy`` (one input), or ONNX test-data folders.

    Arrays of a ``.npz`` named after one of ``output_names`` are the expected outputs.

    An ONNX test-data folder is either ``test_data_set_N/`` itself (``input_K.pb``, ``output_K.pb``)
    or a folder holding several of them, as in the ONNX model zoo.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"test data {path} does not exist")
    if path.is_dir():
        sets = sorted(
            (p for p in path.iterdir() if p.is_dir() and p.name.startswith("test_data_set")), key=lambda p: _natural_key(p.name)
        )
        if not sets and any(path.glob("input_*.pb")):
            sets = [path]
        if not sets:
            raise DataError(
                f"{path} holds no ONNX test data", hint="expected test_data_set_N/input_K.pb files, a .npz or a .npy file"
            )
        return [_read_pb_set(s, input_names, output_names) for s in sets]
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:
            raise DataError(f"cannot read {path} as a .npz file: {exc}") from exc
        if arrays and all(re.fullmatch(r"arr_\d+", k) for k in arrays) and not set(arrays) & set(input_names):
            arrays = dict(zip(input_names, (arrays[f"arr_{i}"] for i in range(len(arrays))), strict=True))
        expected = {k: arrays.pop(k) for k in list(arrays) if k in (output_names or []) and k not in input_names}
        return [Sample(inputs=arrays, outputs=expected or None, label=path.name)]
    if path.suffix == ".npy":
        if len(input_names) != 1:
            raise DataError(
                f"{path.name} holds one array, but the model has {len(input_names)} inputs ({', '.join(input_names)})",
                hint="save them in one .npz file, one array per input name",
            )
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise DataError(f"cannot read {path} as a .npy file: {exc}") from exc
        return [Sample(inputs={input_names[0]: arr}, label=path.name)]
    raise DataError(
        f"golive does not know the data format of {path.name}",
        hint="use a .npz (name -> array), a .npy (single input) or an ONNX test_data_set folder",
    )


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _read_tensor(path: Path):
    import onnx
    from onnx import numpy_helper

    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(path.read_bytes())
        folder = path.parent.resolve()
        for entry in tensor.external_data:
            if entry.key == "location" and folder not in (folder / entry.value).resolve().parents:
                raise DataError(
                    f"{path} keeps its data in {entry.value!r}, outside its folder",
                    hint="keep a test_data_set's external data files beside its .pb files",
                )
        return tensor.name, numpy_helper.to_array(tensor, base_dir=str(folder))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable TensorProto: {exc}") from exc


def _read_pb_set(folder: Path, input_names: list[str], output_names: list[str] | None) -> Sample:
    def read(prefix: str, names: list[str] | None) -> dict[str, np.ndarray]:
        files = sorted(folder.glob(f"{prefix}_*.pb"), key=lambda p: _natural_key(p.name))
        out = {}
        for i, f in enumerate(files):
            name, arr = _read_tensor(f)
            if not name:
                if not names or i >= len(names):
                    raise DataError(f"{f} has no tensor name and the model has no {prefix} number {i}")
                name = names[i]
            out[name] = arr
        return out

    inputs = read("input", input_names)
    outputs = read("output", output_names)
    return Sample(inputs=inputs, outputs=outputs or None, label=folder.name)


def write_test_data(folder: str | Path, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray] | None = None) -> Path:
    """Write one ``test_data_set`` folder (``input_K.pb`` / ``output_K.pb``)."""
    from onnx import numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, arrays in (("input", inputs), ("output", outputs or {})):
        for i, (name, arr) in enumerate(arrays.items()):
            (folder / f"{prefix}_{i}.pb").write_bytes(numpy_helper.from_array(np.asarray(arr), name).SerializeToString())
    return folder


def bind_inputs(arrays: dict[str, np.ndarray], specs: list[TensorSpec], where: str) -> dict[str, np.ndarray]:
    """Check data against the model's inputs by name, casting within a kind (float64 -> float32)."""
    expected = {s.name: s for s in specs}
    unknown = sorted(set(arrays) - set(expected))
    missing = sorted(set(expected) - set(arrays))
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unknown input name(s) {', '.join(unknown)}")
        if missing:
            parts.append(f"no data for {', '.join(missing)}")
        raise DataError(f"{where}: {'; '.join(parts)}", hint="the model's inputs are " + ", ".join(expected))
    out = {}
    for name, spec in expected.items():
        arr = np.asarray(arrays[name])
        want = np.dtype(spec.dtype) if not spec.dtype.startswith("onnx:") else arr.dtype
        if arr.dtype != want:
            if not (arr.dtype.kind == want.kind or (arr.dtype.kind in "iu" and want.kind in "iuf")):
                raise DataError(f"{where}: input {name} is {arr.dtype}, the model wants {want}", hint=f"save {name} as {want}")
            arr = arr.astype(want)
        if spec.shape is not None:
            if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and d != n for d, n in zip(spec.shape, arr.shape, strict=True)
            ):
                raise DataError(f"{where}: input {name} has shape {list(arr.shape)}, the model wants {spec}")
        out[name] = arr
    return out


def sizes_of(arrays: dict[str, np.ndarray], specs: list[TensorSpec]) -> dict[str, int]:
    """The sizes that ``arrays`` give the dynamic dimensions of ``specs``."""
    sizes: dict[str, int] = {}
    for spec in specs:
        arr = arrays.get(spec.name)
        if arr is None or spec.shape is None:
            continue
        for i, d in enumerate(spec.shape):
            name = dim_name(spec, i, d)
            if name and "+" not in name and i < arr.ndim:
                sizes.setdefault(name, int(arr.shape[i]))
    return sizes


def with_ranges(specs: list[TensorSpec], ranges_from: Iterable[TensorSpec]) -> list[TensorSpec]:
    """``specs`` (read from an ONNX model, which keeps no value ranges) with the synthetic value ranges of the specs
    of the same names in ``ranges_from``."""
    known = {s.name: s for s in ranges_from}
    return [
        s.model_copy(update={"int_range": known[s.name].int_range, "float_range": known[s.name].float_range})
        if s.name in known
        else s
        for s in specs
    ]
