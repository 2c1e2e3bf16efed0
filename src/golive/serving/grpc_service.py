"""The Open Inference Protocol over gRPC: the GRPCInferenceService defined by the protos tritonclient ships."""

from __future__ import annotations

import hmac
import math
import time
from typing import NoReturn

import numpy as np

from golive.serving.model import DTYPES, RequestError, ServedModel
from golive.serving.protocol import EXTENSIONS, from_bytes_tensor, to_bytes_tensor

__all__ = ["add_service"]

_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


async def _abort(context, code, message: str) -> NoReturn:
    """End the call with a status: grpc.aio's ``context.abort`` always raises (said here so the checker knows)."""
    await context.abort(code, message)
    raise AssertionError("grpc's context.abort returned")


def add_service(
    server,
    models: dict[str, ServedModel],
    metrics,
    *,
    token: str | None = None,
    version: str = "0.1.0",
    state: dict | None = None,
) -> None:
    """``state``: the HTTP side's; its ``ready`` turns false when the server starts draining, on both protocols."""
    shared: dict = state if state is not None else {"ready": True}
    import grpc
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

    codes = {
        400: grpc.StatusCode.INVALID_ARGUMENT,
        404: grpc.StatusCode.NOT_FOUND,
        413: grpc.StatusCode.RESOURCE_EXHAUSTED,
        415: grpc.StatusCode.INVALID_ARGUMENT,
        500: grpc.StatusCode.INTERNAL,
        503: grpc.StatusCode.UNAVAILABLE,
    }

    async def check(context) -> None:
        if token is None:
            return
        given = dict(context.invocation_metadata()).get("authorization", "")
        given = given[7:].strip() if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this server needs its token: authorization: Bearer TOKEN")

    async def model_of(name: str, wanted: str, context) -> ServedModel:
        model = models.get(name)
        if model is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no model {name!r}; this server has {', '.join(models)}")
        if wanted and wanted != model.version:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"model {name} has no version {wanted!r}; it has {model.version}")
        return model

    def tensor_meta(m):
        return service_pb2.ModelMetadataResponse.TensorMetadata(name=m.name, datatype=m.datatype, shape=m.shape)

    class Service(service_pb2_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request, context):
            await check(context)
            return service_pb2.ServerLiveResponse(live=True)

        async def ServerReady(self, request, context):
            await check(context)
            return service_pb2.ServerReadyResponse(ready=bool(shared["ready"]))

        async def ModelReady(self, request, context):
            await check(context)
            await model_of(request.name, request.version, context)
            return service_pb2.ModelReadyResponse(ready=bool(shared["ready"]))

        async def ServerMetadata(self, request, context):
            await check(context)
            return service_pb2.ServerMetadataResponse(name="golive", version=version, extensions=list(EXTENSIONS))

        async def ModelMetadata(self, request, context):
            await check(context)
            model = await model_of(request.name, request.version, context)
            return service_pb2.ModelMetadataResponse(
                name=model.name,
                versions=[model.version],
                platform="onnxruntime_onnx",
                inputs=[tensor_meta(m) for m in model.inputs],
                outputs=[tensor_meta(m) for m in model.outputs],
            )

        async def ModelConfig(self, request, context):
            await check(context)
            model = await model_of(request.name, request.version, context)
            return service_pb2.ModelConfigResponse(config=triton_config(model, model_config_pb2))

        async def ModelStatistics(self, request, context):
            await check(context)
            chosen = [await model_of(request.name, request.version, context)] if request.name else list(models.values())
            return json_format.ParseDict(
                {"model_stats": [m.stats.to_json(m.name, m.version) for m in chosen]}, service_pb2.ModelStatisticsResponse()
            )

        async def ModelInfer(self, request, context):
            await check(context)
            started = time.perf_counter()
            model = await model_of(request.model_name, request.model_version, context)
            outcome = "error"
            try:
                feeds = _feeds(request)
                wanted = [o.name for o in request.outputs] or None
                results = await model.infer(feeds, wanted)
                response = service_pb2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
                for name, array in results.items():
                    array = np.ascontiguousarray(array)
                    datatype = (
                        "BYTES" if array.dtype.kind in "OSU" else next(k for k, t in DTYPES.items() if np.dtype(t) == array.dtype)
                    )
                    response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
                    response.raw_output_contents.append(to_bytes_tensor(array) if datatype == "BYTES" else array.tobytes())
                outcome = "ok"
                return response
            except RequestError as exc:
                outcome = "rejected" if exc.status < 500 else "overloaded" if exc.status == 503 else "error"
                await _abort(context, codes.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
            finally:
                metrics.requests.labels(model.name, "grpc", outcome).inc()
                metrics.latency.labels(model.name).observe(time.perf_counter() - started)

    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Service(), server)


def _feeds(request) -> dict[str, np.ndarray]:
    feeds = {}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise RequestError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    for i, tensor in enumerate(request.inputs):
        if tensor.datatype not in DTYPES:
            raise RequestError(f"input {tensor.name}: unknown datatype {tensor.datatype!r}")
        shape = list(tensor.shape)
        if any(d < 0 for d in shape) or math.prod(shape) > 2**31:
            raise RequestError(f"input {tensor.name}: shape {shape} is not a tensor shape this server takes")
        count = math.prod(shape)
        if raw:
            if tensor.datatype == "BYTES":
                items = from_bytes_tensor(raw[i])
                if len(items) != count:
                    raise RequestError(f"input {tensor.name}: {len(items)} BYTES elements for shape {shape}")
                array = np.array(items, dtype=np.object_)
            else:
                size = np.dtype(DTYPES[tensor.datatype]).itemsize
                if len(raw[i]) != count * size:
                    raise RequestError(
                        f"input {tensor.name}: {len(raw[i])} bytes, but shape {shape} of {tensor.datatype} needs {count * size}"
                    )
                array = np.frombuffer(raw[i], dtype=DTYPES[tensor.datatype])
        else:
            if tensor.datatype not in _CONTENTS:
                raise RequestError(
                    f"input {tensor.name}: {tensor.datatype} has no typed contents field; send it in raw_input_contents"
                )
            values = list(getattr(tensor.contents, _CONTENTS[tensor.datatype]))
            if len(values) != count:
                raise RequestError(f"input {tensor.name}: {len(values)} elements for shape {shape} ({count})")
            array = np.array(values, dtype=np.object_ if tensor.datatype == "BYTES" else DTYPES[tensor.datatype])
        feeds[tensor.name] = array.reshape(shape)
    return feeds


def triton_config(model: ServedModel, model_config_pb2):
    """The model's configuration as Triton's ModelConfig message."""
    config = model.config()
    message = model_config_pb2.ModelConfig(
        name=config["name"], platform=config["platform"], backend=config["backend"], max_batch_size=config["max_batch_size"]
    )
    for kind in ("input", "output"):
        for item in config[kind]:
            getattr(message, kind).add(
                name=item["name"], data_type=model_config_pb2.DataType.Value(item["data_type"]), dims=item["dims"]
            )
    if config["dynamic_batching"] is not None:
        message.dynamic_batching.max_queue_delay_microseconds = config["dynamic_batching"]["max_queue_delay_microseconds"]
    for key, value in config["parameters"].items():
        message.parameters[key].string_value = value["string_value"]
    return message
