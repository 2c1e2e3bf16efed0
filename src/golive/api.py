"""The typed façade every front door calls: convert(), verify(), tune(), run(), inspect(), load_session().

The steps (golive.steps) may change process-wide state while they work: converters print from C++,
ONNX Runtime's tools write into the current folder, frameworks set loggers and environment variables.
So each call here runs its step in a worker process of its own and returns the typed result; the
caller's working folder, file descriptors, logging, ``sys.path`` and environment stay as they were.
A process golive owns (the CLI, a job worker) runs the steps in place instead (``in_this_process``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from golive.errors import GoliveError, validation_problems
from golive.events import CancelToken, Event, EventHandler
from golive.spec import ConvertOptions, JobSpec, TuneOptions, VerifyOptions, load_job

__all__ = [
    "CancelToken",
    "Event",
    "convert",
    "convert_job",
    "fork_convert",
    "generate",
    "in_this_process",
    "inspect",
    "load_session",
    "load_sessions",
    "run",
    "running_in_place",
    "tune",
    "verify",
]

log = logging.getLogger(__name__)

_in_place: contextvars.ContextVar[bool] = contextvars.ContextVar("golive_in_place", default=False)


@contextlib.contextmanager
def in_this_process() -> Iterator[None]:
    """Run steps in this process (this thread, this context) instead of a worker: for processes golive owns
    (the CLI, a job worker)."""
    token = _in_place.set(True)
    try:
        yield
    finally:
        _in_place.reset(token)


def running_in_place() -> bool:
    """Whether steps run in this process (inside :func:`in_this_process`) rather than in a worker."""
    return _in_place.get()


def _call(entry: str, what: str, on_event: EventHandler | None, cancel: CancelToken | None, **kwargs: Any) -> Any:
    """Run ``golive.steps.<entry>`` in a worker process (or here, inside ``in_this_process``); JSON in and out."""
    if _in_place.get():
        from golive import steps
        from golive.events import StepContext

        return getattr(steps, entry)(StepContext(on_event=on_event, cancel=cancel), **kwargs)
    from golive._progress import auto_progress
    from golive._worker import call

    with auto_progress(on_event, what) as handler:  # a notebook shows a progress bar unless on_event is given
        return call(f"golive.steps:{entry}", kwargs, what=what, on_event=handler, cancel=cancel)


_ModelT = TypeVar("_ModelT", bound=BaseModel)


def _validated(model: type[_ModelT], **values: Any) -> _ModelT:
    try:
        return model(**values)
    except ValidationError as exc:
        raise GoliveError(f"invalid options: {validation_problems(exc)}") from None


def __getattr__(name: str):
    if name == "ConvertResult":  # loaded on first use: it pulls in the record types
        from golive.steps.convert import ConvertResult

        return ConvertResult
    raise AttributeError(f"module 'golive.api' has no attribute {name!r}")


def _convert_result(value: dict):
    from golive.steps.convert import ConvertResult

    return ConvertResult.model_validate(value)


# ---------------------------------------------------------------- the steps


def convert(
    source: str | Path,
    output_dir: str | Path,
    *,
    verify_options: VerifyOptions | dict | None = None,
    on_event: EventHandler | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
):
    """Convert ``source`` to ONNX in ``output_dir`` (model.onnx + golive.json), verifying it unless ``verify=False``.

    ``options`` are the fields of :class:`golive.spec.ConvertOptions` (inputs, dynamic, opset, exporter, ...).
    Returns a :class:`golive.steps.ConvertResult`.
    """
    if isinstance(verify_options, dict):
        verify_options = _validated(VerifyOptions, **verify_options)
    job = _validated(
        JobSpec,
        source=str(source),
        output_dir=str(Path(output_dir).absolute()),
        convert=_validated(ConvertOptions, **options),
        verify=verify_options or VerifyOptions(),
    )
    return convert_job(job, on_event=on_event, cancel=cancel)


def convert_job(job: JobSpec, *, on_event: EventHandler | None = None, cancel: CancelToken | None = None):
    """The convert step of a JobSpec (its tune section is ignored; ``run`` does both)."""
    return _convert_result(_call("convert_entry", "the conversion", on_event, cancel, job=job.model_dump(mode="json")))


def verify(
    target: str | Path,
    *,
    source: str | None = None,
    on_event: EventHandler | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
):
    """Verify a convert output folder against its source, or an ONNX file against test data (or ONNX's reference evaluator).

    ``options`` are the fields of :class:`golive.spec.VerifyOptions` (data, rtol, atol, per_output, dim_sizes, ...);
    ``source`` replaces the recorded source model (a run folder that travelled without it).
    Returns a :class:`golive.verification.VerifyReport`; a folder also gets it saved as verify.json.
    """
    from golive.verification import VerifyReport

    vopts = _validated(VerifyOptions, **options)
    if not Path(target).exists():
        raise GoliveError(f"{target} does not exist", hint="give a golive convert output folder or an .onnx file")
    value = _call(
        "verify_entry",
        "verification",
        on_event,
        cancel,
        target=str(Path(target).absolute()),
        options=vopts.model_dump(mode="json"),
        source=str(source) if source else None,
    )
    return VerifyReport.model_validate(value)


def tune(
    target: str | Path,
    output_dir: str | Path,
    *,
    verify_options: VerifyOptions | dict | None = None,
    on_event: EventHandler | None = None,
    cancel: CancelToken | None = None,
    **options: Any,
):
    """Search transforms × session settings for the fastest configuration that passes the accuracy gate.

    ``target`` is a convert output folder or an .onnx file; ``options`` are the fields of
    :class:`golive.spec.TuneOptions`. Writes OUTPUT_DIR/best/{model.onnx,session.json}, report.json,
    report.html and tune.json, and returns a :class:`golive.tuning.TuneResult`.
    """
    from golive.tuning import TuneResult

    topts = _validated(TuneOptions, **options)
    if isinstance(verify_options, dict):
        verify_options = _validated(VerifyOptions, **verify_options)
    value = _call(
        "tune_entry",
        "tuning",
        on_event,
        cancel,
        target=str(Path(target).absolute()),
        output_dir=str(Path(output_dir).absolute()),
        options=topts.model_dump(mode="json"),
        verify_options=verify_options.model_dump(mode="json") if verify_options else None,
    )
    return TuneResult.model_validate(value)


def run(job: JobSpec | str | Path, *, on_event: EventHandler | None = None, cancel: CancelToken | None = None):
    """Run a whole job (a JobSpec or a YAML/JSON job file): convert, verify, then tune when the job asks.

    A step whose output is complete and whose spec is unchanged is skipped (``result.skipped``,
    ``result.tuning.skipped``), so running a job again after a crash resumes it. A saved step spec
    replays that step: a tune folder's ``tune.json`` (returns a TuneResult) or a run folder's
    ``verify.json`` (returns a VerifyReport).
    """
    if isinstance(job, JobSpec):
        return _convert_result(_call("run_entry", "the job", on_event, cancel, job=job.model_dump(mode="json")))
    path = Path(job)
    if not path.is_file():
        load_job(path)  # the error that names the file
    value = _call("replay_entry", "the job", on_event, cancel, path=str(path.absolute()))
    return _replayed(value)


def _replayed(value: dict):
    if value["kind"] == "tune":
        from golive.tuning import TuneResult

        return TuneResult.model_validate(value["value"])
    if value["kind"] == "verify":
        from golive.verification import VerifyReport

        return VerifyReport.model_validate(value["value"])
    return _convert_result(value["value"])


# ---------------------------------------------------------------- reading results


def inspect(model: str | Path):
    """Summarize an ONNX model (or the model.onnx of an output folder; each part of a model converted as parts)."""
    from golive.inspection import ModelSummary, summarize

    path = Path(model)
    if not path.is_dir():
        return summarize(path)
    record = path / "golive.json"
    convert = None
    if record.is_file():
        from golive.rundir import ConvertRecord, read_record

        convert = read_record(record, ConvertRecord)
    if convert is not None and convert.parts:
        summary = ModelSummary.of_parts(str(path), {p: inspect(path / p) for p in convert.parts})
    else:
        summary = summarize(path / "model.onnx")
    if convert is not None:  # a convert folder: its task; nested inputs and outputs say where they come from
        from golive.frontends._structure import describe

        if convert.task:
            summary.task = f"{convert.task} ({convert.task_reason})"
        if convert.input_structure:
            summary.origins.update(describe(convert.input_structure))
        if convert.output_structure:
            summary.origins.update(describe(convert.output_structure, returned=True))
    return summary


def generate(target: str | Path, inputs: dict[str, Any], *, max_new_tokens: int = 32):
    """Greedy generation through a generative model's ONNX parts: a convert folder (its models as exported) or a tune
    folder (its tuned bests). ``inputs``: the prompt's ``input_ids`` (and ``attention_mask``) for a decoder-only model,
    the encoder's inputs (``input_ids``/``attention_mask``, ``input_features``) for an encoder-decoder. Returns the new
    tokens, an int64 array (batch, n <= max_new_tokens). Runs here: the sessions are plain ONNX Runtime ones."""
    import numpy as np

    from golive.generation import generate as _generate
    from golive.rundir import generation_of
    from golive.tuning import load_sessions

    path = Path(target)
    spec = generation_of(path)
    return _generate(load_sessions(path), spec, {k: np.asarray(v) for k, v in inputs.items()}, max_new_tokens)


def profile(
    target: str | Path,
    output_dir: str | Path | None = None,
    *,
    dim_sizes: dict[str, int] | None = None,
    data: str | Path | None = None,
    runs: int = 20,
    on_event: EventHandler | None = None,
    cancel: CancelToken | None = None,
):
    """Where the time goes: ONNX Runtime's per-node profile of a model.onnx, a convert folder, or a tune folder (its
    best with its recorded session settings, and its baseline), drawn on the optimized graph ONNX Runtime runs.
    Writes OUTPUT_DIR (default TARGET/profile, or MODEL-profile beside a model file): profile.json, overlay.json and
    the optimized graphs. Returns a :class:`golive.profiling.ProfileReport` (its ``_repr_html_`` shows the tables)."""
    from golive.profiling import ProfileReport

    value = _call(
        "profile_entry",
        "profiling",
        on_event,
        cancel,
        target=str(Path(target).absolute()),
        output_dir=str(Path(output_dir).absolute()) if output_dir else None,
        dim_sizes=dict(dim_sizes or {}),
        data=str(data) if data else None,
        runs=runs,
    )
    return ProfileReport.model_validate(value)


def devices():
    """The execution providers and devices ONNX Runtime sees here, built-in and from installed plugin packages
    (``golive devices``). Found in a worker process: registering plugin libraries stays out of the caller's."""
    from golive._isolate import in_worker
    from golive.providers import Devices

    ok, value = in_worker("golive.api:_devices_dump", (), timeout=300)
    if not ok:
        raise GoliveError(f"listing the execution provider devices failed: {value}")
    return Devices.model_validate(value)


def _devices_dump() -> dict[str, Any]:
    from golive.providers import devices as _devices

    return _devices().model_dump()


def load_session(tune_dir: str | Path):
    """The best configuration of a tuning run (a tune folder, or a copied best/ folder) as a ready
    ``onnxruntime.InferenceSession``, custom operators registered."""
    from golive.tuning import load_session as _load

    return _load(tune_dir)


def load_sessions(tune_dir: str | Path):
    """The best session of every part of a tuning run, by part: ``{"encoder": ..., "decoder": ...}`` for a model
    converted as parts, ``{"model": ...}`` for one in one piece."""
    from golive.tuning import load_sessions as _load

    return _load(tune_dir)


def fork_convert(src: str | Path, dst: str | Path):
    """Start the run folder ``dst`` (a sibling of ``src``) from ``src``'s finished convert step, files hard-linked
    where the file system allows: a job on ``dst`` with the same convert spec skips its convert step. Returns the
    convert record. Only files are written, so it runs in this process."""
    from golive.steps.convert import fork_convert as _fork

    return _fork(src, dst)
