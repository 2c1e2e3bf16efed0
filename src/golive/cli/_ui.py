"""`golive ui`: the local web app."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from golive.cli import _user_errors, app, err


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="Address to bind. Anything but a loopback address needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8800,
    home: Annotated[Optional[Path], typer.Option(help="golive home: job store, uploads and run folders (default: $GOLIVE_HOME or ~/.golive).")] = None,
    workers: Annotated[int, typer.Option(help="Jobs run at once by this server (0: none; a separate golive worker runs them).")] = 1,
    allow_root: Annotated[list[Path], typer.Option("--allow-root", help="A folder whose models and data the pages may name by path (repeat for several). Without one, models are uploaded.")] = [],
    token: Annotated[Optional[str], typer.Option(help="Token every request must carry (default: $GOLIVE_TOKEN); required off loopback.", envvar="GOLIVE_TOKEN")] = None,
    trust_pickle: Annotated[bool, typer.Option(help="Accept pickled models and code (custom ops, import paths) from the pages. Only when you trust every user of this server.")] = False,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MB.")] = 2048.0,
) -> None:
    """Start the local web app (Convert · Perf Test · Model Visualize · Job Monitor) and its workers; prints the URL."""
    with _user_errors():
        from golive.jobs import home_dir
        from golive.web import Settings, serve

        settings = Settings(home=home_dir(home), host=host, port=port, workers=workers, allow_roots=allow_root,
                            token=token or None, trust_pickle=trust_pickle, max_upload_mb=max_upload_mb)

        def ready(url: str) -> None:
            print(f"golive ui: {url}", flush=True)
            err.print(f"home {settings.home}; {workers} worker(s); pid {os.getpid()}. Ctrl-C stops it.", highlight=False)

        serve(settings, on_ready=ready)
