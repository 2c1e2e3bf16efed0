"""The CLI's shared parts: the Typer app every command module registers on, the consoles, the error and progress
handling. Only typer, rich and golive.spec are imported here, so ``golive --help`` stays fast."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from golive.errors import GoliveError
from golive.spec import help_for as _declared_help

__all__ = ["JsonOpt", "app", "dim_sizes", "err", "help_for", "out", "progress", "split", "state", "user_errors"]


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
state = {"debug": False}


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.", envvar="GOLIVE_DEBUG")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show what each step does.")] = False,
) -> None:
    state["debug"] = debug
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=logging.WARNING, handlers=[RichHandler(console=err, show_path=False)], format="%(message)s")
    logging.getLogger("golive").setLevel(level)


@contextlib.contextmanager
def user_errors():
    """A GoliveError becomes a short message and exit code 2; anything else is a bug and keeps its traceback.

    The CLI owns its process, so the steps run here rather than in a worker process (api.in_this_process).
    """
    from golive.api import in_this_process

    try:
        with in_this_process():
            yield
    except GoliveError as exc:
        if state["debug"]:
            raise
        err.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False)
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}", highlight=False)
        raise typer.Exit(exc.exit_code) from None


@contextlib.contextmanager
def progress():
    """Yield an event handler that shows the current step on stderr."""
    if not err.is_terminal:

        def log_event(event) -> None:
            if event.step != "verify" or event.done in (0, None):
                err.print(f"{event.step}: {event.message}", markup=False, highlight=False)

        yield log_event
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [
        SpinnerColumn(),
        TextColumn("{task.fields[step]}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        TextColumn("{task.description}"),
    ]
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("starting", total=None, step="", left="")

        def show(event) -> None:
            # a tune's done/total are seconds of its budget (auto: as planned): what is left, as it now expects
            left = (
                f"~{max(0, event.total - event.done)} s left"
                if event.step == "tune" and event.total and event.done is not None
                else ""
            )
            progress.update(
                task,
                description=escape(event.message[:80]),
                step=event.step,
                total=event.total,
                completed=event.done or 0,
                left=left,
            )

        yield show


def split(items: list[str]) -> list[str]:
    """Comma-separated or repeated option values, as one list."""
    return [p.strip() for item in items for p in item.split(",") if p.strip()]


def dim_sizes(items: list[str]) -> dict[str, int]:
    """--dim NAME=SIZE options (one size per axis) as a dict, or a user error naming the one that cannot be read."""
    sizes = {}
    for item in items:
        name, _, value = item.partition("=")
        if not value.isdigit():
            raise GoliveError(f"cannot read --dim {item!r}", hint="write --dim sequence=128")
        sizes[name.strip()] = int(value)
    return sizes


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
