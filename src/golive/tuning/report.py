"""The tuning report: report.json (every candidate, its settings, figures, verdict and reason) and
report.html (ranked table and latency chart, readable offline)."""

from __future__ import annotations

import html
from typing import Any

from pydantic import BaseModel, Field

from golive.providers import short_name
from golive.tuning.space import Candidate

__all__ = ["TuneReport", "render_html"]


class TuneReport(BaseModel):
    """report.json: every candidate with its settings, figures, verdict and reason."""

    format_version: int = 1
    model: str = Field(description="the model tuned, relative to the tune folder")
    objective: str
    budget_s: float = Field(description="the budget in seconds: as asked, or as --budget auto planned it")
    budget_auto: bool = False
    elapsed_s: float
    environment: dict[str, Any] = Field(default_factory=dict)
    baseline: Candidate
    best: Candidate
    speedup: float = Field(description="baseline p50 / best p50 (latency), or best / baseline items per second")
    source: dict[str, Any] | None = Field(
        default=None, description="the source model (PyTorch eager, ...) timed on the same inputs"
    )
    speedup_over_source: float | None = Field(default=None, description="source p50 / best p50, on the same inputs")
    candidates: list[Candidate]
    time_by_op: list[dict[str, Any]] = Field(
        default_factory=list,
        description="where the time goes: baseline and best per op type (ms per run, ONNX Runtime's profiler), largest first",
    )
    notes: list[str] = Field(default_factory=list)

    @property
    def throughput_by_batch(self) -> dict[int, float]:
        """Throughput objective: items/s of the best configuration at each batch size measured."""
        return {
            c.batch: c.figures["throughput"]
            for c in self.candidates
            if c.stage == "batch" and c.status == "passed" and c.batch is not None
        }

    def ranked(self) -> list[Candidate]:
        """The table's order, which agrees with the decision: the best first (chosen in alternating rounds against its
        rivals and confirmed against the baseline), then the passed ones by the median of their measurements, then
        the rest by verdict."""
        order = {"passed": 0, "rejected": 1, "failed": 2, "invalid": 3, "skipped": 4, "pending": 5}

        def key(c: Candidate):
            shown = c.shown_p50()
            value = -c.figures.get("throughput", 0.0) if self.objective == "throughput" else (shown or float("inf"))
            return (c.id != self.best.id, order[c.status], value if c.figures else 0)

        return sorted(self.candidates, key=key)

    def measured(self, c: Candidate) -> str:
        """How a row's figure was taken: how many measurements, how far apart, and whether in a noisy spell."""
        if not c.p50_runs:
            return "-"
        text = f"{len(c.p50_runs)}×" + (f" ±{c.spread / 2:.0%}" if c.spread is not None else "")
        return text + (" noisy" if c.noisy else "")

    def summary(self) -> str:
        if self.objective == "throughput":
            by_batch = self.throughput_by_batch
            batches = ""
            if by_batch:
                top = max(by_batch, key=lambda b: by_batch[b])
                batches = (
                    "; items/s by batch size: "
                    + ", ".join(f"{b}: {v:.0f}" for b, v in sorted(by_batch.items()))
                    + f" (best at batch {top})"
                )
            return (
                f"best: {self.best.label()} — {self.best.figures.get('throughput', 0):.1f} items/s, "
                f"{self.speedup:.2f}× the baseline's {self.baseline.figures.get('throughput', 0):.1f}"
                + batches
                + self.source_summary()
            )
        return (
            f"best: {self.best.label()} — p50 {self.best.figures.get('p50_ms', 0):.3f} ms, "
            f"{self.speedup:.2f}× faster than the baseline's {self.baseline.figures.get('p50_ms', 0):.3f} ms"
            + self.source_summary()
        )

    def placement_lines(self) -> list[str]:
        """Where the nodes ran: the best, and the fastest passing candidate of every other provider searched."""
        lines = []
        if self.best.placement:
            lines.append(f"best ({self.best.id}): {self.best.placement.describe()}")
        seen = {self.best.session.providers[0]}
        for c in self.ranked():
            provider = c.session.providers[0]
            if c.status == "passed" and c.placement and provider not in seen:
                seen.add(provider)
                lines.append(f"{short_name(provider)}'s fastest ({c.id}, {c.label()}): {c.placement.describe()}")
        return lines

    def source_summary(self) -> str:
        if not self.source or not self.speedup_over_source:
            return ""
        return (
            f"; {self.speedup_over_source:.2f}× faster than the {self.source['framework']} source model's "
            f"{self.source['p50_ms']:.3f} ms on the same inputs"
        )


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _placed(c: Candidate) -> str:
    p = c.placement
    if p is None:
        return "-"
    return f"{p.by_provider.get(p.provider, 0)}/{p.nodes}"


def _expected(c: Candidate) -> str:
    """What the search expected before it ran the candidate, and what building and measuring it cost."""
    if c.expected is None:
        return "-"
    return f"{c.expected.speedup:.2f}x, ~{c.expected.cost_s:.0f} s (took {c.cost_s:.0f} s)"


def render_html_fragment(report: TuneReport) -> str:
    """The report's body (summary, latency chart, ranked table): report.html, and the web app's job page."""
    rows = []
    measured = [c for c in report.ranked() if c.figures.get("p50_ms")]
    top = max((c.figures["p50_ms"] for c in measured), default=1.0)
    colors = {"passed": "#2e7d32", "rejected": "#c62828", "failed": "#6d4c41", "invalid": "#9e9e9e", "skipped": "#9e9e9e"}
    for rank, c in enumerate(report.ranked(), 1):
        f = c.figures
        cos = c.min_cosine
        mark = " ★" if c.id == report.best.id else (" (baseline)" if c.id == report.baseline.id else "")
        rows.append(
            f"<tr><td>{rank}</td><td>{c.id}{mark}</td><td>{html.escape('+'.join(c.transforms) or 'original')}</td>"
            f"<td>{html.escape(c.session.describe())}</td><td>{_fmt(c.shown_p50())}</td><td>{html.escape(report.measured(c))}</td>"
            f"<td>{_fmt(f.get('p90_ms'))}</td>"
            f"<td>{_fmt(f.get('p99_ms'))}</td><td>{_fmt(f.get('throughput'), 1)}</td><td>{_fmt(f.get('session_create_ms'), 0)}</td>"
            f"<td>{_fmt(cos, 5)}</td><td>{html.escape(_placed(c))}</td><td>{html.escape(_expected(c))}</td>"
            f"<td style='color:{colors.get(c.status, '#000')}'>{c.status}</td>"
            f"<td>{html.escape(c.reason)}</td></tr>"
        )
    bars = []
    height = 22
    for i, c in enumerate(measured):
        width = 600 * c.figures["p50_ms"] / top
        bars.append(
            f"<text x='0' y='{i * height + 15}' font-size='12'>{c.id}</text>"
            f"<rect x='60' y='{i * height + 3}' width='{width:.1f}' height='{height - 6}' fill='{colors[c.status]}'/>"
            f"<text x='{65 + width:.1f}' y='{i * height + 15}' font-size='12'>{c.figures['p50_ms']:.3f} ms</text>"
        )
    chart = (
        f"<svg width='780' height='{max(1, len(measured)) * height + 10}' xmlns='http://www.w3.org/2000/svg'>"
        + "".join(bars)
        + "</svg>"
    )
    env = ", ".join(f"{k}: {html.escape(str(v))}" for k, v in report.environment.items())
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    placed = "".join(f"<li>{html.escape(n)}</li>" for n in report.placement_lines())
    by_op = "".join(
        f"<tr><td>{html.escape(r['op_type'])}</td><td>{_fmt(r['baseline_ms'])}</td><td>{_fmt(r['best_ms'])}</td></tr>"
        for r in report.time_by_op[:15]
    )
    time_table = (
        "<h2>Where the time goes</h2><p>ms per run by op type, ONNX Runtime's profiler (golive profile TUNE_DIR shows every node)</p>"
        f"<table class='time-by-op'><tr><th>op type</th><th>baseline ms</th><th>best ms</th></tr>{by_op}</table>"
        if by_op
        else ""
    )
    return f"""<div class="tune-report">
<p><b>{html.escape(report.summary())}</b></p>
<p>objective: {report.objective}; budget {report.budget_s:.0f} s, used {report.elapsed_s:.0f} s; {len(report.candidates)} candidates. {env}</p>
<ul>{notes}</ul>
<h2>Where the nodes ran</h2>
<ul>{placed}</ul>
{time_table}
<h2>Median latency (p50) of measured candidates</h2>
<p>green: passed the accuracy gate; red: rejected by it.</p>
{chart}
<h2>All candidates, ranked</h2>
<p>Rows in the order of the decision: the ★ best first (it won alternating rounds against its rivals and was confirmed
against the baseline), then the passed candidates by the median of their measurements. p50 is that median (the best's
and the baseline's: the median of their confirm rounds); "measured" says how many times and how far apart (±, half the
range over the median): a row marked noisy was measured in a noisy spell of the machine, and its figure is uncertain;
"expected" is the speed-up over the baseline and the seconds the search estimated before it ran the candidate (from the
model's op mix, this CPU and golive's priors), beside the seconds it took.</p>
<table><tr><th>#</th><th>id</th><th>transforms</th><th>session</th><th>p50 ms</th><th>measured</th><th>p90 ms</th><th>p99 ms</th>
<th>items/s</th><th>session ms</th><th>min cosine</th><th>nodes on provider</th><th>expected</th><th>verdict</th><th>reason</th></tr>
{"".join(rows)}
</table></div>"""


def render_html(report: TuneReport | dict[str, TuneReport]) -> str:
    """report.html: one report, or the report of each part of a model tuned as parts."""
    reports = report if isinstance(report, dict) else {"": report}
    body = "".join(
        (f"<h2>part {html.escape(name)}</h2>" if name else "") + render_html_fragment(r) for name, r in reports.items()
    )
    title = report.model if isinstance(report, TuneReport) else ", ".join(r.model for r in reports.values())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>golive tune report</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}
th{{background:#eee}}</style></head><body>
<h1>golive tune: {html.escape(title)}</h1>
{body}
</body></html>
"""
