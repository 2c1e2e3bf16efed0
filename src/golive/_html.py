"""HTML tables for notebooks: what each result's ``_repr_html_`` shows (escaped; no scripts, no external files)."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any, Iterable

__all__ = ["convert_html", "verify_html", "tune_html", "summary_html", "job_html", "jobs_html", "table"]

_STYLE = ("<style>.golive td,.golive th{border:1px solid #ccc;padding:2px 6px;text-align:left;font-size:12px}"
          ".golive table{border-collapse:collapse;margin:4px 0}.golive th{background:#f0f0f8}"
          ".golive .ok{color:#1b5e20;font-weight:bold}.golive .bad{color:#b71c1c;font-weight:bold}</style>")


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], attrs: str = "") -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table {attrs}><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _box(title: str, body: str) -> str:
    return f"{_STYLE}<div class='golive'><b>{title}</b>{body}</div>"


def _verdict(passed: bool | None) -> str:
    if passed is None:
        return "<span>not verified</span>"
    return "<span class='ok'>passed</span>" if passed else "<span class='bad'>FAILED</span>"


def verify_html(report) -> str:
    rows = [(o.name, o.dtype, o.rtol, o.atol, o.max_abs, o.max_rel, f"{100 * o.mismatch_share:.2f}%",
             o.label_agreement, "passed" if o.passed else "FAILED") for o in report.outputs]
    runs = [(r.label, "passed" if r.passed else "FAILED", r.error or "") for r in report.runs]
    notes = "".join(f"<li>{escape(n)}</li>" for n in report.notes)
    return _box(f"verify: {_verdict(report.passed)} against the {escape(report.reference)}",
                table(["output", "dtype", "rtol", "atol", "max abs", "max rel", "mismatch", "label agreement", "verdict"], rows,
                      "class='verify-outputs'")
                + table(["run", "verdict", "error"], runs, "class='verify-runs'") + (f"<ul>{notes}</ul>" if notes else ""))


def convert_html(result) -> str:
    rec = result.record
    io = [("input", t.name, t.dtype, t.shape) for t in rec.inputs] + [("output", t.name, t.dtype, t.shape) for t in rec.outputs]
    head = (f"convert: {escape(rec.framework)} → {escape(str(result.model_path))} with the {escape(rec.exporter)} exporter, "
            f"opset {escape(', '.join(f'{k} {v}' for k, v in rec.opset.items()))}; {_verdict(result.passed)}"
            + (" (skipped: already done with this spec)" if result.skipped else ""))
    body = table(["", "name", "dtype", "shape"], io, "class='convert-io'")
    if rec.fallback_reason:
        body += f"<p>{escape(rec.fallback_reason)}</p>"
    if result.verification is not None:
        body += verify_html(result.verification)
    if result.tuning is not None:
        body += tune_html(result.tuning)
    return _box(head, body)


def tune_html(result) -> str:
    from golive.tuning.report import render_html_fragment

    return _box(f"tune: {escape(str(result.output_dir))}" + (" (skipped: already done with this spec)" if result.skipped else ""),
                render_html_fragment(result.report))


def summary_html(s) -> str:
    io = [("input", t.name, t.dtype, t.shape, s.origins.get(t.name, "")) for t in s.inputs] + \
         [("output", t.name, t.dtype, t.shape, s.origins.get(t.name, "")) for t in s.outputs]
    facts = [("nodes", s.node_count + s.subgraph_node_count), ("parameters", f"{s.parameters:,}"),
             ("size", f"{(s.file_bytes + s.external_bytes) / 2**20:.2f} MB"), ("IR version", s.ir_version),
             ("producer", s.producer), ("opsets", ", ".join(f"{k} {v}" for k, v in s.opsets.items()))]
    if s.custom_ops:
        facts.append(("custom-domain ops", "; ".join(f"{d}: {', '.join(ops)}" for d, ops in s.custom_ops.items())))
    return _box(f"model: {escape(s.path)}", table(["", "name", "dtype", "shape", "from"], io, "class='summary-io'")
                + table(["", ""], facts, "class='summary-facts'")
                + table(["op", "count"], list(s.op_types.items()), "class='summary-ops'"))


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _job_row(j) -> tuple:
    duration = f"{j.duration:.1f} s" if j.duration is not None else ""
    result = j.summary.get("best") and f"{j.summary.get('speedup', 0):.2f}× · {j.summary['best']}" or j.summary.get("framework", "")
    return (j.id, j.name, j.state, j.attempt, _when(j.created), duration, result, j.error or "")


_JOB_HEADERS = ["id", "name", "state", "attempt", "created", "duration", "result", "error"]


def job_html(job) -> str:
    return _box(f"job {escape(job.id)}", table(_JOB_HEADERS, [_job_row(job)], "class='jobs'"))


def jobs_html(jobs) -> str:
    return _box(f"{len(jobs)} job(s)", table(_JOB_HEADERS, [_job_row(j) for j in jobs], "class='jobs'"))
