"""`golive ui`: the local web app. Defaults and help come from golive.web.settings.Settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from golive.cli._app import app, err, help_for, user_errors
from golive.web.settings import Settings as S

_default = {name: f.default for name, f in S.model_fields.items()}


@app.command()
def ui(
    *,
    host: Annotated[str, typer.Option(help=help_for(S, "host"))] = _default["host"],
    port: Annotated[int, typer.Option(help=help_for(S, "port"))] = _default["port"],
    home: Annotated[Path | None, typer.Option(help=help_for(S, "home"))] = None,
    workers: Annotated[int, typer.Option(help=help_for(S, "workers"))] = _default["workers"],
    allow_root: Annotated[
        list[Path], typer.Option("--allow-root", help=help_for(S, "allow_roots"), default_factory=list, show_default=False)
    ],
    token: Annotated[str | None, typer.Option(help=help_for(S, "token"), envvar="GOLIVE_TOKEN")] = None,
    trust_pickle: Annotated[bool, typer.Option(help=help_for(S, "trust_pickle"))] = _default["trust_pickle"],
    max_upload_mb: Annotated[float, typer.Option(help=help_for(S, "max_upload_mb"))] = _default["max_upload_mb"],
) -> None:
    """Start the local web app (Convert · Perf Test · Model Visualize · Job Monitor) and its workers; prints the URL."""
    with user_errors():
        from pydantic import ValidationError

        from golive.errors import GoliveError, validation_problems
        from golive.jobs import home_dir
        from golive.web import serve

        try:
            settings = S(
                home=home_dir(home),
                host=host,
                port=port,
                workers=workers,
                allow_roots=allow_root,
                token=token or None,
                trust_pickle=trust_pickle,
                max_upload_mb=max_upload_mb,
            )
        except ValidationError as exc:
            raise GoliveError(
                validation_problems(exc, name=lambda loc: "--" + "-".join(map(str, loc)).replace("_", "-"))
            ) from None

        def ready(url: str) -> None:
            print(f"golive ui: {url}", flush=True)
            err.print(f"home {settings.home}; {workers} worker(s); pid {os.getpid()}. Ctrl-C stops it.", highlight=False)

        serve(settings, on_ready=ready)
