"""`golive serve` and `golive export-triton`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from golive.cli._app import app, err, user_errors


@app.command()
def serve(
    models: Annotated[
        list[str], typer.Argument(help="Tune folders, convert folders or .onnx files to serve.", metavar="MODEL...")
    ],
    *,
    name: Annotated[
        list[str],
        typer.Option(
            "--name",
            help="The models' names, in order (default: each folder's or file's name).",
            default_factory=list,
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to bind. Anything but a loopback address needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (Open Inference Protocol v2).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (the same protocol; 0: no gRPC).")] = 8001,
    max_batch: Annotated[int, typer.Option(help="Largest batch the dynamic batcher forms (1: no batching).")] = 32,
    max_delay_ms: Annotated[float, typer.Option(help="Wait up to this long for a fuller batch (0: run what has queued).")] = 0.0,
    max_queue: Annotated[int, typer.Option(help="Requests waiting per model before the server answers 503.")] = 1024,
    token: Annotated[
        str | None,
        typer.Option(
            help="Token every request must carry (Authorization: Bearer T); required off loopback.", envvar="GOLIVE_TOKEN"
        ),
    ] = None,
    spinning: Annotated[
        str,
        typer.Option(
            help="ONNX Runtime's threads spin-waiting between runs: off (default: they would take the "
            "cores the server needs for the next requests) or tuned (as tune chose)."
        ),
    ] = "off",
) -> None:
    """Serve models over the Open Inference Protocol (KServe v2 / Triton clients), HTTP and gRPC, until Ctrl-C."""
    with user_errors():
        from golive.errors import GoliveError
        from golive.serving.server import serve as run

        if spinning not in ("off", "tuned"):
            raise GoliveError(
                f"--spinning {spinning!r}: expected off or tuned", hint="--spinning off (the default) or --spinning tuned"
            )

        def ready(info: dict) -> None:
            print(f"golive serve: {info['http']}" + (f"  gRPC {info['grpc']}" if info["grpc"] else ""), flush=True)
            for model, meta in info["models"].items():
                err.print(
                    f"  {model}: inputs {', '.join(i['name'] + str(i['shape']) for i in meta['inputs'])}; "
                    f"batching {'on' if meta['batching'] else 'off'}"
                    + (f"; {meta['settings'].get('transforms')} | {meta['settings'].get('session')}" if meta["settings"] else ""),
                    highlight=False,
                    markup=False,
                )

        run(
            models,
            names=name,
            host=host,
            port=port,
            grpc_port=grpc_port or None,
            max_batch=max_batch,
            max_delay_ms=max_delay_ms,
            max_queue=max_queue,
            token=token,
            on_ready=ready,
            spinning=False if spinning == "off" else None,
        )


@app.command("export-triton")
def export_triton(
    tune_dir: Annotated[Path, typer.Argument(help="A golive tune output folder (or its best/).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The Triton model repository to write into.")],
    name: Annotated[str | None, typer.Option(help="The model's name in the repository (default: the tune folder's).")] = None,
    max_batch: Annotated[
        int, typer.Option(help="max_batch_size for Triton's dynamic batcher (when the model has a batch axis).")
    ] = 32,
    max_delay_ms: Annotated[float, typer.Option(help="dynamic_batching max_queue_delay, in milliseconds.")] = 0.0,
) -> None:
    """Write a Triton model repository (model.onnx + config.pbtxt with the tuned session settings)."""
    with user_errors():
        from golive.serving.triton import export_triton_parts as run

        folders = run(tune_dir, output, name=name, max_batch=max_batch, max_delay_ms=max_delay_ms)
    for folder in folders:
        err.print(f"wrote {folder}: tritonserver --model-repository {output}", highlight=False)
