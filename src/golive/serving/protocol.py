"""Open Inference Protocol v2 tensors: JSON, and Triton's binary tensor data extension, both directions.

A request body is a JSON header, then (binary extension) the raw bytes of each input whose parameters
give ``binary_data_size``, in order; the ``Inference-Header-Content-Length`` header says where the JSON
ends. Outputs come back as JSON ``data``, or as raw bytes after the JSON when asked
(``parameters.binary_data`` on an output, or ``binary_data_output`` on the request).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import numpy as np

from golive.serving.model import DTYPES, RequestError

__all__ = ["EXTENSIONS", "HEADER", "decode_request", "encode_response", "from_bytes_tensor", "to_bytes_tensor"]

HEADER = "inference-header-content-length"
# Triton's protocol extensions this server speaks, on both protocols
EXTENSIONS = ("binary_tensor_data", "model_configuration", "statistics")
_MAX_ELEMENTS = 2**31
_ELEMENT_SIZE = {name: np.dtype(t).itemsize for name, t in DTYPES.items() if name != "BYTES"}


def from_bytes_tensor(raw: bytes) -> list[bytes]:
    """Triton's BYTES encoding: each element is a 4-byte little-endian length, then its bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise RequestError("a BYTES tensor's binary data ends inside an element's length")
        (n,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + n > len(raw):
            raise RequestError("a BYTES tensor's binary data ends inside an element")
        items.append(raw[offset : offset + n])
        offset += n
    return items


def to_bytes_tensor(array: np.ndarray) -> bytes:
    parts = []
    for item in array.ravel():
        b = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(b)) + b)
    return b"".join(parts)


def decode_request(
    body: bytes, header_length: str | None
) -> tuple[dict[str, Any], dict[str, np.ndarray], list[str] | None, set[str]]:
    """(the JSON header, the input arrays by name, the outputs asked for, those wanted as binary)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise RequestError(f"Inference-Header-Content-Length is not a number: {header_length!r}") from None
        if n < 0 or n > len(body):
            raise RequestError(f"Inference-Header-Content-Length {n} is larger than the body ({len(body)} bytes)")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise RequestError('the request needs "inputs": a list of tensors {name, shape, datatype, data}')
    feeds: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict):
            raise RequestError("each input must be an object {name, shape, datatype, data}")
        name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
        if (
            not isinstance(name, str)
            or not isinstance(shape, list)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise RequestError(f"input {name!r}: needs a name and a shape (a list of non-negative ints)")
        if math.prod(shape) > _MAX_ELEMENTS:
            raise RequestError(f"input {name}: shape {shape} holds more than {_MAX_ELEMENTS} elements", 413)
        parameters = tensor.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise RequestError(f"input {name}: parameters must be an object")
        if datatype not in DTYPES:
            raise RequestError(f"input {name}: unknown datatype {datatype!r}; one of {', '.join(DTYPES)}")
        if name in feeds:
            raise RequestError(f"input {name} is given twice")
        count = math.prod(shape)
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
                raise RequestError(
                    f"input {name}: binary_data_size {size} runs past the {len(binary) - offset} bytes left in the body"
                )
            raw = bytes(binary[offset : offset + size])
            offset += size
            if datatype == "BYTES":
                items = from_bytes_tensor(raw)
                if len(items) != count:
                    raise RequestError(f"input {name}: {len(items)} BYTES elements for shape {shape} ({count})")
                array = np.array(items, dtype=np.object_).reshape(shape)
            else:
                if size != count * _ELEMENT_SIZE[datatype]:
                    raise RequestError(
                        f"input {name}: binary_data_size {size} bytes, but shape {shape} of {datatype} "
                        f"needs {count * _ELEMENT_SIZE[datatype]}"
                    )
                array = np.frombuffer(raw, dtype=DTYPES[datatype]).reshape(shape)
        else:
            data = tensor.get("data")
            if data is None:
                raise RequestError(f'input {name}: no data (give "data", or binary data with parameters.binary_data_size)')
            try:
                array = np.array(data, dtype=np.object_ if datatype == "BYTES" else DTYPES[datatype])
            except (ValueError, TypeError, OverflowError) as exc:
                raise RequestError(f"input {name}: data is not {datatype}: {exc}") from None
            if array.size != count:
                raise RequestError(f"input {name}: {array.size} elements for shape {shape} ({count})")
            array = array.reshape(shape)
            if datatype == "BYTES":
                array = np.array([s.encode() if isinstance(s, str) else s for s in array.ravel()], dtype=np.object_).reshape(
                    shape
                )
        feeds[name] = array
    if offset != len(binary):
        raise RequestError(f"{len(binary) - offset} bytes of binary data follow the inputs that no input claims")
    wanted, binary_out = None, set()
    if request.get("outputs") is not None:
        if not isinstance(request["outputs"], list):
            raise RequestError('"outputs" must be a list of {name, parameters}')
        wanted = []
        for out in request["outputs"]:
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise RequestError("each requested output needs a name")
            wanted.append(out["name"])
            if (out.get("parameters") or {}).get("binary_data"):
                binary_out.add(out["name"])
    elif isinstance(request.get("parameters"), dict) and request["parameters"].get("binary_data_output"):
        binary_out = {"*"}
    return request, feeds, wanted, binary_out


def _datatype(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "BYTES"
    for name, t in DTYPES.items():
        if np.dtype(t) == array.dtype:
            return name
    raise RequestError(f"cannot send a {array.dtype} output", 500)


def encode_response(
    model: str, version: str, request_id: str | None, results: dict[str, np.ndarray], binary_out: set[str]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary data follows it."""
    outputs, chunks = [], []
    for name, array in results.items():
        array = np.ascontiguousarray(array)
        entry: dict[str, Any] = {"name": name, "datatype": _datatype(array), "shape": list(array.shape)}
        if name in binary_out or "*" in binary_out:
            raw = to_bytes_tensor(array) if entry["datatype"] == "BYTES" else array.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif entry["datatype"] == "BYTES":
            entry["data"] = [b.decode(errors="replace") if isinstance(b, bytes) else str(b) for b in array.ravel()]
        else:
            entry["data"] = array.ravel().tolist()
        outputs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outputs}
    if request_id is not None:
        body["id"] = request_id
    head = json.dumps(body, separators=(",", ":")).encode()
    if not chunks:
        return head, None
    return head + b"".join(chunks), len(head)
