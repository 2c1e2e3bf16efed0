"""What each pipeline step does inside its pod: a golive step job function on run folders given as artifact paths.

These are plain functions (the KFP components in golive.pipelines.pipeline only call them), so they run and
are tested without Kubeflow. A component owns its process, so the steps run in place; progress goes to the
step's log, which the KFP UI shows.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

from golive import api
from golive.errors import GoliveError
from golive.events import StepContext
from golive.spec import JobSpec
from golive.steps import convert_step, tune_step
from golive.steps.tune import load_tune_result
from golive.tuning.report import render_html

__all__ = ["convert_item", "rank_html", "report_html", "tune_item"]

log = logging.getLogger("golive.pipeline")


def _context():

    def show(event) -> None:
        progress = f" ({event.done}/{event.total})" if event.total else ""
        print(f"{event.step}: {event.message}{progress}", flush=True)

    return StepContext(on_event=show)


def _item(item: str) -> tuple[str, Any]:

    data = json.loads(item)
    return data["name"], JobSpec.model_validate(data["job"])


def convert_item(item: str, model_dir: str) -> dict[str, Any]:
    """Convert (and verify) one item's model into ``model_dir``; fails when verification fails.

    Returns the figures the step logs as KFP metrics and artifact metadata."""

    name, job = _item(item)
    job.output_dir = str(Path(model_dir).absolute())
    with api.in_this_process():
        result = convert_step(job, _context())
    if result.passed is False:
        raise GoliveError(
            f"{name}: the ONNX model does not compute what the source computes",
            hint="see the verify table in golive.json, in the step's model artifact",
        )
    metrics: dict[str, Any] = {"verified": 1.0 if result.passed else 0.0}
    if result.verification is not None:
        metrics["max_abs_error"] = max((o.max_abs for o in result.verification.outputs), default=0.0)
    return {
        "name": name,
        "metrics": metrics,
        "metadata": {
            "framework": result.record.framework,
            "exporter": result.record.exporter,
            "opset": result.record.opset.get("ai.onnx", 0),
            "item": name,
        },
    }


def tune_item(item: str, model_dir: str, tuned_dir: str) -> dict[str, Any]:
    """Tune the converted model of ``model_dir`` into ``tuned_dir`` (best/, report.json, report.html)."""

    name, job = _item(item)
    with api.in_this_process():
        result = tune_step(model_dir, str(Path(tuned_dir).absolute()), job.tune, job.verify, _context())
    reports = result.reports
    parts = result.report is None  # a model tuned as parts: one call of each part, and each part's own figures
    objective = next(iter(reports.values())).objective

    def total(pick) -> float | None:
        values = [pick(r) for r in reports.values()]
        return None if any(v is None for v in values) else sum(values)

    metrics: dict[str, Any] = {
        "p50_ms": total(lambda r: r.best.figures.get("p50_ms")),
        "p99_ms": total(lambda r: r.best.figures.get("p99_ms")),
        "baseline_p50_ms": total(lambda r: r.baseline.figures.get("p50_ms")),
        "speedup": result.speedup,
        "min_cosine": min((r.best.min_cosine if r.best.min_cosine is not None else 1.0) for r in reports.values()),
    }
    if objective == "throughput" and not parts:
        metrics["items_per_s"] = result.best.figures.get("throughput")
    if not parts and result.report is not None and result.report.speedup_over_source is not None:
        metrics["speedup_over_source"] = result.report.speedup_over_source
    for part, r in reports.items() if parts else ():
        metrics[f"{part}_p50_ms"] = r.best.figures.get("p50_ms")
        metrics[f"{part}_speedup"] = r.speedup
    metrics = {k: float(v) for k, v in metrics.items() if v is not None}
    best = "; ".join(f"{part}: {r.best.label()}" for part, r in reports.items()) if parts else result.best.label()
    return {"name": name, "objective": objective, "best": best, "metrics": metrics, "summary": result.summary()}


def report_html(tuned_dir: str) -> str:
    """The tune report of one item (each part's, for a model tuned as parts), as the KFP UI shows it."""

    result = load_tune_result(Path(tuned_dir))
    return render_html(result.report if result.report is not None else result.reports)


def rank_html(summaries: list[str | dict[str, Any]], title: str = "golive pipeline") -> str:
    """Every item's tuned result in one table, fastest first (per objective)."""
    rows = [json.loads(s) if isinstance(s, str) else s for s in summaries]

    def key(r: dict[str, Any]):
        m = r["metrics"]
        return (r["objective"], -m.get("items_per_s", 0.0) if r["objective"] == "throughput" else m.get("p50_ms", float("inf")))

    body = []
    for rank, r in enumerate(sorted(rows, key=key), 1):
        m = r["metrics"]
        cells = [
            str(rank),
            r["name"],
            r["objective"],
            r["best"],
            f"{m.get('p50_ms', 0):.3f}",
            f"{m.get('p99_ms', 0):.3f}",
            f"{m.get('items_per_s', 0):.1f}" if "items_per_s" in m else "-",
            f"{m.get('speedup', 0):.2f}×",
            f"{m['speedup_over_source']:.2f}×" if "speedup_over_source" in m else "-",
            f"{m.get('min_cosine', 1):.5f}",
        ]
        body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}
th{{background:#eee}}</style></head><body><h1>{html.escape(title)}: {len(rows)} tuned model(s)</h1>
<table id="ranking"><tr><th>#</th><th>item</th><th>objective</th><th>best configuration</th><th>p50 ms</th><th>p99 ms</th>
<th>items/s</th><th>speed-up over ORT default</th><th>speed-up over source</th><th>min cosine</th></tr>
{"".join(body)}</table></body></html>
"""
