"""A served model: its session (built as golive.load_session builds it), its tensors, and a greedy batcher.

While the session is busy, requests that have a batch axis queue; when it frees, everything queued (up to
``max_batch`` items, grouped by the sizes of their other axes) is concatenated, run once and split back.
``max_delay_ms`` waits that long for a fuller batch. Requests are validated before they queue, so a bad one
never joins a batch; if a batch still fails at run time, its requests run one by one, so only the failing
one fails. The queue is bounded: beyond ``max_queue`` waiting requests the server answers 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from golive.errors import GoliveError, first_line
from golive.rundir import ConvertRecord, from_record, parts_of, read_convert_record, resolve_target, tuned_record
from golive.runtime import SessionConfig, make_session, without_graph_capture

__all__ = [
    "DTYPES",
    "OIP_TYPES",
    "Overloaded",
    "RequestError",
    "ServedModel",
    "Statistics",
    "TensorMeta",
    "load_model",
    "load_models",
]

log = logging.getLogger(__name__)

# ONNX Runtime element type -> Open Inference Protocol datatype
OIP_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
DTYPES = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT64": np.int64,
    "INT32": np.int32,
    "INT16": np.int16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "BOOL": np.bool_,
    "BYTES": np.object_,
}


class RequestError(GoliveError):
    """A request the server refuses: its HTTP status (400, 404, 413...) and a message naming what is wrong."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Overloaded(RequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 503)


@dataclass
class TensorMeta:
    name: str
    datatype: str
    shape: list[int]  # -1 for a dynamic axis

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass
class _Pending:
    feeds: dict[str, np.ndarray]
    outputs: list[str]
    rows: int
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


_PHASES = ("compute_input", "compute_infer", "compute_output")


class Statistics:
    """Triton's statistics extension for one model: cumulative counts and nanoseconds, as Triton keeps them.

    ``success``/``fail``: requests, from entering the model to their answer (or error); ``queue``: per request,
    the wait for the session; ``compute_input`` (concatenating a batch), ``compute_infer`` (the session run) and
    ``compute_output`` (splitting it back): per request, each request of a batch counting the batch's time, and per
    batch size in ``batch_stats``. ``inference_count`` counts items (rows), ``execution_count`` session runs.
    Updated on the event loop only."""

    def __init__(self) -> None:
        self.inference = {k: [0, 0] for k in ("success", "fail", "queue", *_PHASES)}
        self.batches: dict[int, dict[str, list[int]]] = {}
        self.inference_count = self.execution_count = self.last_inference = 0

    def add(self, kind: str, ns: int, count: int = 1) -> None:
        entry = self.inference[kind]
        entry[0] += count
        entry[1] += ns * count

    def execution(self, requests: int, rows: int, phases: tuple[int, int, int]) -> None:
        self.execution_count += 1
        self.inference_count += rows
        self.last_inference = time.time_ns() // 1_000_000
        per_size = self.batches.setdefault(rows, {k: [0, 0] for k in _PHASES})
        for kind, ns in zip(_PHASES, phases, strict=True):
            self.add(kind, ns, requests)
            per_size[kind][0] += 1
            per_size[kind][1] += ns

    def to_json(self, name: str, version: str) -> dict[str, Any]:
        def duration(entry: list[int]) -> dict[str, int]:
            return {"count": entry[0], "ns": entry[1]}

        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                **{k: duration(v) for k, v in self.inference.items()},
                "cache_hit": duration([0, 0]),
                "cache_miss": duration([0, 0]),
            },
            "batch_stats": [
                {"batch_size": size, **{k: duration(v) for k, v in phases.items()}}
                for size, phases in sorted(self.batches.items())
            ],
        }


class ServedModel:
    def __init__(
        self,
        name: str,
        session,
        *,
        source: str,
        max_batch: int = 32,
        max_delay_ms: float = 0.0,
        max_queue: int = 1024,
        metrics=None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.version, self.session, self.source = name, "1", session, source
        self.max_batch, self.max_delay = max(1, max_batch), max(0.0, max_delay_ms) / 1000.0
        self.max_queue, self.metrics, self.settings = max_queue, metrics, settings or {}
        self.inputs = [self._meta(i) for i in session.get_inputs()]
        self.outputs = [self._meta(o) for o in session.get_outputs()]
        shapes = [*(i.shape for i in session.get_inputs()), *(o.shape for o in session.get_outputs())]
        first = {d[0] if d else None for d in shapes}
        # batchable: every input and output starts with the same symbolic axis, and it is named as a batch axis
        # (golive names it batch; another shared dynamic axis, a sequence, must not be concatenated along)
        self.batch_axis = next(iter(first)) if len(first) == 1 else None
        self.batchable = max_batch > 1 and isinstance(self.batch_axis, str) and _is_batch_name(self.batch_axis)
        self.queue: asyncio.Queue[_Pending] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"golive-serve-{name}")
        self._worker: asyncio.Task | None = None
        self.pending = 0
        self.stats = Statistics()

    @staticmethod
    def _meta(arg) -> TensorMeta:
        shape = [d if isinstance(d, int) else -1 for d in (arg.shape or [])]
        return TensorMeta(arg.name, OIP_TYPES.get(arg.type, arg.type), shape)

    # ------------------------------------------------------------ validation (before a request queues)

    def validate(self, feeds: dict[str, np.ndarray]) -> int:
        """Check names, datatypes and shapes against the model; returns the request's batch size (rows)."""
        known = {m.name: m for m in self.inputs}
        unknown = sorted(set(feeds) - set(known))
        if unknown:
            raise RequestError(
                f"model {self.name} has no input {', '.join(unknown)}; its inputs: "
                + ", ".join(f"{m.name} {m.datatype}{m.shape}" for m in self.inputs)
            )
        missing = [n for n in known if n not in feeds]
        if missing:
            raise RequestError(
                f"missing input(s) {', '.join(missing)} for model {self.name}; expected "
                + ", ".join(f"{known[n].name} {known[n].datatype}{known[n].shape}" for n in missing)
            )
        rows = None
        for name, array in feeds.items():
            meta = known[name]
            if meta.datatype not in DTYPES:
                raise RequestError(f"model {self.name}'s input {name} is {meta.datatype}, which this server cannot take", 500)
            if array.dtype != DTYPES[meta.datatype] and not (meta.datatype == "BYTES" and array.dtype.kind in "OSU"):
                raise RequestError(f"input {name} is {_oip(array.dtype)}; model {self.name} expects {meta.datatype}")
            if len(array.shape) != len(meta.shape) or any(
                m != -1 and m != s for m, s in zip(meta.shape, array.shape, strict=True)
            ):
                raise RequestError(
                    f"input {name} has shape {list(array.shape)}; model {self.name} expects {meta.shape} (-1: any size)"
                )
            if self.batchable:
                if rows is not None and array.shape[0] != rows:
                    raise RequestError(f"inputs disagree on the batch size: {name} has {array.shape[0]} rows, others {rows}")
                rows = array.shape[0]
        return rows if rows is not None else 1

    # ------------------------------------------------------------ inference

    async def infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        entered = time.perf_counter_ns()
        try:
            results = await self._infer(feeds, outputs)
        except BaseException:
            self.stats.add("fail", time.perf_counter_ns() - entered)
            raise
        self.stats.add("success", time.perf_counter_ns() - entered)
        return results

    async def _infer(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        names = [o.name for o in self.outputs]
        wanted = outputs or names
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise RequestError(f"model {self.name} has no output {', '.join(unknown)}; its outputs: {', '.join(names)}")
        rows = self.validate(feeds)
        if self.queue is None:
            self.queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._loop(self.queue))
        if self.pending >= self.max_queue:
            raise Overloaded(f"model {self.name} has {self.pending} requests waiting (the limit): try again shortly")
        future = asyncio.get_running_loop().create_future()
        self.pending += 1
        self._gauge()
        try:
            await self.queue.put(_Pending(feeds, wanted, rows, future))
            return await future
        finally:
            self.pending -= 1
            self._gauge()

    def _gauge(self) -> None:
        if self.metrics:
            self.metrics.pending.labels(self.name).set(self.pending)

    async def _loop(self, queue: asyncio.Queue[_Pending]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            batch = [first]
            if self.batchable:
                if self.max_delay:
                    end = loop.time() + self.max_delay
                    while sum(p.rows for p in batch) < self.max_batch:
                        left = end - loop.time()
                        if left <= 0:
                            break
                        try:
                            batch.append(await asyncio.wait_for(queue.get(), left))
                        except TimeoutError:
                            break
                rows = sum(p.rows for p in batch)
                while not queue.empty() and rows < self.max_batch:
                    nxt = queue.get_nowait()
                    batch.append(nxt)
                    rows += nxt.rows
            for group in self._groups(batch):
                await self._run(group, loop)

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """Requests that can be concatenated: same sizes on every axis but the first, at most max_batch rows."""
        if not self.batchable:
            return [[p] for p in batch]
        groups: dict[tuple, list[list[_Pending]]] = {}
        for p in batch:
            key = tuple((n, a.shape[1:], a.dtype.str) for n, a in sorted(p.feeds.items()))
            chunks = groups.setdefault(key, [[]])
            if chunks[-1] and sum(q.rows for q in chunks[-1]) + p.rows > self.max_batch:
                chunks.append([])
            chunks[-1].append(p)
        return [chunk for chunks in groups.values() for chunk in chunks]

    async def _run(self, group: list[_Pending], loop, again: bool = False) -> None:
        """``again``: a request of a batch that could not run whole, run alone; its queue time is counted once."""
        started = time.perf_counter()
        for p in group if not again else ():
            if self.metrics:
                self.metrics.queue_time.labels(self.name).observe(started - p.queued)
            self.stats.add("queue", int((started - p.queued) * 1e9))
        if self.metrics:
            self.metrics.batch_size.labels(self.name).observe(sum(p.rows for p in group))
        names = sorted({n for p in group for n in p.outputs}, key=[o.name for o in self.outputs].index)
        try:
            if len(group) == 1:
                feeds = group[0].feeds
            else:
                feeds = {n: np.concatenate([p.feeds[n] for p in group]) for n in group[0].feeds}
            prepared = time.perf_counter()
            results = await loop.run_in_executor(self.executor, self.session.run, names, feeds)
            ran = time.perf_counter()
        except Exception as exc:
            if len(group) > 1:  # only the failing request should fail: run them one by one
                for p in group:
                    await self._run([p], loop, again=True)
                return
            if not group[0].future.done():
                group[0].future.set_exception(RequestError(f"model {self.name} failed: {first_line(exc, 500)}", 500))
            return
        finally:
            if self.metrics:
                self.metrics.compute_time.labels(self.name).observe(time.perf_counter() - started)
        total = sum(p.rows for p in group)
        if len(group) > 1 and any(np.ndim(r) == 0 or r.shape[0] != total for r in results):
            for p in group:  # an output without a per-row first axis cannot be split back: run them one by one
                await self._run([p], loop, again=True)
            return
        start, answers = 0, []
        for p in group:
            end = start + p.rows
            answers.append(
                {n: (r[start:end] if len(group) > 1 else r) for n, r in zip(names, results, strict=True) if n in p.outputs}
            )
            start = end
        self.stats.execution(
            len(group),
            total,
            (int((prepared - started) * 1e9), int((ran - prepared) * 1e9), int((time.perf_counter() - ran) * 1e9)),
        )
        for p, out in zip(group, answers, strict=True):
            if not p.future.done():
                p.future.set_result(out)

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "onnxruntime_onnx",
            "inputs": [m.to_json() for m in self.inputs],
            "outputs": [m.to_json() for m in self.outputs],
        }

    def config(self) -> dict[str, Any]:
        """The model's configuration, in the shape of Triton's model config (JSON)."""

        def io(m: TensorMeta) -> dict[str, Any]:
            dims = m.shape[1:] if self.batchable else m.shape
            return {"name": m.name, "data_type": f"TYPE_{_TRITON_TYPE.get(m.datatype, m.datatype)}", "dims": dims}

        return {
            "name": self.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "max_batch_size": self.max_batch if self.batchable else 0,
            "input": [io(m) for m in self.inputs],
            "output": [io(m) for m in self.outputs],
            "dynamic_batching": {"max_queue_delay_microseconds": int(self.max_delay * 1e6)} if self.batchable else None,
            "parameters": {k: {"string_value": str(v)} for k, v in self.settings.items()},
        }

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


_TRITON_TYPE = {
    "FP32": "FP32",
    "FP64": "FP64",
    "FP16": "FP16",
    "INT64": "INT64",
    "INT32": "INT32",
    "INT16": "INT16",
    "INT8": "INT8",
    "UINT8": "UINT8",
    "UINT16": "UINT16",
    "UINT32": "UINT32",
    "UINT64": "UINT64",
    "BOOL": "BOOL",
    "BYTES": "STRING",
    "BF16": "BF16",
}


def _is_batch_name(name: str) -> bool:
    lowered = name.lower()
    return "batch" in lowered or lowered in ("n", "b", "none", "unk__0")


def _oip(dtype: np.dtype) -> str:
    for name, t in DTYPES.items():
        if np.dtype(t) == dtype:
            return name
    return str(dtype)


def load_models(path: str | Path, *, name: str | None = None, **kwargs) -> list[ServedModel]:
    """What ``load_model`` serves; a model converted as parts is one served model per part, named NAME-PART."""

    path = Path(path)
    parts = parts_of(path)
    if not parts:
        return [load_model(path, name=name, **kwargs)]
    base = name or path.name
    return [load_model(path / part, name=f"{base}-{part}", **kwargs) for part in parts]


def load_model(path: str | Path, *, name: str | None = None, spinning: bool | None = False, **kwargs) -> ServedModel:
    """A tune folder (or its best/), a convert folder, or an .onnx file, with the session golive.load_session
    builds (the tuned settings, custom ops).

    ``spinning``: ONNX Runtime's intra-op threads spin-wait for work after each run. That suits one caller
    timing one stream (where tune measures), but in a server the spinning threads take the cores the event
    loop needs to parse and answer the next requests: measured side by side with serve_bench on 2 cores, MNIST at
    concurrency 32 answered 3388 requests/s with spinning off against 2281 with it on. False (the default)
    turns it off; None keeps the tuned (or ONNX Runtime's default) setting."""

    def configured(config: SessionConfig) -> SessionConfig:
        config = without_graph_capture(config)  # requests vary in batch and arrive in host memory
        if spinning is None:
            return config
        return config.model_copy(update={"intra_op_spinning": spinning, "inter_op_spinning": spinning})

    target = resolve_target(path, "serve")
    transforms = "original"
    if target.kind in ("tune", "best"):
        best, tuned = tuned_record(target.path)
        config = configured(tuned.session)
        model = best / "model.onnx"
        transforms = "+".join(tuned.transforms) or "original"
    elif target.kind == "convert":
        converted: ConvertRecord = read_convert_record(target.path, "serve")
        config = configured(SessionConfig(custom_ops=[from_record(c, target.path) for c in converted.custom_ops]))
        model = target.model
    else:
        config, model = configured(SessionConfig()), target.path
    session = make_session(model, config)
    settings: dict[str, Any] = {"session": config.describe(), "transforms": transforms}
    default_name = target.name
    model_name = name or default_name
    if not model_name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise GoliveError(f"{model_name!r} cannot be a model name in a URL", hint="give --name NAME (letters, digits, - _ .)")
    return ServedModel(model_name, session, source=str(target.path), settings=settings, **kwargs)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
