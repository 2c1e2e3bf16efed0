"""`golive jobs ...` and `golive worker`: the job queue from the terminal."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from golive.cli._app import JsonOpt, app, err, out, split, user_errors
from golive.errors import GoliveError

jobs_app = typer.Typer(
    help="The local job queue: submit jobs, watch them, cancel or retry them. `golive worker` runs them.", no_args_is_help=True
)
app.add_typer(jobs_app, name="jobs")
HomeOpt = Annotated[
    Path | None, typer.Option("--home", help="golive home holding the job store (default: $GOLIVE_HOME or ~/.golive).")
]


def _when(ts: float | None) -> str:
    import datetime as dt

    return "-" if ts is None else dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _seconds(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f} s" if x < 120 else f"{x / 60:.1f} min"


@jobs_app.command("submit")
def jobs_submit(
    job: Annotated[Path, typer.Argument(help="A job file (YAML or JSON); relative paths in it are taken from its folder.")],
    home: HomeOpt = None,
) -> None:
    """Queue a job; prints its id. A worker (golive worker) runs it."""
    with user_errors():
        from golive import jobs

        out.print(jobs.submit(job, home=home), highlight=False)


@jobs_app.command("list")
def jobs_list(
    *,
    home: HomeOpt = None,
    state: Annotated[
        list[str],
        typer.Option("--state", help="Only jobs in this state (repeat for several).", default_factory=list, show_default=False),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Every job: state, attempt, times, run folder."""
    with user_errors():
        from golive import jobs

        records = jobs.list(home=home, states=split(state) or None)
    if as_json:
        out.print_json(json.dumps([r.model_dump(mode="json") for r in records]))
        return
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("id", "state", "attempt", "created", "duration", "run folder", "error"):
        table.add_column(col)
    colors = {"succeeded": "green", "failed": "red", "running": "cyan", "cancelled": "yellow", "interrupted": "magenta"}
    for r in records:
        table.add_row(
            r.id,
            f"[{colors.get(r.state, 'white')}]{r.state}[/]",
            str(r.attempt),
            _when(r.created),
            _seconds(r.duration),
            escape(r.run_dir),
            escape((r.error or "")[:70]),
        )
    out.print(table)


@jobs_app.command("show")
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")], home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """One job: its record, attempts and summary."""
    with user_errors():
        from golive import jobs

        record = jobs.get(job_id, home=home)
        tries = jobs.attempts(record.id, home=home)
    if as_json:
        data = record.model_dump(mode="json")
        data["attempts"] = [a.model_dump(mode="json") for a in tries]
        out.print_json(json.dumps(data))
        return
    out.print(f"[bold]{record.id}[/]  {record.state}  (attempt {record.attempt})", highlight=False)
    for label, value in (
        ("source", record.spec.source),
        ("run folder", record.run_dir),
        ("log", record.log_path),
        ("created", _when(record.created)),
        ("started", _when(record.started)),
        ("finished", _when(record.finished)),
        ("duration", _seconds(record.duration)),
    ):
        out.print(f"  {label}: {escape(str(value))}", highlight=False)
    if record.error:
        out.print(f"  [red]error:[/] {escape(record.error)}", highlight=False)
    for key, value in record.summary.items():
        out.print(f"  {key}: {escape(str(value))}", highlight=False)
    for a in tries:
        out.print(
            f"  attempt {a.attempt}: {a.state}, {_when(a.started)} → {_when(a.finished)}"
            + (f" ({escape(a.error[:80])})" if a.error else ""),
            highlight=False,
        )


@jobs_app.command("logs")
def jobs_logs(
    job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")],
    home: HomeOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job has finished.")] = False,
) -> None:
    """Print a job's log (everything it printed, and its progress)."""
    import time as _time

    with user_errors():
        from golive import jobs

        record = jobs.get(job_id, home=home)
        path, offset = Path(record.log_path), 0
        while True:
            if path.is_file():
                with open(path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                if chunk:
                    sys.stdout.write(chunk.decode(errors="replace"))
                    sys.stdout.flush()
            if not follow or record.terminal:
                break
            _time.sleep(0.5)
            record = jobs.get(record.id, home=home)


@jobs_app.command("cancel")
def jobs_cancel(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")], home: HomeOpt = None) -> None:
    """Cancel a queued job now, or stop a running one (killed if it does not stop within the grace period)."""
    with user_errors():
        from golive import jobs

        record = jobs.cancel(job_id, home=home)
    out.print(
        f"{record.id}: {'cancelled' if record.state == 'cancelled' else 'cancel requested (its worker stops it)'}",
        highlight=False,
    )


@jobs_app.command("retry")
def jobs_retry(job_id: Annotated[str, typer.Argument(help="Job id (or a unique prefix).")], home: HomeOpt = None) -> None:
    """Queue a failed, cancelled or interrupted job again; it resumes from its finished steps."""
    with user_errors():
        from golive import jobs

        record = jobs.retry(job_id, home=home)
    out.print(f"{record.id}: queued again (attempt {record.attempt + 1} when a worker takes it)", highlight=False)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Jobs run at once, each in its own process.")] = 1,
    home: HomeOpt = None,
    exit_when_idle: Annotated[bool, typer.Option(help="Exit once no job is queued or running.")] = False,
) -> None:
    """Run queued jobs until stopped. Ctrl-C once: finish the running jobs; twice: stop them (interrupted)."""
    with user_errors():
        from golive.jobs import home_dir
        from golive.jobs.pool import WorkerPool, install_signal_handlers

        if concurrency < 1:
            raise GoliveError("--concurrency must be at least 1")
        pool = WorkerPool(home_dir(home), concurrency, exit_when_idle=exit_when_idle)
        install_signal_handlers(pool)
        pool_log = logging.getLogger("golive.jobs.pool")
        if not pool_log.isEnabledFor(logging.INFO):
            pool_log.setLevel(logging.INFO)  # a worker says when it starts and ends each job
        err.print(f"golive worker {os.getpid()}: {concurrency} at a time from {pool.store.path}", highlight=False)
        pool.run()
