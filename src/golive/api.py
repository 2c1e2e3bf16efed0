"""The typed façade every front door calls: convert(), verify(), inspect(), run()."""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import ValidationError

from golive.errors import DataError, FrameworkError, GoliveError, ModelLoadError
from golive.spec import ConvertOptions, JobSpec, TuneOptions, VerifyOptions, load_job

__all__ = ["Event", "ConvertResult", "convert", "convert_job", "verify", "inspect", "tune", "load_session", "run"]

log = logging.getLogger(__name__)


@dataclass
class Event:
    """Progress of a long step: the CLI draws it, the web app streams it, the pipeline logs it."""

    step: str
    message: str
    done: int | None = None
    total: int | None = None


EventHandler = Callable[[Event], None]


@dataclass
class ConvertResult:
    output_dir: Path
    model_path: Path
    info: dict[str, Any]
    verification: Any = None  # VerifyReport, or None when verification was skipped
    notes: list[str] = field(default_factory=list)
    tuning: Any = None  # TuneResult when the job tuned too

    @property
    def passed(self) -> bool | None:
        return None if self.verification is None else self.verification.passed


def _emit(on_event: EventHandler | None, step: str, message: str, done: int | None = None, total: int | None = None) -> None:
    log.info("%s: %s", step, message)
    if on_event:
        on_event(Event(step, message, done, total))


def _validated(model, **values):
    try:
        return model(**values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise GoliveError(f"invalid options: {problems}") from None


# ---------------------------------------------------------------- convert

def convert(source: str | Path, output_dir: str | Path, *, verify_options: VerifyOptions | dict | None = None,
            on_event: EventHandler | None = None, **options: Any) -> ConvertResult:
    """Convert ``source`` to ONNX in ``output_dir`` (model.onnx + golive.json), verifying it unless ``verify=False``.

    ``options`` are the fields of :class:`golive.spec.ConvertOptions` (inputs, dynamic, opset, exporter, ...).
    """
    if isinstance(verify_options, dict):
        verify_options = _validated(VerifyOptions, **verify_options)
    job = _validated(JobSpec, source=str(source), output_dir=str(output_dir),
                     convert=_validated(ConvertOptions, **options), verify=verify_options or VerifyOptions())
    return convert_job(job, on_event=on_event)


def convert_job(job: JobSpec, *, on_event: EventHandler | None = None) -> ConvertResult:
    from golive import _io
    from golive._resolve import export_sample, input_specs, resolve_source
    from golive.frontends.base import get_frontend, guess_framework
    from golive.frontends.onnxfile import check_onnx, load_onnx
    from golive.tensors import load_data, parse_input_spec, sizes_of, specs_from_onnx

    opts = job.convert
    out = Path(job.output_dir).absolute()
    _io.check_output_dir(out)
    source = resolve_source(job.source)
    framework = opts.framework or guess_framework(source)
    from golive.runtime import SessionConfig, resolve_custom_ops

    opts = opts.model_copy(update={"framework": framework, "weights": _absolute(opts.weights), "data": _absolute(opts.data),
                                   "custom_ops": resolve_custom_ops(opts.custom_ops),
                                   "custom_translation": [_source_record(t) for t in opts.custom_translation],
                                   "imports": [_source_record(m) for m in opts.imports]})
    session = SessionConfig(custom_ops=opts.custom_ops)
    frontend = get_frontend(framework)

    _emit(on_event, "load", f"loading {framework} model from {job.source}")
    try:
        _import_user_modules(opts)
        loaded = frontend.load(source, opts)
    except (ModelLoadError, FrameworkError) as exc:
        guessed = _guess_quietly(source)
        if job.convert.framework and guessed and guessed != framework:
            exc.hint = f"{source} looks like a {guessed} model; is --framework {framework} right?"
        raise
    data = None
    if opts.data:
        names = [s.name for s in loaded.inputs] if loaded.inputs else [parse_input_spec(t).name for t in opts.inputs]
        data = load_data(opts.data, names or ["input"], loaded.output_names)
    specs = input_specs(loaded, opts, data)
    sample = export_sample(loaded, specs, data)

    with _io.staged_dir(out) as stage:
        model_path = stage / "model.onnx"
        _emit(on_event, "export", f"exporting to ONNX ({', '.join(str(s) for s in specs)})")
        result = frontend.export(loaded, specs, sample, model_path, opts)
        model = load_onnx(model_path, load_external_data=False)
        check_onnx(model_path)
        onnx_inputs, onnx_outputs = specs_from_onnx(model)
        ranges = {s.name: s.int_range for s in specs}
        onnx_inputs = [s.model_copy(update={"int_range": ranges.get(s.name)}) for s in onnx_inputs]
        notes = list(result.notes)
        if [s.name for s in onnx_inputs] != [s.name for s in specs]:
            notes.append(f"the ONNX model's inputs ({', '.join(s.name for s in onnx_inputs)}) differ from the "
                         f"source's ({', '.join(s.name for s in specs)})")
        export_sizes = sizes_of(sample, onnx_inputs)
        versions = _io.package_versions()
        info = {
            "golive_version": versions.get("golive", "dev"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": _source_record(job.source),
            "framework": framework,
            "source_kind": loaded.kind,
            "exporter": result.exporter,
            "exporter_attempts": result.attempts,
            "fallback_reason": result.fallback_reason,
            "notes": notes,
            "options": opts.model_dump(),
            "opset": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
            "inputs": [s.model_dump() for s in onnx_inputs],
            "outputs": [s.model_dump() for s in onnx_outputs],
            "export_sizes": export_sizes,
            "session": {"custom_ops": opts.custom_ops},
            "external_data": sorted(p.name for p in stage.iterdir() if p.name != "model.onnx"),
            "versions": versions,
            "verification": None,
        }
        report = None
        if opts.verify:
            vopts = job.verify if job.verify.data or not opts.data else job.verify.model_copy(update={"data": opts.data})
            report = _verify_loaded(frontend, loaded, model_path, onnx_inputs, onnx_outputs, export_sizes, vopts, on_event,
                                    session)
            info["verification"] = report.model_dump(mode="json")
        _io.write_json(stage / "golive.json", info)
        ran = job.model_copy(update={"source": _source_record(job.source), "output_dir": str(out), "convert": opts})
        _io.write_json(stage / "job.json", ran.to_json())
    _emit(on_event, "done", f"wrote {out / 'model.onnx'}")
    return ConvertResult(output_dir=out, model_path=out / "model.onnx", info=info, verification=report, notes=notes)


def _import_user_modules(opts: ConvertOptions) -> None:
    """--import: modules the source needs loaded first (a Keras model's registered custom layers, say)."""
    from golive._imports import load_module
    from golive._io import captured_output

    for name in opts.imports:
        with captured_output():  # what they print on import (TensorFlow's C++ log lines, say) goes to the debug log
            load_module(name, reuse=True)


def _guess_quietly(source: str) -> str | None:
    from golive.frontends.base import guess_framework

    try:
        return guess_framework(source)
    except GoliveError:
        return None


def _source_record(source: str) -> str:
    """Absolute path for files, folders and file.py:Name import paths; module import paths and pkg: as given."""
    path = Path(source)
    if path.exists():
        return str(path.absolute())
    head, sep, tail = source.rpartition(":")
    if head.endswith(".py") and Path(head).exists():
        return f"{Path(head).absolute()}:{tail}"
    return source


def _absolute(path: str | None) -> str | None:
    return str(Path(path).absolute()) if path and Path(path).exists() else path


def _verify_loaded(frontend, loaded, model_path, inputs, outputs, base_sizes, options: VerifyOptions, on_event,
                   session=None):
    from golive.tensors import load_data
    from golive.verification import plan_samples, tolerances_for, verify_model

    names = [s.name for s in inputs]
    data = load_data(options.data, names, [o.name for o in outputs]) if options.data else None
    stored_only = loaded.framework == "onnx" and data and all(s.outputs for s in data)
    if loaded.framework == "onnx" and not stored_only:
        from golive.runtime import custom_domains

        custom = custom_domains(loaded.model)
        if custom:
            ops = ", ".join(f"{domain}::{op}" for domain, in_domain in custom.items() for op in in_domain)
            raise DataError(f"nothing independent to verify against: ONNX's reference evaluator does not implement the "
                            f"custom operator(s) {ops}",
                            hint="give inputs with their expected outputs (--data test_data_set_0/ with output_K.pb, or "
                                 ".npz holding the outputs too), or skip verification with --no-verify")
    samples = plan_samples(inputs, options, base_sizes, data, alternates=not stored_only)
    output_names = [o.name for o in outputs]
    reference = None if stored_only else (lambda feeds: frontend.run(loaded, feeds, output_names))
    ref_name = f"expected outputs in {options.data}" if stored_only else (
        "ONNX reference evaluator" if loaded.framework == "onnx" else f"{loaded.framework} source model")

    def progress(i: int, n: int, label: str) -> None:
        _emit(on_event, "verify", label, i, n)

    note = None
    compute = loaded.details.get("compute_dtype")
    if compute and options.rtol is None and options.atol is None:
        from golive.verification import default_tolerance

        rtol, atol = default_tolerance(compute)
        options = options.model_copy(update={"rtol": rtol, "atol": atol})
        note = (f"the source computes in {compute} (its mixed-precision policy), so outputs are compared with "
                f"{compute} tolerances (rtol {rtol:g}, atol {atol:g}); --rtol/--atol override them")
    report = verify_model(model_path, samples, tolerances_for(outputs, options), reference=reference,
                          reference_name=ref_name, session_config=session, on_progress=progress)
    if note:
        report.notes.append(note)
    return report


# ---------------------------------------------------------------- verify

def _convert_info(folder: Path, verb: str) -> dict[str, Any]:
    """golive.json of a convert output folder, or a clear error when ``folder`` is not one."""
    info_path = folder / "golive.json"
    if not info_path.is_file():
        raise DataError(f"{folder} is not a golive convert output (it has no golive.json)",
                        hint=f"{verb} a folder written by golive convert, or an .onnx file")
    return json.loads(info_path.read_text())


def _saved_custom_ops(info: dict[str, Any]) -> list[str]:
    """The custom-op registrations a convert output was made with."""
    return list((info.get("session") or {}).get("custom_ops") or [])


def verify(target: str | Path, *, on_event: EventHandler | None = None, **options: Any):
    """Verify a convert output folder against its source, or an ONNX file against test data (or ONNX's reference evaluator).

    ``options`` are the fields of :class:`golive.spec.VerifyOptions` (data, rtol, atol, per_output, dim_sizes, ...).
    Returns a :class:`golive.verification.VerifyReport`; a folder also gets it saved as verify.json.
    """
    from golive import _io
    from golive.frontends.base import get_frontend
    from golive.frontends.onnxfile import load_onnx
    from golive.runtime import SessionConfig, resolve_custom_ops
    from golive.tensors import TensorSpec, specs_from_onnx

    vopts = _validated(VerifyOptions, **options)
    target = Path(target)
    custom_ops = resolve_custom_ops(vopts.custom_ops)
    if target.is_dir():
        info = _convert_info(target, "verify")
        session = SessionConfig(custom_ops=custom_ops or _saved_custom_ops(info))
        copts = ConvertOptions(**info["options"])
        frontend = get_frontend(info["framework"])
        from golive._resolve import resolve_source

        _emit(on_event, "load", f"loading {info['framework']} source {info['source']}")
        _import_user_modules(copts)
        loaded = frontend.load(resolve_source(info["source"]), copts)
        inputs = [TensorSpec(**s) for s in info["inputs"]]
        outputs = [TensorSpec(**s) for s in info["outputs"]]
        report = _verify_loaded(frontend, loaded, target / "model.onnx", inputs, outputs, info.get("export_sizes", {}),
                                vopts, on_event, session)
        _io.write_json(target / "verify.json", {"options": vopts.model_dump(), "report": report.model_dump(mode="json")})
        return report
    frontend = get_frontend("onnx")
    loaded = frontend.load(str(target), ConvertOptions())
    inputs, outputs = specs_from_onnx(load_onnx(target, load_external_data=False))
    return _verify_loaded(frontend, loaded, target, inputs, outputs, {}, vopts, on_event, SessionConfig(custom_ops=custom_ops))


# ---------------------------------------------------------------- inspect and run

def inspect(model: str | Path):
    """Summarize an ONNX model (or the model.onnx of an output folder)."""
    from golive.inspection import summarize

    path = Path(model)
    if path.is_dir():
        path = path / "model.onnx"
    return summarize(path)


def tune(target: str | Path, output_dir: str | Path, *, verify_options: VerifyOptions | dict | None = None,
         on_event: EventHandler | None = None, **options: Any):
    """Search transforms × session settings for the fastest configuration that passes the accuracy gate.

    ``target`` is a convert output folder or an .onnx file; ``options`` are the fields of
    :class:`golive.spec.TuneOptions`. Writes OUTPUT_DIR/best/{model.onnx,session.json}, report.json and
    report.html, and returns a :class:`golive.tuning.TuneResult`.
    """
    from golive.frontends.onnxfile import load_onnx
    from golive.tensors import TensorSpec, specs_from_onnx
    from golive.tuning import tune_model

    from golive.runtime import resolve_custom_ops

    topts = _validated(TuneOptions, **options)
    topts = topts.model_copy(update={"custom_ops": resolve_custom_ops(topts.custom_ops)})
    if isinstance(verify_options, dict):
        verify_options = _validated(VerifyOptions, **verify_options)
    target = Path(target)
    base_sizes: dict[str, int] = {}
    if target.is_dir():
        info = _convert_info(target, "tune")
        model = target / "model.onnx"
        specs = [TensorSpec(**s) for s in info["inputs"]]
        base_sizes = info.get("export_sizes", {})
        if not topts.custom_ops:
            topts = topts.model_copy(update={"custom_ops": _saved_custom_ops(info)})
    else:
        model = target
        specs, _ = specs_from_onnx(load_onnx(model, load_external_data=False))

    def forward(step: str, message: str, done: int | None, total: int | None) -> None:
        _emit(on_event, step, message, done, total)

    return tune_model(model, specs, base_sizes, Path(output_dir).absolute(), topts, verify_options, forward)


def load_session(tune_dir: str | Path):
    """The best configuration of a tuning run as a ready ``onnxruntime.InferenceSession``."""
    from golive.tuning import load_session as _load

    return _load(tune_dir)


def run(job: JobSpec | str | Path, *, on_event: EventHandler | None = None) -> ConvertResult:
    """Run a whole job (a JobSpec or a YAML/JSON job file): convert, verify, then tune when the job asks."""
    if not isinstance(job, JobSpec):
        job = load_job(job)
    result = convert_job(job, on_event=on_event)
    if job.tune is not None and result.passed is not False:
        tune_dir = Path(job.tune_dir) if job.tune_dir else result.output_dir / "tuned"
        result.tuning = tune(result.output_dir, tune_dir, verify_options=job.verify, on_event=on_event,
                             **job.tune.model_dump())
    elif job.tune is not None:
        result.notes.append("tuning skipped: the converted model failed verification")
    return result
