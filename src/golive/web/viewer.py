"""golive.show: the Netron graph of a model inline in a notebook, beside its inspect summary.

The graph comes from a small viewer golive starts in the background, once per Python process: a process
of its own (``python -m golive.web.viewer``) serving the same offline Netron route as the web app on
127.0.0.1, and the models registered with it under unguessable keys. It ends when its parent does. The
iframe is drawn by the browser, so it shows where the notebook's browser runs on the kernel's machine
(a local Jupyter, VS Code); on a remote JupyterHub, use the summary or ``golive ui`` there.
"""

# no `from __future__ import annotations`: FastAPI reads the viewer routes' annotations at run time
import atexit
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import urllib.request
from html import escape
from pathlib import Path

__all__ = ["show", "View"]

_lock = threading.Lock()
_viewer: "_Viewer | None" = None


class _Viewer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_urlsafe(24)
        env = {**os.environ, "GOLIVE_VIEWER_TOKEN": self.token}
        self.proc = subprocess.Popen([sys.executable, "-m", "golive.web.viewer", str(self.port)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
                                     start_new_session=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            from golive.errors import GoliveError

            raise GoliveError("the model viewer did not start", hint="is the ui extra installed? pip install 'golive[ui]'")
        atexit.register(self.stop)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def register(self, path: Path) -> str:
        request = urllib.request.Request(self.url + "/api/register", data=json.dumps({"path": str(path)}).encode(),
                                         headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                                                  "Origin": self.url}, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["key"]

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()


class View:
    """What golive.show returns: Netron's graph in an iframe beside the model's summary."""

    def __init__(self, url: str, model_url: str, summary, height: int) -> None:
        self.url, self.model_url, self.summary, self.height = url, model_url, summary, height

    def _repr_html_(self) -> str:
        return (f"<div class='golive-show' style='display:flex;gap:12px;align-items:flex-start'>"
                f"<iframe src='{escape(self.url)}' title='Netron' style='flex:1;min-width:0;height:{self.height}px;"
                f"border:1px solid #ccc'></iframe><div style='max-width:45%'>{self.summary._repr_html_()}</div></div>")

    def __repr__(self) -> str:
        return f"View({self.url})"


def model_file(model_or_dir: str | Path) -> Path:
    """The .onnx a path names: the file itself, a convert folder's model.onnx, a tune folder's best/model.onnx."""
    from golive.errors import GoliveError

    path = Path(model_or_dir)
    for candidate in (path, path / "model.onnx", path / "best" / "model.onnx"):
        if candidate.is_file() and candidate.suffix == ".onnx":
            return candidate.absolute()
    raise GoliveError(f"{model_or_dir} is not an .onnx file, a convert folder or a tune folder",
                      hint="golive.show('out/model.onnx'), golive.show('out'), golive.show('out-tuned')")


def show(model_or_dir: str | Path, *, height: int = 600) -> View:
    """Display a model's graph (Netron, offline) with its inspect summary; in a notebook, as the cell's output."""
    global _viewer
    from golive import api

    path = model_file(model_or_dir)
    summary = api.inspect(path)
    with _lock:
        if _viewer is None or not _viewer.alive():
            _viewer = _Viewer()
        viewer = _viewer
    key = viewer.register(path)
    model_url = f"/view/{key}/model.onnx"
    return View(f"{viewer.url}/netron/index.html?url={model_url}", viewer.url + model_url, summary, height)


def _serve(port: int, token: str) -> None:
    """The viewer process: Netron and the registered models, until its parent goes (stdin closes)."""
    import hmac
    import uuid

    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, JSONResponse

    from golive.web.netron import add_netron
    from golive.web.security import Gate

    gate = Gate("127.0.0.1", port)
    models: dict[str, Path] = {}
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _host_only(request: Request, call_next):
        refusal = gate.check_host(request.headers.get("host"))
        if refusal:
            return JSONResponse({"error": refusal.message}, refusal.status)
        return await call_next(request)

    @app.post("/api/register")
    async def register(request: Request):
        given = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "only golive.show registers models here"}, 401)
        path = Path((await request.json())["path"])
        if not path.is_file():
            return JSONResponse({"error": f"{path} is not a file"}, 404)
        key = uuid.uuid4().hex
        models[key] = path
        return {"key": key}

    @app.get("/view/{key}/model.onnx")
    def model(key: str):
        path = models.get(key)
        if path is None or not path.is_file():
            return JSONResponse({"error": "no such model (the viewer restarted? call golive.show again)"}, 404)
        return FileResponse(path, media_type="application/octet-stream")

    add_netron(app, framed_by="*")
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", access_log=False))

    def parent_gone() -> None:
        sys.stdin.read()  # returns at end of file: the parent closed the pipe, or died
        server.should_exit = True

    def announce() -> None:
        while not server.started and not server.should_exit:
            threading.Event().wait(0.05)
        print("ready", flush=True)

    threading.Thread(target=parent_gone, daemon=True).start()
    threading.Thread(target=announce, daemon=True).start()
    server.run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]), os.environ.pop("GOLIVE_VIEWER_TOKEN"))
