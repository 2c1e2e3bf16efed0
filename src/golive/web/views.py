"""The web app's reading side: jobs, run folders and models as the pages show them.

Everything here reads the job store (golive.jobs) and the run folders' records; the routes in app.py call it.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from markupsafe import Markup

from golive import jobs
from golive.errors import GoliveError
from golive.web.uploads import UploadStore

__all__ = ["JOB_FILES", "Answer", "duration", "job_views"]

JOB_FILES = {  # downloadable files of a job: name -> (folder, media type)
    "model.onnx": ("run", "application/octet-stream"),
    "golive.json": ("run", "application/json"),
    "job.json": ("run", "application/json"),
    "verify.json": ("run", "application/json"),
    "report.html": ("tune", "text/html"),
    "report.json": ("tune", "application/json"),
    "tune.json": ("tune", "application/json"),
}
# job-ID, best-ID or upload-ID; a part of a model converted as parts follows a dot: job-ID.decoder
_REF_RE = re.compile(r"^(job|best|upload)-([0-9a-f]{6,32})(?:\.([a-z_]+))?$")


class Answer(Exception):
    """An error page or JSON error with its status."""

    def __init__(self, status: int, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def job_views(home: Path, uploads: UploadStore) -> SimpleNamespace:
    """The functions the routes read jobs and models with, bound to one golive home."""

    def record(job_id: str) -> jobs.JobRecord:
        return jobs.get(job_id, home=home)

    def tune_dir(r: jobs.JobRecord) -> Path | None:
        return r.spec.tune_folder() if r.spec.tune is not None else None

    def view(r: jobs.JobRecord) -> dict[str, Any]:
        kind = "perf test" if r.spec.tune is not None else "convert"
        return {
            "duration_text": duration(r.duration),
            "id": r.id,
            "name": r.name,
            "kind": kind,
            "state": r.state,
            "created": r.created,
            "started": r.started,
            "finished": r.finished,
            "duration": r.duration,
            "attempt": r.attempt,
            "error": r.error,
            "summary": r.summary,
            "run_dir": r.run_dir,
            "tune_dir": str(tune_dir(r) or ""),
            "terminal": r.terminal,
            "retryable": r.state in ("failed", "cancelled", "interrupted"),
            "cancellable": r.state in ("queued", "running"),
        }

    def file_of(r: jobs.JobRecord, name: str, part: str | None = None) -> Path | None:
        where, _ = JOB_FILES[name]
        folder = Path(r.run_dir) if where == "run" else tune_dir(r)
        if folder is not None and part:
            folder = folder / part if part in parts_of(r) else None
        path = folder / name if folder else None
        return path if path is not None and path.is_file() else None

    def parts_of(r: jobs.JobRecord) -> list[str]:
        """The parts of a job's model converted as parts (encoder, decoder), else []."""
        from golive import rundir

        return rundir.parts_of(Path(r.run_dir))

    def tuned(r: jobs.JobRecord):
        """The job's finished tune result (each part's, for a model tuned as parts), or None."""
        from golive.rundir import finished_tune
        from golive.steps.tune import load_tune_result

        t = tune_dir(r)
        if t is None or finished_tune(t) is None:
            return None
        return load_tune_result(t)

    def results(r: jobs.JobRecord) -> dict[str, Any]:
        """What a job produced, read from its run folders."""
        from golive.rundir import ConvertRecord, read_record, tuned_record
        from golive.tuning.report import render_html_fragment

        parts = parts_of(r)
        files = [n for n in JOB_FILES if file_of(r, n)]
        files += [f"{p}/{n}" for p in parts for n in JOB_FILES if file_of(r, n, p)]
        out: dict[str, Any] = {"files": files, "convert": None, "tune": None, "parts": {}, "tune_parts": []}
        golive_json = Path(r.run_dir) / "golive.json"
        if golive_json.is_file():
            try:
                out["convert"] = read_record(golive_json, ConvertRecord)
                out["parts"] = {p: read_record(Path(r.run_dir) / p / "golive.json", ConvertRecord) for p in parts}
            except GoliveError as exc:
                out["convert_error"] = exc.message
        result = tuned(r)
        if result is not None and result.report is not None:
            out["tune"] = result.report
            out["tune_html"] = Markup(render_html_fragment(result.report))
        elif result is not None:  # each part's report, and one call of each part together
            out["tune_parts"] = [(name, report, Markup(render_html_fragment(report))) for name, report in result.reports.items()]
            out["tune_speedup"] = result.speedup
        if result is not None:
            t = result.output_dir
            out["best"] = True
            folders = {name: t / name for name in result.parts} or {"": t}
            out["session"] = {n: tuned_record(f)[1].session.model_dump(mode="json") for n, f in folders.items()}
        out["profile"] = profile_section(r)
        return out

    def profile_section(r: jobs.JobRecord) -> Markup | None:
        """The job's profile (what golive profile wrote for it), as the heat-coloured graphs with a switch between
        them and a panel for the clicked node; None when it has none."""
        from golive.profiling import PROFILE_RECORD, ProfileReport, compare, render_graph_svg

        t = tune_dir(r)
        for folder in ([t / "profile"] if t else []) + [Path(r.run_dir) / "profile"]:
            if (folder / PROFILE_RECORD).is_file():
                break
        else:
            return None
        report = ProfileReport.model_validate_json((folder / PROFILE_RECORD).read_text()).flat()
        switch = "".join(
            f"<label><input type='radio' name='profile-graph' value='{p.label}' {'checked' if i == 0 else ''}> {p.label}</label> "
            for i, p in enumerate(report.profiles)
        )
        graphs = "".join(
            f"<div class='profile-view' data-label='{p.label}' {'' if i == 0 else 'hidden'}>"
            f"<p>{html.escape(_summary(p))}</p>{render_graph_svg(p)}</div>"
            for i, p in enumerate(report.profiles)
        )
        rows = "".join(
            f"<tr><td>{html.escape(op)}</td><td>{_ms(a)}</td><td>{_ms(b)}</td></tr>"
            for op, a, b in compare(report.get("baseline"), report.get("best"))[:12]
        )
        table = (
            f"<table id='profile-ops'><tr><th>op type</th><th>baseline ms</th><th>best ms</th></tr>{rows}</table>" if rows else ""
        )
        return Markup(
            f"<section id='profile'><h2>Where the time goes</h2>{table}<p class='profile-switch'>{switch}</p>"
            "<div class='profile-body'><div class='profile-graphs'>" + graphs + "</div>"
            "<aside id='profile-panel'><p>click a node for its figures</p></aside></div></section>"
        )

    def profile_of(ref: str) -> Markup | None:
        """The profile section of the job a model reference names (job-ID or best-ID), if it was profiled."""
        m = _REF_RE.match(ref)
        if not m or m.group(1) == "upload":
            return None
        return profile_section(record(m.group(2)))

    def model_path(ref: str) -> tuple[Path, str]:
        """The .onnx file a model reference names, and a title for it."""
        m = _REF_RE.match(ref)
        if not m:
            raise Answer(404, f"no model {ref!r}", "model references look like job-ID, best-ID or upload-ID")
        kind, ident, part = m.groups()
        if kind != "upload" and part is None and parts_of(record(ident)):
            parts = parts_of(record(ident))
            raise Answer(
                404,
                f"job {ident} converted its model as parts ({', '.join(parts)}): name one",
                f"e.g. {kind}-{ident}.{parts[-1]}",
            )
        if kind == "upload":
            up = uploads.get(ident)
            if up.kind != "file" or up.path.suffix != ".onnx":
                raise Answer(
                    400, f"the upload {up.name} is not an .onnx file", "convert it first, then visualize the job's model"
                )
            return up.path, up.name
        r = record(ident)
        if part is not None and part not in parts_of(r):
            raise Answer(404, f"job {r.id} has no part {part!r}", "its parts: " + (", ".join(parts_of(r)) or "none"))
        sub = part or ""
        named = f" {part}" if part else ""
        if kind == "job":
            path, title = Path(r.run_dir) / sub / "model.onnx", f"{r.name}{named} (job {r.id})"
        else:
            t = tune_dir(r)
            path = t / sub / "best" / "model.onnx" if t else Path("/nonexistent")
            title = f"{r.name}{named}, tuned best (job {r.id})"
        if not path.is_file():
            raise Answer(
                404,
                f"job {r.id} has no {'converted' if kind == 'job' else 'tuned'} model yet",
                "wait for the job to succeed" if not r.terminal else "its job did not produce one",
            )
        return path, title

    def models_to_show() -> list[dict[str, str]]:
        found = []
        for r in reversed(jobs.list(home=home)):
            t = tune_dir(r)
            names: list[str | None] = [*parts_of(r)] or [None]
            for part in names:
                sub, ref, named = part or "", f".{part}" if part else "", f" {part}" if part else ""
                if (Path(r.run_dir) / sub / "model.onnx").is_file() and r.spec.tune is None:
                    found.append({"ref": f"job-{r.id}{ref}", "title": f"{r.name}{named} · converted (job {r.id})"})
                if t is not None and (t / sub / "best" / "model.onnx").is_file() and (t / "tune.json").is_file():
                    found.append({"ref": f"best-{r.id}{ref}", "title": f"{r.name}{named} · tuned best (job {r.id})"})
        return found

    def compare(ids: list[str]) -> dict[str, Any]:
        from golive.rundir import fingerprint

        if len(ids) < 2:
            raise Answer(400, "pick two or more Perf Test jobs to compare", "tick them in the Job Monitor, then Compare")
        columns, models = [], set()
        for ident in ids:
            r = record(ident)
            if parts_of(r):
                raise Answer(
                    400,
                    f"job {r.id} tuned a model converted as parts ({', '.join(parts_of(r))})",
                    "Compare takes models in one piece; each part's report is on its job page",
                )
            result = tuned(r)
            if result is None or result.report is None:
                raise Answer(400, f"job {r.id} has no tune report", "compare finished Perf Test jobs")
            report = result.report
            models.add(fingerprint(Path(r.run_dir) / "model.onnx"))
            columns.append((view(r), report))
        if len(models) > 1:
            raise Answer(400, "these Perf Test jobs tuned different models", "compare Perf Tests of the same converted model")
        rows: dict[str, dict[int, Any]] = {}  # candidate label -> column -> its candidate there
        for i, (_, report) in enumerate(columns):
            for c in report.candidates:
                key = (
                    ("+".join(c.transforms) or "original")
                    + " · "
                    + c.session.describe()
                    + (f" · batch {c.batch}" if c.batch else "")
                )
                rows.setdefault(key, {})[i] = c
        best = {i: report.best.id for i, (_, report) in enumerate(columns)}
        objective = columns[0][1].objective
        order = sorted(
            rows,
            key=lambda k: min(
                (c.score(objective) if c.figures and c.status == "passed" else float("inf")) for c in rows[k].values()
            ),
        )

        def fastest(cells: dict[int, Any]) -> int | None:
            scored = {i: c.score(objective) for i, c in cells.items() if c.figures and c.status == "passed"}
            return min(scored, key=lambda i: scored[i]) if len(scored) > 1 else None

        scores = [report.best.score(objective) for _, report in columns]
        winner = min(range(len(columns)), key=lambda i: scores[i])
        return {
            "columns": columns,
            "rows": [(k, rows[k]) for k in order],
            "best": best,
            "row_fastest": [fastest(rows[k]) for k in order],
            "winner": winner,
            # each test's best relative to the fastest best (1 for the winner): the length of its bar
            "relative": [_relative(scores[winner], s) for s in scores],
        }

    return SimpleNamespace(
        record=record,
        tune_dir=tune_dir,
        view=view,
        file_of=file_of,
        parts_of=parts_of,
        tuned=tuned,
        results=results,
        profile_of=profile_of,
        model_path=model_path,
        models_to_show=models_to_show,
        compare=compare,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _summary(p: Any) -> str:
    from golive.profiling import summary_line

    return summary_line(p)


def _relative(best: float, score: float) -> float:
    """A test's best against the fastest test's best, 1 for the fastest: scores are latencies (lower is better) or
    negated throughputs (more negative is better)."""
    if best > 0 and score > 0:
        return best / score
    if best < 0 and score < 0:
        return score / best
    return 0.0
