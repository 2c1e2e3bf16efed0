"""A job's own process: runs the whole job (golive.steps.run_job) and returns a short summary for the store.

Started by a worker pool through golive._worker, as the leader of its own process group, with its output
going to the job's log file. Events go to the run folder's events.jsonl and, as log records, to the log.
"""

from __future__ import annotations

import logging
from typing import Any

from golive.events import Event, StepContext
from golive.spec import JobSpec
from golive.steps import run_job

__all__ = ["job_entry", "summarize"]

progress = logging.getLogger("golive.jobs.progress")


def summarize(result) -> dict[str, Any]:
    """What the job monitor shows without opening the run folder: the figures that say how it went."""
    record = result.record
    summary: dict[str, Any] = {
        "framework": record.framework,
        "exporter": record.exporter,
        "passed": result.passed,
        "skipped": ["convert"] if result.skipped else [],
    }
    if result.verification is not None:
        summary["max_abs"] = {o.name: o.max_abs for o in result.verification.outputs}
    if result.tuning is not None:
        reports = result.tuning.reports  # a model tuned as parts: each part's best; the figures are one call of each
        first = next(iter(reports.values()))

        def total(figures) -> float | None:
            values = [figures(r).get("p50_ms") for r in reports.values()]
            return None if None in values else sum(values)

        summary.update(
            {
                "tune_dir": str(result.tuning.output_dir),
                "speedup": result.tuning.speedup,
                "objective": first.objective,
                "best": "; ".join(f"{n}: {r.best.label()}" for n, r in reports.items())
                if len(reports) > 1
                else first.best.label(),
                "best_p50_ms": total(lambda r: r.best.figures),
                "baseline_p50_ms": total(lambda r: r.baseline.figures),
            }
        )
        if result.tuning.skipped:
            summary["skipped"].append("tune")
    return summary


def job_entry(ctx: StepContext, job: dict) -> dict[str, Any]:

    forward = ctx.on_event

    def log_line(event: Event) -> None:  # the job's log shows its progress as readable lines
        progress.info("%s: %s%s", event.step, event.message, f" ({event.done}/{event.total})" if event.total else "")
        if forward:
            forward(event)

    ctx.on_event = log_line
    result = run_job(JobSpec.model_validate(job), ctx)
    return {"summary": summarize(result), "passed": result.passed}
