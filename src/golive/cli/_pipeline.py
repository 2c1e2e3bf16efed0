"""`golive pipeline ...`: the job as a Kubeflow Pipelines (KFP v2) pipeline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from golive.cli._app import JsonOpt, app, err, out, user_errors
from golive.errors import GoliveError

pipeline_app = typer.Typer(
    help="Kubeflow Pipelines: compile a job into a KFP v2 pipeline, run it here (kfp.local) or submit it.", no_args_is_help=True
)
app.add_typer(pipeline_app, name="pipeline")
ImageOpt = Annotated[
    str | None,
    typer.Option(
        help="The golive image every step runs in (default: the job file's image:, else golive:0.1.0; see the Dockerfile)."
    ),
]


@pipeline_app.command("compile")
def pipeline_compile(
    job: Annotated[Path, typer.Argument(help="A job file: a JobSpec (one model), or models:/targets: for a fan-out.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The pipeline YAML to write.")],
    image: ImageOpt = None,
) -> None:
    """Compile the job into KFP v2 pipeline YAML: convert (with verify) → tune → report, one branch per item."""
    with user_errors():
        from golive.pipelines import compile as compile_pipeline
        from golive.pipelines import load_pipeline_job

        spec = load_pipeline_job(job)
        path = compile_pipeline(job, output, image=image)
    err.print(
        f"wrote {escape(str(path))}: {len(spec.items)} item(s) ({', '.join(i.name for i in spec.items)}), "
        f"{'ParallelFor fan-out, ranked' if spec.fan_out else 'convert → tune → report'}",
        highlight=False,
    )


@pipeline_app.command("run")
def pipeline_run(
    job: Annotated[Path, typer.Argument(help="A job file: a JobSpec (one model), or models:/targets: for a fan-out.")],
    local: Annotated[
        bool, typer.Option("--local", help="Run here with KFP's local runner (each step in a subprocess; no cluster, no Docker).")
    ] = False,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="--local: the pipeline root, where each run's artifacts go.")
    ] = Path("runs/pipelines"),
    host: Annotated[
        str | None, typer.Option(help="The Kubeflow Pipelines endpoint to submit to, e.g. http://localhost:8080.")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="--host: the KFP experiment to file the run under.")] = None,
    image: ImageOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the pipeline: --local here, or --host URL on a Kubeflow Pipelines cluster (prints the run's URL)."""
    with user_errors():
        if local == bool(host):
            raise GoliveError("say where to run it: --local, or --host URL", hint="golive pipeline run job.yaml --local")
        from golive import pipelines

        if host:
            submitted = pipelines.submit(job, host, experiment=experiment, image=image)
            out.print(submitted["url"] if not as_json else json.dumps(submitted), highlight=False)
            return
        if image:
            raise GoliveError("--image is for a cluster: a local run uses this Python environment")
        import contextlib
        import sys

        with contextlib.redirect_stdout(sys.stderr):  # kfp's runner logs each step; stdout keeps the result alone
            result = pipelines.run(job, output)
    if as_json:
        out.print_json(json.dumps(result))
        return
    from rich.table import Table

    table = Table(title=f"pipeline run {Path(result['run']).name}")
    for col in ("item", "best", "p50 ms", "speed-up", "over source", "tuned (best/ inside)"):
        table.add_column(col)
    for name, item in result["items"].items():
        m = item["metrics"]
        table.add_row(
            name,
            item["best"],
            f"{m.get('p50_ms', 0):.3f}",
            f"{m.get('speedup', 0):.2f}×",
            f"{m['speedup_over_source']:.2f}×" if "speedup_over_source" in m else "-",
            item["tuned"],
        )
    out.print(table)
    out.print(f"ranking: {escape(result['ranking'])}", highlight=False)
