"""The golive command line: parses flags into api calls and renders their results; no logic of its own.

Only typer, rich and golive.spec are imported here, so ``golive --help`` stays fast; the api and
the frameworks behind it load when a command runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from golive.errors import GoliveError
from golive.spec import ConvertOptions as C
from golive.spec import TuneOptions as T
from golive.spec import VerifyOptions as V
from golive.spec import help_for as _declared_help

__all__ = ["app", "main"]

def help_for(model, field: str) -> str:
    """The help declared on the spec, escaped so that rich shows [DIM,...] as written."""
    return escape(_declared_help(model, field))


app = typer.Typer(
    name="golive",
    help="Take a trained model to production on ONNX Runtime: convert, verify, tune, inspect.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
out = Console()
if not out.is_terminal and "COLUMNS" not in os.environ:
    out = Console(width=120)  # logs and pipes: do not squeeze tables to 80 columns
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.", envvar="GOLIVE_DEBUG")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show what each step does.")] = False,
) -> None:
    _state["debug"] = debug
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err, show_path=False)], format="%(message)s")
    logging.getLogger("golive").setLevel(level)


@contextlib.contextmanager
def _user_errors():
    """A GoliveError becomes a short message and exit code 2; anything else is a bug and keeps its traceback.

    The CLI owns its process, so the steps run here rather than in a worker process (api.in_this_process).
    """
    from golive.api import in_this_process

    try:
        with in_this_process():
            yield
    except GoliveError as exc:
        if _state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


@contextlib.contextmanager
def _progress():
    """Yield an event handler that shows the current step on stderr."""
    if not err.is_terminal:
        def log_event(event) -> None:
            if event.step != "verify" or event.done in (0, None):
                err.print(f"{event.step}: {event.message}", markup=False, highlight=False)
        yield log_event
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [SpinnerColumn(), TextColumn("{task.fields[step]}"), BarColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}")]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("starting", total=None, step="")

        def show(event) -> None:
            progress.update(task, description=escape(event.message[:80]), step=event.step,
                            total=event.total, completed=event.done or 0)
        yield show


def _tolerances(items: list[str], what: str) -> tuple[float | None, dict[str, float]]:
    glob, per = None, {}
    for item in items:
        name, eq, value = item.rpartition("=")
        try:
            number = float(value)
        except ValueError:
            raise GoliveError(f"cannot read --{what} {item!r}", hint=f"write --{what} 1e-4 or --{what} OUTPUT=1e-4") from None
        if eq:
            per[name] = number
        else:
            glob = number
    return glob, per


def _verify_options(rtol: list[str], atol: list[str], dims: list[str], **rest) -> dict:
    from golive.tensors import parse_dim_sizes

    r, r_per = _tolerances(rtol, "rtol")
    a, a_per = _tolerances(atol, "atol")
    per = {n: {"rtol": r_per.get(n), "atol": a_per.get(n)} for n in set(r_per) | set(a_per)}
    return {"rtol": r, "atol": a, "per_output": per, "dim_sizes": parse_dim_sizes(dims), **rest}


def _show_convert(result, as_json: bool) -> None:
    """Print a convert result (and its tuning, for a job that tuned); exit 1 when its verification failed."""
    if as_json:
        info = result.record.model_dump(mode="json")
        info["skipped"] = result.skipped
        if result.tuning is not None:
            info["tuning"] = {**result.tuning.report.model_dump(mode="json"), "skipped": result.tuning.skipped}
        out.print_json(json.dumps(info, default=str))
    else:
        from golive.cli._render import render_convert, render_tune

        render_convert(out, result)
        if result.tuning is not None:
            render_tune(out, result.tuning)
    raise typer.Exit(0 if result.passed in (True, None) else 1)


def _split(items: list[str]) -> list[str]:
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


RtolOpt = Annotated[list[str], typer.Option("--rtol", help=help_for(V, "rtol") + " NAME=X sets one output.")]
AtolOpt = Annotated[list[str], typer.Option("--atol", help=help_for(V, "atol") + " NAME=Y sets one output.")]
DimOpt = Annotated[list[str], typer.Option("--dim", help=help_for(V, "dim_sizes"))]
CustomOpsOpt = Annotated[list[str], typer.Option("--custom-ops", help=help_for(V, "custom_ops") + " Repeat for several.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


@app.command()
def convert(
    source: Annotated[str, typer.Argument(help="Model file, folder, import path (pkg.module:Net, file.py:Net) or pkg:PACKAGE/path.", metavar="SOURCE")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder for model.onnx and golive.json.")],
    framework: Annotated[Optional[str], typer.Option(help=help_for(C, "framework"))] = None,
    input: Annotated[list[str], typer.Option("--input", "-i", help=help_for(C, "inputs"))] = [],
    dynamic: Annotated[list[str], typer.Option(help=help_for(C, "dynamic"))] = [],
    output_names: Annotated[list[str], typer.Option(help=help_for(C, "output_names") + " Comma-separated or repeated.")] = [],
    opset: Annotated[Optional[int], typer.Option(help=help_for(C, "opset"))] = None,
    exporter: Annotated[str, typer.Option(help=help_for(C, "exporter"))] = "auto",
    signature: Annotated[Optional[str], typer.Option(help=help_for(C, "signature"))] = None,
    custom_translation: Annotated[list[str], typer.Option(help=help_for(C, "custom_translation"))] = [],
    custom_ops: CustomOpsOpt = [],
    imports: Annotated[list[str], typer.Option("--import", help=help_for(C, "imports"))] = [],
    constant_folding: Annotated[bool, typer.Option(help=help_for(C, "constant_folding"))] = True,
    weights: Annotated[Optional[str], typer.Option(help=help_for(C, "weights"))] = None,
    trust_pickle: Annotated[bool, typer.Option(help=help_for(C, "trust_pickle"))] = False,
    zipmap: Annotated[bool, typer.Option(help=help_for(C, "zipmap"))] = False,
    int_range: Annotated[list[str], typer.Option(help=help_for(C, "int_ranges"))] = [],
    data: Annotated[Optional[str], typer.Option(help=help_for(C, "data"))] = None,
    verify: Annotated[bool, typer.Option(help=help_for(C, "verify"))] = True,
    rtol: RtolOpt = [],
    atol: AtolOpt = [],
    dim: DimOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Convert a model to ONNX, verify it against the source, and write OUTPUT/model.onnx + golive.json."""
    with _user_errors():
        from golive import api

        vopts = _verify_options(rtol, atol, dim)
        with _progress() as on_event:
            result = api.convert(
                source, output, framework=framework, inputs=input, dynamic=dynamic, output_names=_split(output_names),
                opset=opset, exporter=exporter, signature=signature, custom_translation=custom_translation,
                custom_ops=custom_ops, imports=imports, constant_folding=constant_folding, weights=weights,
                trust_pickle=trust_pickle, zipmap=zipmap, int_ranges=int_range, data=data, verify=verify,
                verify_options=vopts, on_event=on_event)
    _show_convert(result, as_json)


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="A golive convert output folder, or an .onnx file.")],
    data: Annotated[Optional[str], typer.Option(help=help_for(V, "data"))] = None,
    rtol: RtolOpt = [],
    atol: AtolOpt = [],
    dim: DimOpt = [],
    batches: Annotated[int, typer.Option(help=help_for(V, "batches"))] = 3,
    seed: Annotated[int, typer.Option(help=help_for(V, "seed"))] = 0,
    custom_ops: CustomOpsOpt = [],
    source: Annotated[Optional[str], typer.Option(
        help="Verify against this source model instead of the one golive.json records (a run folder that travelled without it).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare ONNX Runtime with the source model (or stored expected outputs). Exit 0 pass, 1 fail, 2 bad input."""
    with _user_errors():
        from golive import api

        with _progress() as on_event:
            report = api.verify(target, source=source, on_event=on_event,
                                **_verify_options(rtol, atol, dim, data=data, batches=batches, seed=seed,
                                                  custom_ops=custom_ops))
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        from golive.cli._render import render_verify

        render_verify(out, report)
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def tune(
    target: Annotated[str, typer.Argument(help="A golive convert output folder, or an .onnx file.", metavar="MODEL_OR_DIR")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for best/, report.json and report.html.")],
    budget: Annotated[float, typer.Option(help=help_for(T, "budget"))] = 120.0,
    providers: Annotated[list[str], typer.Option(help=help_for(T, "providers"))] = [],
    objective: Annotated[str, typer.Option(help=help_for(T, "objective"))] = "latency",
    data: Annotated[Optional[str], typer.Option(help=help_for(T, "data"))] = None,
    metric: Annotated[list[str], typer.Option(help=help_for(T, "metrics") + " Each one given replaces that metric's default.")] = [],
    transforms: Annotated[list[str], typer.Option(help=help_for(T, "transforms") + " Comma-separated or repeated; none: session settings only.")] = [],
    dim: Annotated[list[str], typer.Option("--dim", help=help_for(T, "dim_sizes"))] = [],
    concurrency: Annotated[int, typer.Option(help=help_for(T, "concurrency"))] = 4,
    max_batch: Annotated[int, typer.Option(help=help_for(T, "max_batch"))] = 32,
    fixed_shape: Annotated[bool, typer.Option(help=help_for(T, "fixed_shape"))] = False,
    custom_ops: CustomOpsOpt = [],
    rtol: RtolOpt = [],
    atol: AtolOpt = [],
    as_json: JsonOpt = False,
) -> None:
    """Find the fastest ONNX Runtime configuration whose outputs still pass the accuracy gate."""
    with _user_errors():
        from golive import api

        metrics = {}
        for item in metric:
            name, _, value = item.partition("=")
            try:
                metrics[name.strip()] = float(value)
            except ValueError:
                raise GoliveError(f"cannot read --metric {item!r}", hint="write --metric cosine=0.999 (or label=0.99, max_abs=0.01)") from None
        sizes = {}
        for item in dim:
            name, _, value = item.partition("=")
            if not value.isdigit():
                raise GoliveError(f"cannot read --dim {item!r}", hint="write --dim sequence=128")
            sizes[name.strip()] = int(value)
        chosen = _split(transforms)
        options = {"budget": budget, "providers": _split(providers), "objective": objective, "data": data,
                   "transforms": ([] if chosen == ["none"] else chosen) or None, "dim_sizes": sizes,
                   "concurrency": concurrency, "max_batch": max_batch, "fixed_shape": fixed_shape, "metrics": {**T().metrics, **metrics},
                   "custom_ops": custom_ops}
        with _progress() as on_event:
            result = api.tune(target, output, verify_options=_verify_options(rtol, atol, []), on_event=on_event, **options)
    if as_json:
        out.print_json(result.report.model_dump_json())
    else:
        from golive.cli._render import render_tune

        render_tune(out, result)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="An .onnx file, or a golive output folder.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model's inputs and outputs, opsets, operators, parameters and metadata."""
    with _user_errors():
        from golive import api

        summary = api.inspect(model)
    if as_json:
        out.print_json(summary.model_dump_json())
    else:
        from golive.cli._render import render_summary

        render_summary(out, summary)


@app.command()
def run(
    job: Annotated[Path, typer.Argument(help="A job file (YAML or JSON), e.g. examples/quickstart.yaml or OUT_DIR/job.json; "
                                             "or a saved step: TUNE_DIR/tune.json, OUT_DIR/verify.json.")],
    as_json: JsonOpt = False,
) -> None:
    """Run a whole job from its JobSpec file: convert → verify → tune (when the job has a tune section).

    A step whose output is complete and whose spec is unchanged is skipped, so a rerun resumes."""
    with _user_errors():
        from golive import api

        with _progress() as on_event:
            result = api.run(job, on_event=on_event)
    from golive.tuning import TuneResult
    from golive.verification import VerifyReport

    if isinstance(result, VerifyReport):
        if as_json:
            out.print_json(result.model_dump_json())
        else:
            from golive.cli._render import render_verify

            render_verify(out, result)
        raise typer.Exit(0 if result.passed else 1)
    if isinstance(result, TuneResult):
        if as_json:
            out.print_json(json.dumps({**result.report.model_dump(mode="json"), "skipped": result.skipped}))
        else:
            from golive.cli._render import render_tune

            render_tune(out, result)
        return
    _show_convert(result, as_json)


from golive.cli import _jobs  # noqa: E402,F401  (registers `golive jobs ...` and `golive worker`)
from golive.cli import _ui  # noqa: E402,F401  (registers `golive ui`)
from golive.cli import _pipeline  # noqa: E402,F401  (registers `golive pipeline ...`)
from golive.cli import _serve  # noqa: E402,F401  (registers `golive serve` and `golive export-triton`)


def main() -> None:
    if os.environ.get("GOLIVE_DEBUG") == "1":
        _state["debug"] = True
    sys.exit(app())
