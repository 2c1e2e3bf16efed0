"""Run the web app: uvicorn on the bound address, and a worker pool in a thread beside it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from golive._net import check_port, is_loopback
from golive.errors import GoliveError
from golive.web.settings import Settings

__all__ = ["Settings", "check_settings", "serve"]

log = logging.getLogger(__name__)


def check_settings(settings) -> None:
    """Refuse what would be unsafe or cannot work, before anything starts."""
    if not is_loopback(settings.host) and not settings.token:
        raise GoliveError(
            f"binding {settings.host} lets other machines reach golive ui: it needs a token",
            hint="pass --token T (or set GOLIVE_TOKEN), or bind 127.0.0.1",
        )
    for root in settings.allow_roots:
        if not root.is_dir():
            raise GoliveError(f"--allow-root {root} is not a folder")
    check_port(settings.host, settings.port)


def url_of(settings) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"http://{host}:{settings.port}/" + (f"?token={settings.token}" if settings.token else "")


def serve(settings, *, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM); then stop the running jobs (they become interrupted, and
    Retry resumes them)."""
    import uvicorn

    from golive.jobs.pool import WorkerPool
    from golive.web.app import create_app

    check_settings(settings)
    app = create_app(settings)
    pools: list[WorkerPool] = []
    pool_ready = threading.Event()

    def run_pool() -> None:
        try:
            pool = WorkerPool(settings.home, settings.workers)
            pools.append(pool)
        finally:
            pool_ready.set()
        pool.run()

    worker = None
    if settings.workers:
        worker = threading.Thread(target=run_pool, name="golive-ui-workers", daemon=True)
        worker.start()
        pool_ready.wait()
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="warning", access_log=False, timeout_graceful_shutdown=3
    )
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        if server.started and on_ready:
            on_ready(url_of(settings))

    threading.Thread(target=announce, daemon=True).start()
    try:
        server.run()
    finally:
        for pool in pools:
            pool.stop()
        if worker is not None:
            worker.join(timeout=30)
