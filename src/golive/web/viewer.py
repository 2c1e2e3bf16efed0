"""The process behind golive.show (``python -m golive.web.viewer PORT``, started by ``golive.viewer``): Netron and
the models registered with it, on 127.0.0.1, under the web app's Host rule, until its parent goes."""

# no `from __future__ import annotations`: FastAPI reads the viewer routes' annotations at run time
import os
import sys
import threading
from pathlib import Path

__all__: list[str] = []


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
