"""golive: take a trained model to production on ONNX Runtime.

``import golive`` is cheap: the public functions load their modules (and torch, onnxruntime, ...)
only when first called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "CancelToken",
    "ConvertOptions",
    "Event",
    "GoliveError",
    "JobSpec",
    "TuneOptions",
    "VerifyOptions",
    "__version__",
    "convert",
    "devices",
    "generate",
    "inspect",
    "jobs",
    "load_session",
    "load_sessions",
    "pipelines",
    "profile",
    "run",
    "show",
    "tune",
    "verify",
    "write_test_data",
]

_LAZY = {
    "convert": "golive.api",
    "verify": "golive.api",
    "devices": "golive.api",
    "profile": "golive.api",
    "inspect": "golive.api",
    "run": "golive.api",
    "tune": "golive.api",
    "load_session": "golive.api",
    "load_sessions": "golive.api",
    "generate": "golive.api",
    "TuneOptions": "golive.spec",
    "JobSpec": "golive.spec",
    "ConvertOptions": "golive.spec",
    "VerifyOptions": "golive.spec",
    "GoliveError": "golive.errors",
    "write_test_data": "golive.tensors",
    "CancelToken": "golive.events",
    "Event": "golive.events",
    "show": "golive.viewer",
}

if TYPE_CHECKING:
    from golive.api import convert, devices, generate, inspect, load_session, load_sessions, profile, run, tune, verify
    from golive.errors import GoliveError
    from golive.events import CancelToken, Event
    from golive.spec import ConvertOptions, JobSpec, TuneOptions, VerifyOptions
    from golive.tensors import write_test_data


def __getattr__(name: str) -> Any:
    if name in ("jobs", "api", "pipelines"):  # the job queue; the façade module; Kubeflow pipelines
        return importlib.import_module(f"golive.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'golive' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
