"""golive convert, verify, tune, inspect and run: flags into api calls, results rendered; no logic of their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from golive.cli._app import JsonOpt, app, dim_sizes, help_for, out, progress, split, user_errors
from golive.errors import GoliveError
from golive.optimize import TRANSFORMS
from golive.spec import ConvertOptions as C
from golive.spec import TuneOptions as T
from golive.spec import VerifyOptions as V
from golive.spec import default_of

__all__: list[str] = []  # commands registered on the app


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
            tuning = result.tuning.report if result.tuning.report is not None else result.tuning
            info["tuning"] = {**tuning.model_dump(mode="json", exclude={"skipped"}), "skipped": result.tuning.skipped}
        out.print_json(json.dumps(info, default=str))
    else:
        from golive.cli._render import render_convert, render_tune

        render_convert(out, result)
        if result.tuning is not None:
            render_tune(out, result.tuning)
    raise typer.Exit(0 if result.passed in (True, None) else 1)


RtolOpt = Annotated[
    list[str],
    typer.Option("--rtol", help=help_for(V, "rtol") + " NAME=X sets one output.", default_factory=list, show_default=False),
]
AtolOpt = Annotated[
    list[str],
    typer.Option("--atol", help=help_for(V, "atol") + " NAME=Y sets one output.", default_factory=list, show_default=False),
]
DimOpt = Annotated[list[str], typer.Option("--dim", help=help_for(V, "dim_sizes"), default_factory=list, show_default=False)]
CustomOpsOpt = Annotated[
    list[str],
    typer.Option(
        "--custom-ops", help=help_for(V, "custom_ops") + " Repeat for several.", default_factory=list, show_default=False
    ),
]


@app.command()
def convert(
    source: Annotated[
        str,
        typer.Argument(
            help="Model file, folder, import path (pkg.module:Net, file.py:Net) or pkg:PACKAGE/path.", metavar="SOURCE"
        ),
    ],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder for model.onnx and golive.json.")],
    framework: Annotated[str | None, typer.Option(help=help_for(C, "framework"))] = default_of(C, "framework"),
    task: Annotated[str | None, typer.Option(help=help_for(C, "task"))] = default_of(C, "task"),
    cache: Annotated[bool, typer.Option(help=help_for(C, "cache"))] = default_of(C, "cache"),
    input: Annotated[
        list[str], typer.Option("--input", "-i", help=help_for(C, "inputs"), default_factory=list, show_default=False)
    ],
    dynamic: Annotated[list[str], typer.Option(help=help_for(C, "dynamic"), default_factory=list, show_default=False)],
    output_names: Annotated[
        list[str],
        typer.Option(
            help=help_for(C, "output_names") + " Comma-separated or repeated.", default_factory=list, show_default=False
        ),
    ],
    opset: Annotated[int | None, typer.Option(help=help_for(C, "opset"))] = default_of(C, "opset"),
    exporter: Annotated[str, typer.Option(help=help_for(C, "exporter"))] = default_of(C, "exporter"),
    signature: Annotated[str | None, typer.Option(help=help_for(C, "signature"))] = default_of(C, "signature"),
    custom_translation: Annotated[
        list[str], typer.Option(help=help_for(C, "custom_translation"), default_factory=list, show_default=False)
    ],
    custom_ops: CustomOpsOpt,
    imports: Annotated[
        list[str], typer.Option("--import", help=help_for(C, "imports"), default_factory=list, show_default=False)
    ],
    constant_folding: Annotated[bool, typer.Option(help=help_for(C, "constant_folding"))] = default_of(C, "constant_folding"),
    weights: Annotated[str | None, typer.Option(help=help_for(C, "weights"))] = default_of(C, "weights"),
    trust_pickle: Annotated[bool, typer.Option(help=help_for(C, "trust_pickle"))] = default_of(C, "trust_pickle"),
    zipmap: Annotated[bool, typer.Option(help=help_for(C, "zipmap"))] = default_of(C, "zipmap"),
    int_range: Annotated[list[str], typer.Option(help=help_for(C, "int_ranges"), default_factory=list, show_default=False)],
    data: Annotated[str | None, typer.Option(help=help_for(C, "data"))] = default_of(C, "data"),
    verify: Annotated[bool, typer.Option(help=help_for(C, "verify"))] = default_of(C, "verify"),
    rtol: RtolOpt,
    atol: AtolOpt,
    dim: DimOpt,
    new_tokens: Annotated[int, typer.Option(help=help_for(V, "new_tokens"))] = default_of(V, "new_tokens"),
    as_json: JsonOpt = False,
) -> None:
    """Convert a model to ONNX, verify it against the source, and write OUTPUT/model.onnx + golive.json."""
    with user_errors():
        from golive import api

        vopts = _verify_options(rtol, atol, dim, new_tokens=new_tokens)
        with progress() as on_event:
            result = api.convert(
                source,
                output,
                framework=framework,
                task=task,
                cache=cache,
                inputs=input,
                dynamic=dynamic,
                output_names=split(output_names),
                opset=opset,
                exporter=exporter,
                signature=signature,
                custom_translation=custom_translation,
                custom_ops=custom_ops,
                imports=imports,
                constant_folding=constant_folding,
                weights=weights,
                trust_pickle=trust_pickle,
                zipmap=zipmap,
                int_ranges=int_range,
                data=data,
                verify=verify,
                verify_options=vopts,
                on_event=on_event,
            )
    _show_convert(result, as_json)


@app.command()
def verify(
    target: Annotated[str, typer.Argument(help="A golive convert output folder, or an .onnx file.")],
    *,
    data: Annotated[str | None, typer.Option(help=help_for(V, "data"))] = default_of(V, "data"),
    rtol: RtolOpt,
    atol: AtolOpt,
    dim: DimOpt,
    batches: Annotated[int, typer.Option(help=help_for(V, "batches"))] = default_of(V, "batches"),
    seed: Annotated[int, typer.Option(help=help_for(V, "seed"))] = default_of(V, "seed"),
    new_tokens: Annotated[int, typer.Option(help=help_for(V, "new_tokens"))] = default_of(V, "new_tokens"),
    custom_ops: CustomOpsOpt,
    source: Annotated[
        str | None,
        typer.Option(
            help="Verify against this source model instead of the one golive.json records (a run folder that travelled without it)."
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare ONNX Runtime with the source model (or stored expected outputs). Exit 0 pass, 1 fail, 2 bad input."""
    with user_errors():
        from golive import api

        with progress() as on_event:
            report = api.verify(
                target,
                source=source,
                on_event=on_event,
                **_verify_options(
                    rtol, atol, dim, data=data, batches=batches, seed=seed, custom_ops=custom_ops, new_tokens=new_tokens
                ),
            )
    if as_json:
        out.print_json(report.model_dump_json())
    else:
        from golive.cli._render import render_verify

        render_verify(out, report)
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def tune(
    target: Annotated[str, typer.Argument(help="A golive convert output folder, or an .onnx file.", metavar="MODEL_OR_DIR")],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for best/, report.json and report.html.")],
    budget: Annotated[str, typer.Option(help=help_for(T, "budget"), metavar="SECONDS|auto")] = str(default_of(T, "budget")),
    providers: Annotated[list[str], typer.Option(help=help_for(T, "providers"), default_factory=list, show_default=False)],
    objective: Annotated[str, typer.Option(help=help_for(T, "objective"))] = default_of(T, "objective"),
    data: Annotated[str | None, typer.Option(help=help_for(T, "data"))] = default_of(T, "data"),
    metric: Annotated[
        list[str],
        typer.Option(
            help=help_for(T, "metrics") + " Each one given replaces that metric's default.",
            default_factory=list,
            show_default=False,
        ),
    ],
    transforms: Annotated[
        list[str],
        typer.Option(
            help=help_for(T, "transforms")
            + " Comma-separated or repeated; none: session settings only. Names: "
            + ", ".join(TRANSFORMS)
            + ".",
            default_factory=list,
            show_default=False,
        ),
    ],
    dim: Annotated[list[str], typer.Option("--dim", help=help_for(T, "dim_sizes"), default_factory=list, show_default=False)],
    concurrency: Annotated[int, typer.Option(help=help_for(T, "concurrency"))] = default_of(T, "concurrency"),
    max_batch: Annotated[int, typer.Option(help=help_for(T, "max_batch"))] = default_of(T, "max_batch"),
    fixed_shape: Annotated[bool, typer.Option(help=help_for(T, "fixed_shape"))] = default_of(T, "fixed_shape"),
    time_source: Annotated[bool, typer.Option(help=help_for(T, "time_source"))] = default_of(T, "time_source"),
    session_search: Annotated[bool, typer.Option(help=help_for(T, "session_search"))] = default_of(T, "session_search"),
    fallback: Annotated[bool, typer.Option(help=help_for(T, "cpu_fallback"))] = default_of(T, "cpu_fallback"),
    custom_ops: CustomOpsOpt,
    rtol: RtolOpt,
    atol: AtolOpt,
    as_json: JsonOpt = False,
) -> None:
    """Find the fastest ONNX Runtime configuration whose outputs still pass the accuracy gate."""
    with user_errors():
        from golive import api

        metrics = {}
        for item in metric:
            name, _, value = item.partition("=")
            try:
                metrics[name.strip()] = float(value)
            except ValueError:
                raise GoliveError(
                    f"cannot read --metric {item!r}", hint="write --metric cosine=0.999 (or label=0.99, max_abs=0.01)"
                ) from None
        sizes = dim_sizes(dim)
        chosen = split(transforms)
        options: dict[str, Any] = {
            "budget": budget,
            "providers": split(providers),
            "objective": objective,
            "data": data,
            "transforms": None if not chosen else [] if chosen == ["none"] else chosen,
            "dim_sizes": sizes,
            "concurrency": concurrency,
            "max_batch": max_batch,
            "fixed_shape": fixed_shape,
            "time_source": time_source,
            "session_search": session_search,
            "cpu_fallback": fallback,
            "metrics": {**T().metrics, **metrics},
            "custom_ops": custom_ops,
        }
        with progress() as on_event:
            result = api.tune(target, output, verify_options=_verify_options(rtol, atol, []), on_event=on_event, **options)
    if as_json:
        out.print_json(result.model_dump_json(exclude={"skipped"}) if result.report is None else result.report.model_dump_json())
    else:
        from golive.cli._render import render_tune

        render_tune(out, result)


@app.command()
def inspect(
    model: Annotated[str, typer.Argument(help="An .onnx file, or a golive output folder.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a model's inputs and outputs, opsets, operators, parameters and metadata."""
    with user_errors():
        from golive import api

        summary = api.inspect(model)
    if as_json:
        out.print_json(summary.model_dump_json())
    else:
        from golive.cli._render import render_summary

        render_summary(out, summary)


@app.command()
def run(
    job: Annotated[
        Path,
        typer.Argument(
            help="A job file (YAML or JSON), e.g. examples/quickstart.yaml or OUT_DIR/job.json; "
            "or a saved step: TUNE_DIR/tune.json, OUT_DIR/verify.json."
        ),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Run a whole job from its JobSpec file: convert → verify → tune (when the job has a tune section).

    A step whose output is complete and whose spec is unchanged is skipped, so a rerun resumes."""
    with user_errors():
        from golive import api

        with progress() as on_event:
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
            value = result.model_dump(mode="json") if result.report is None else result.report.model_dump(mode="json")
            out.print_json(json.dumps({**value, "skipped": result.skipped}))
        else:
            from golive.cli._render import render_tune

            render_tune(out, result)
        return
    _show_convert(result, as_json)
