"""Netron, served offline from the netron package: the web app's Model Visualize and golive.show use it.

Netron's index.html carries its build date and stops at "Please update" once that is 180 days old; it asks
ipinfo.io whether to show a cookie dialog and sends analytics. golive serves index.html through its own
route, without the date tag (Netron then takes today's date), with Netron's consent cookie set and
``Content-Security-Policy: connect-src 'self'`` so nothing leaves the machine. Everything else in the
package's folder is served as static files; index.html only through that route, however it is spelled.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["add_netron", "netron_dir", "netron_index_html"]


def netron_dir() -> Path | None:
    spec = importlib.util.find_spec("netron")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent
    return folder if (folder / "index.html").is_file() else None


def netron_index_html(folder: Path) -> str:
    return re.sub(r'<meta name="date"[^>]*>\s*', "", (folder / "index.html").read_text())


class _NetronFiles(StaticFiles):
    """Netron's folder, except index.html (however spelled): that one is served by its own route."""

    def lookup_path(self, path: str):
        if os.path.normpath(path).lstrip("/\\") in ("index.html", "."):
            return "", None
        return super().lookup_path(path)


def add_netron(app: FastAPI, *, framed_by: str = "'self'") -> None:
    """Serve Netron under /netron/ (and its icon as /favicon.ico); ``framed_by``: who may embed it (CSP
    frame-ancestors; golive.show's viewer is embedded by a notebook page of another origin)."""
    folder = netron_dir()

    @app.get("/netron/", response_class=HTMLResponse)
    @app.get("/netron/index.html", response_class=HTMLResponse)
    def netron_index():
        if folder is None:
            return JSONResponse({"error": "the netron package is not installed", "hint": "pip install 'golive[ui]'"}, 501)
        response = HTMLResponse(
            netron_index_html(folder),
            headers={"Content-Security-Policy": f"connect-src 'self'; frame-ancestors {framed_by}", "Cache-Control": "no-store"},
        )
        # the consent cookie answers Netron's cookie question: it neither asks ipinfo.io nor shows a dialog
        response.set_cookie("consent", str(int(time.time() * 1000)), max_age=30 * 86400, samesite="strict")
        return response

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        if folder is None:
            return JSONResponse({"error": "no icon"}, 404)
        return FileResponse(folder / "favicon.ico")

    if folder is not None:
        app.mount("/netron", _NetronFiles(directory=folder), name="netron")
