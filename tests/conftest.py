"""Shared fixtures: the test models live in zoo.py; the CLI runs in-process through Click's runner."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
ZOO = TESTS / "zoo.py"
sys.path.insert(0, str(TESTS))


def zoo(name: str) -> str:
    """Import path of a zoo model, as a user would type it."""
    return f"{ZOO}:{name}"


@pytest.fixture
def cli():
    """Run ``golive ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from golive.cli import app

    runner = CliRunner()

    def invoke(*args: str):
        result = runner.invoke(app, [str(a) for a in args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return invoke


def read_info(out: Path) -> dict:
    return json.loads((out / "golive.json").read_text())
