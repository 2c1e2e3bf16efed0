"""golive profile: where the time goes, per node and per op type, on the graph ONNX Runtime runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from golive.cli._app import JsonOpt, app, dim_sizes, out, progress, user_errors


@app.command()
def profile(
    target: Annotated[str, typer.Argument(help="A model.onnx, a convert folder, or a tune folder (best and baseline).")],
    *,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Folder for profile.json, overlay.json and the optimized graphs "
            "(default: TARGET/profile, or MODEL-profile beside a model file).",
        ),
    ] = None,
    dim: Annotated[
        list[str],
        typer.Option(
            "--dim", help="Size of a dynamic axis, NAME=SIZE (e.g. sequence=128).", default_factory=list, show_default=False
        ),
    ],
    data: Annotated[str | None, typer.Option(help="Inputs to run (.npz, .npy or ONNX test-data folders).")] = None,
    runs: Annotated[int, typer.Option(help="Timed runs (after 5 warm-up runs).")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Profile a model per node with ONNX Runtime's profiler, on the optimized graph it really runs."""
    with user_errors():
        from golive import api

        sizes = dim_sizes(dim)
        with progress() as on_event:
            report = api.profile(target, output, dim_sizes=sizes, data=data, runs=runs, on_event=on_event)
    if as_json:
        out.print_json(report.model_dump_json())
        return
    from golive.cli._render import render_profile

    render_profile(out, report)
