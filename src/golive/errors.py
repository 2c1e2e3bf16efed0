"""The one exception tree of golive.

Every error a user can cause derives from :class:`GoliveError`. Each carries a short
``message`` (what failed, what was seen) and a ``hint`` (what to do about it). The CLI
prints both and exits with code 2; anything that is not a ``GoliveError`` is a bug and
keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "CancelledError",
    "DataError",
    "ExportError",
    "FrameworkError",
    "GoliveError",
    "InputSpecError",
    "JobError",
    "JobTimeoutError",
    "MissingDependencyError",
    "ModelLoadError",
    "OutputDirError",
    "RunFolderBusyError",
    "SourceNotFoundError",
    "StepCrashedError",
    "TransformError",
    "UntrustedPickleError",
    "first_line",
    "require",
    "validation_problems",
]


class GoliveError(Exception):
    """Root of every error a user can cause and fix."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class InputSpecError(GoliveError):
    """An --input / --dynamic / --int-range specification could not be parsed or does not fit the model."""


class SourceNotFoundError(GoliveError):
    """The source model path or import path does not exist."""


class FrameworkError(GoliveError):
    """The framework could not be guessed, or the source does not fit the framework asked for."""


class MissingDependencyError(GoliveError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the Python package '{package}', which is not installed.",
            hint=f"pip install 'golive[{extra}]'",
        )
        self.package = package
        self.extra = extra


class UntrustedPickleError(GoliveError):
    """Loading the source would unpickle arbitrary code and --trust-pickle was not given."""


class ModelLoadError(GoliveError):
    """The source model exists but could not be loaded (corrupt, truncated, wrong format)."""


class ProviderError(ModelLoadError):
    """An execution provider a model or a search asks for is not here (not installed, or no device for it)."""


class FallbackError(ModelLoadError):
    """CPU fallback was turned off (--no-fallback) and the provider does not take every node of the model."""


class ExportError(GoliveError):
    """The exporter could not translate the model to ONNX."""

    def __init__(
        self, message: str, *, hint: str | None = None, operators: list[str] | None = None, attempts: list[dict] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.operators = operators or []
        self.attempts = attempts or []


class DataError(GoliveError):
    """Test data could not be read or does not match the model's inputs."""


class OutputDirError(GoliveError):
    """The output folder cannot be written."""


class CancelledError(GoliveError):
    """The step was cancelled (a cancel request, Ctrl-C, or the process that started it went away).

    Not a failure of the model: it is the outcome the user asked for. Nothing it wrote looks finished.
    """

    exit_code = 130


class StepCrashedError(GoliveError):
    """The process running a step died (a converter's segfault, out of memory) before it could report."""

    def __init__(self, message: str, *, hint: str | None = None, signal: str | None = None, log_tail: str = "") -> None:
        super().__init__(message, hint=hint)
        self.signal = signal
        self.log_tail = log_tail


class TransformError(GoliveError):
    """A model transform failed, hung or killed its worker; the message says which transform and how."""


class RunFolderBusyError(GoliveError):
    """Another golive step is writing the same run folder."""


class JobError(GoliveError):
    """A job id that does not exist, or an action its state does not allow (retry a running job, say)."""


class JobTimeoutError(JobError, TimeoutError):
    """golive.jobs.wait gave up: the job had not finished within the timeout."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type when it has none), cut to ``limit`` characters."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:limit]


def validation_problems(
    exc: Any, *, limit: int | None = None, empty: str = "", name: Callable[[tuple], str] | None = None
) -> str:
    """A pydantic ``ValidationError`` as one line: ``field.sub: message; ...`` (``name`` formats a location,
    ``empty`` names an error of the whole model, ``limit`` keeps the first few)."""

    def where(loc: tuple) -> str:
        return name(loc) if name else ".".join(str(p) for p in loc) or empty

    return "; ".join(f"{where(tuple(e['loc']))}: {e['msg']}" for e in exc.errors()[:limit])


def require(module: str, *, package: str | None = None, extra: str, purpose: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and not exc.name.split(".")[0] == module.split(".")[0]:
            raise  # the package is there but one of *its* imports failed: a real bug to see
        raise MissingDependencyError(package or module.split(".")[0], extra, purpose) from exc
