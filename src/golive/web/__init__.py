"""golive's local web app (``golive ui``): Convert · Perf Test · Model Visualize · Job Monitor.

Needs the ``ui`` extra (FastAPI, uvicorn, Jinja2, netron). ``create_app`` builds the app; ``serve`` runs it
with uvicorn beside a worker pool that runs the submitted jobs.
"""

from golive.web.server import serve
from golive.web.settings import Settings

__all__ = ["Settings", "create_app", "serve"]


def create_app(settings: Settings):
    from golive.web.app import create_app as _create

    return _create(settings)
