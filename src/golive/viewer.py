"""golive.show: the Netron graph of a model inline in a notebook, beside its inspect summary.

The graph comes from a small viewer golive starts in the background, once per Python process: a process
of its own (``python -m golive.web.viewer``, started as a program, never imported here) serving the same offline Netron route as the web app on
127.0.0.1, and the models registered with it under unguessable keys. It ends when its parent does. The
iframe is drawn by the browser, so it shows where the notebook's browser runs on the kernel's machine
(a local Jupyter, VS Code); on a remote JupyterHub, use the summary or ``golive ui`` there.
"""

from __future__ import annotations

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

__all__ = ["View", "show"]

_lock = threading.Lock()
_viewer: _Viewer | None = None


class _Viewer:
    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_urlsafe(24)
        env = {**os.environ, "GOLIVE_VIEWER_TOKEN": self.token}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "golive.web.viewer", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None  # stdout=PIPE
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
        request = urllib.request.Request(
            self.url + "/api/register",
            data=json.dumps({"path": str(path)}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json", "Origin": self.url},
            method="POST",
        )
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
        return (
            f"<div class='golive-show' style='display:flex;gap:12px;align-items:flex-start'>"
            f"<iframe src='{escape(self.url)}' title='Netron' style='flex:1;min-width:0;height:{self.height}px;"
            f"border:1px solid #ccc'></iframe><div style='max-width:45%'>{self.summary._repr_html_()}</div></div>"
        )

    def __repr__(self) -> str:
        return f"View({self.url})"


def model_file(model_or_dir: str | Path) -> Path:
    """The .onnx a path names: the file itself, a convert folder's model.onnx, a tune folder's best/model.onnx."""
    from golive.errors import GoliveError
    from golive.rundir import parts_of, resolve_target

    path = Path(model_or_dir)
    parts = parts_of(path) if path.is_dir() else []
    if parts:  # a model converted (or tuned) as parts: one is shown at a time
        raise GoliveError(
            f"{model_or_dir} holds a model in parts ({', '.join(parts)}): show one",
            hint=f"golive.show('{path / parts[-1]}')",
        )
    return resolve_target(path, "show").model.absolute()


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
