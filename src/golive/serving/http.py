"""The Open Inference Protocol v2 over HTTP (KServe v2 / Triton), on Starlette."""

from __future__ import annotations

import hmac
import time
import zlib
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from golive.serving.model import RequestError, ServedModel
from golive.serving.protocol import EXTENSIONS, HEADER, decode_request, encode_response

__all__ = ["build_app"]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class ServingApp(Protocol):
    """What build_app returns: an ASGI app whose ``state.serving`` holds readiness and the request counts."""

    state: State

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


def build_app(
    models: dict[str, ServedModel],
    metrics,
    *,
    token: str | None = None,
    max_body: int = 64 * 2**20,
    server_name: str = "golive",
    version: str = "0.1.0",
) -> ServingApp:
    state = {"ready": True, "accepted": 0, "answered": 0}
    counters: dict[tuple[str, str], Any] = {}  # labelled metric children, looked up once

    def count(model: str, outcome: str, seconds: float) -> None:
        key = (model, outcome)
        if key not in counters:
            counters[key] = metrics.requests.labels(model, "http", outcome)
            counters[(model, "")] = metrics.latency.labels(model)
        counters[key].inc()
        counters[(model, "")].observe(seconds)

    def model_of(request: Request) -> ServedModel:
        name = request.path_params["name"]
        model = models.get(name)
        if model is None:
            raise RequestError(f"no model {name!r}; this server has {', '.join(models) or 'none'}", 404)
        wanted = request.path_params.get("version")
        if wanted is not None and wanted != model.version:
            raise RequestError(f"model {name} has no version {wanted!r}; it has version {model.version}", 404)
        return model

    async def server_metadata(request: Request):
        return JSONResponse({"name": server_name, "version": version, "extensions": list(EXTENSIONS)})

    async def live(request: Request):
        return Response(status_code=200)

    async def ready(request: Request):
        return Response(status_code=200 if state["ready"] else 503)

    async def model_metadata(request: Request):
        return JSONResponse(model_of(request).metadata())

    async def model_ready(request: Request):
        model_of(request)
        return Response(status_code=200 if state["ready"] else 503)

    async def model_config(request: Request):
        return JSONResponse(model_of(request).config())

    async def model_stats(request: Request):
        chosen = [model_of(request)] if "name" in request.path_params else list(models.values())
        return JSONResponse({"model_stats": [m.stats.to_json(m.name, m.version) for m in chosen]})

    async def infer(request: Request):
        started = time.perf_counter()
        model = model_of(request)
        outcome = "error"
        state["accepted"] += 1
        try:
            if model.pending >= model.max_queue:  # before reading the body: a full queue costs no memory
                raise RequestError(f"model {model.name} has {model.pending} requests waiting (the limit): try again shortly", 503)
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > max_body:
                raise RequestError(f"the request body is {int(declared)} bytes, over this server's limit of {max_body}", 413)
            body = bytearray()
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body:
                    raise RequestError(f"the request body is over this server's limit of {max_body} bytes", 413)
            encoding = request.headers.get("content-encoding", "").lower()
            if encoding in ("gzip", "deflate"):
                body = _inflate(bytes(body), encoding, max_body)
            elif encoding not in ("", "identity"):
                raise RequestError(f"Content-Encoding {encoding} is not supported; use gzip or deflate", 415)
            payload, feeds, wanted, binary_out = decode_request(bytes(body), request.headers.get(HEADER))
            results = await model.infer(feeds, wanted)
            data, header_length = encode_response(model.name, model.version, payload.get("id"), results, binary_out)
            outcome = "ok"
            if header_length is None:
                return Response(data, media_type="application/json")
            return Response(
                data, media_type="application/octet-stream", headers={"Inference-Header-Content-Length": str(header_length)}
            )
        except RequestError as exc:
            outcome = "rejected" if exc.status in (400, 404, 413, 415) else "overloaded" if exc.status == 503 else "error"
            return _error(exc.status, exc.message, {"Retry-After": "1"} if exc.status == 503 else None)
        except Exception as exc:  # a bug: the request gets a 500 with the error, the server keeps serving
            return _error(500, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            state["answered"] += 1
            count(model.name, outcome, time.perf_counter() - started)

    async def metrics_route(request: Request):
        data, content_type = metrics.render()
        return Response(data, media_type=content_type)

    async def not_found(request: Request, exc):
        return _error(404, f"no route {request.method} {request.url.path}")

    async def request_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestError)  # registered for RequestError only; Starlette types handlers for any Exception
        return _error(exc.status, exc.message)

    routes = [
        Route("/v2", server_metadata),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/metrics", metrics_route),
        Route("/v2/models/stats", model_stats),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            Route(prefix, model_metadata),
            Route(prefix + "/ready", model_ready),
            Route(prefix + "/config", model_config),
            Route(prefix + "/stats", model_stats),
            Route(prefix + "/infer", infer, methods=["POST"]),
        ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, RequestError: request_error})
    app.state.serving = state
    served: ServingApp = _InferFastPath(app, infer)
    if token:
        return _TokenGate(served, token)
    return served


class _InferFastPath:
    """POST .../infer straight to its handler: Starlette's router and exception middleware cost more per request
    than a small model's whole session run."""

    def __init__(self, app, infer) -> None:
        self.app, self.infer, self.state = app, infer, app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].endswith("/infer"):
            parts = scope["path"].strip("/").split("/")
            params = None
            if len(parts) == 4 and parts[:2] == ["v2", "models"]:
                params = {"name": parts[2]}
            elif len(parts) == 6 and parts[:2] == ["v2", "models"] and parts[3] == "versions":
                params = {"name": parts[2], "version": parts[4]}
            if params is not None:
                scope["path_params"] = params
                try:
                    response = await self.infer(Request(scope, receive))
                except RequestError as exc:
                    response = _error(exc.status, exc.message)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TokenGate:
    """Every request carries ``Authorization: Bearer TOKEN`` (plain ASGI: no per-request middleware overhead)."""

    def __init__(self, app, token: str) -> None:
        self.app, self.token = app, token.encode()
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            given = given[7:].strip() if given.lower().startswith(b"bearer ") else b""
            if not hmac.compare_digest(given, self.token):
                await _error(401, "this server needs its token: Authorization: Bearer TOKEN")(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _inflate(body: bytes, encoding: str, limit: int) -> bytearray:
    """gzip/deflate, decompressed in steps so a small bomb cannot fill memory."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    out = bytearray()
    try:
        data = body
        while data:
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise RequestError(f"the request body inflates to more than this server's limit of {limit} bytes", 413)
            data = d.unconsumed_tail
        out += d.flush()
    except zlib.error as exc:
        raise RequestError(f"the request body is not valid {encoding}: {exc}") from None
    return out
