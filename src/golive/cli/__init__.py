"""The golive command line: parses flags into api calls and renders their results; no logic of its own.

The app lives in ``golive.cli._app``; each command module registers its commands on it. Only typer, rich and
golive.spec are imported here, so ``golive --help`` stays fast; the api and the frameworks behind it load when a
command runs.
"""

from __future__ import annotations

import os
import sys

from golive.cli._app import app, state

# isort: off
# each module registers its commands on the app; the order here is the order `golive --help` lists them
from golive.cli import _steps  # noqa: F401  convert, verify, tune, inspect, run
from golive.cli import _profile  # noqa: F401  profile
from golive.cli import _devices  # noqa: F401  devices
from golive.cli import _jobs  # noqa: F401  jobs ..., worker
from golive.cli import _ui  # noqa: F401  ui
from golive.cli import _pipeline  # noqa: F401  pipeline ...
from golive.cli import _serve  # noqa: F401  serve, export-triton
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    if os.environ.get("GOLIVE_DEBUG") == "1":
        state["debug"] = True
    sys.exit(app())
