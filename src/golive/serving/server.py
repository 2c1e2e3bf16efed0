"""Run the inference server: HTTP (uvicorn, uvloop, httptools) and gRPC in one event loop, until SIGTERM/Ctrl-C.

On SIGTERM the HTTP side stops accepting and finishes the requests it has (uvicorn's graceful shutdown),
then gRPC stops with a grace period; accepted requests are answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from golive._net import check_port, is_loopback
from golive.errors import GoliveError
from golive.serving.grpc_service import add_service
from golive.serving.http import build_app
from golive.serving.metrics import Metrics
from golive.serving.model import load_models

if TYPE_CHECKING:
    import uvicorn

__all__ = ["serve"]

log = logging.getLogger(__name__)


def _server(config: uvicorn.Config) -> uvicorn.Server:
    """uvicorn's server, with the signals handled here: uvicorn would re-raise SIGTERM once it has drained,
    ending the process before the gRPC side has finished its requests."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    return Server(config)


def serve(
    paths: list[str],
    *,
    names: list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    grpc_port: int | None = 8001,
    max_batch: int = 32,
    max_delay_ms: float = 0.0,
    max_queue: int = 1024,
    token: str | None = None,
    max_body_mb: float = 64.0,
    on_ready: Callable[[dict], None] | None = None,
    spinning: bool | None = False,
) -> None:
    """Serve the models at ``paths`` (tune folders, convert folders, .onnx files) until stopped. ``spinning``:
    see ``load_model`` (False: ONNX Runtime's threads do not spin-wait between runs; None: as tuned)."""

    if not paths:
        raise GoliveError("nothing to serve", hint="golive serve runs/mnist-tuned [more models...]")
    if not is_loopback(host) and not token:
        raise GoliveError(
            f"binding {host} lets other machines reach the server: it needs a token",
            hint="pass --token T (or set GOLIVE_TOKEN), or bind 127.0.0.1",
        )
    names = list(names or [])
    if len(names) > len(paths):
        raise GoliveError(f"{len(names)} --name for {len(paths)} model(s)", hint="give at most one --name per model, in order")
    check_port(host, port, "HTTP")
    if grpc_port:
        check_port(host, grpc_port, "gRPC")

    metrics = Metrics()
    models = {}
    for i, path in enumerate(paths):
        for model in load_models(
            path,
            name=names[i] if i < len(names) else None,
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            max_queue=max_queue,
            metrics=metrics,
            spinning=spinning,
        ):
            if model.name in models:
                raise GoliveError(f"two models are named {model.name}", hint="name them apart with --name")
            models[model.name] = model
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # uvicorn[standard] brings it; without it, plain asyncio
        runner = asyncio.run
    runner(
        _main(
            models,
            metrics,
            host=host,
            port=port,
            grpc_port=grpc_port,
            token=token,
            max_body=int(max_body_mb * 2**20),
            on_ready=on_ready,
        )
    )


async def _main(models, metrics, *, host, port, grpc_port, token, max_body, on_ready) -> None:
    import uvicorn

    app = build_app(models, metrics, token=token, max_body=max_body)
    grpc_server = None
    if grpc_port:
        import grpc

        grpc_server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", max_body), ("grpc.max_send_message_length", max_body)]
        )
        add_service(grpc_server, models, metrics, token=token, state=app.state.serving)
        grpc_server.add_insecure_port(f"{host}:{grpc_port}")
        await grpc_server.start()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
        lifespan="off",
    )
    server = _server(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task] = []

    def on_signal() -> None:
        """Stop accepting on both protocols at once, answer what is in flight, then exit 0."""
        app.state.serving["ready"] = False
        if server.should_exit:
            server.force_exit = True  # a second signal: stop now
        server.should_exit = True
        if grpc_server is not None and not stopping:
            stopping.append(loop.create_task(grpc_server.stop(grace=30)))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.02)
        if server.started and on_ready:
            bound = server.servers[0].sockets[0].getsockname()[1] if server.servers else port
            shown = f"[{host}]" if ":" in host else host
            on_ready(
                {
                    "http": f"http://{shown}:{bound}",
                    "grpc": f"{shown}:{grpc_port}" if grpc_port else None,
                    "models": {
                        name: {"batching": m.batchable, "inputs": [i.to_json() for i in m.inputs], "settings": m.settings}
                        for name, m in models.items()
                    },
                }
            )

    task = asyncio.create_task(announce())
    try:
        await server.serve()  # SIGTERM / Ctrl-C: stop accepting, finish the requests in flight
    finally:
        task.cancel()
        if stopping:
            await stopping[0]
        elif grpc_server is not None:
            await grpc_server.stop(grace=10)
        for model in models.values():
            model.close()
        state = app.state.serving
        log.warning("stopped: answered %d of the %d HTTP inference requests it accepted", state["answered"], state["accepted"])
