"""The verify step: ONNX Runtime against the source model (or stored expected outputs), run by run."""

from __future__ import annotations

from pathlib import Path

from golive._imports import import_user_modules
from golive.errors import DataError
from golive.events import StepContext
from golive.frontends.base import get_frontend, load_source
from golive.frontends.onnxfile import load_onnx
from golive.generation import check_generation
from golive.rundir import (
    CONVERT_RECORD,
    VERIFY_RECORD,
    ConvertRecord,
    RunFolder,
    VerifyRecord,
    fingerprint,
    from_record,
    options_from_record,
    paths_to_record,
    read_convert_record,
    read_record,
    source_for,
    to_record,
    write_record,
)
from golive.runtime import SessionConfig, custom_domains, resolve_custom_ops
from golive.spec import ConvertOptions, VerifyOptions
from golive.tensors import load_data, specs_from_onnx, synthesize
from golive.tuning import convert_sessions
from golive.verification import VerifyReport, default_tolerance, plan_samples, tolerances_for, verify_model

__all__ = ["verify_generation", "verify_loaded", "verify_step"]


def verify_loaded(
    frontend, loaded, model_path, inputs, outputs, base_sizes, options: VerifyOptions, ctx: StepContext, session=None
):
    """Verify ``model_path`` against a loaded source model; one event per run, a cancel check before each."""

    names = [s.name for s in inputs]
    data = load_data(options.data, names, [o.name for o in outputs]) if options.data else None
    runs_here = getattr(frontend, "runs_here", True)
    stored_only = bool((loaded.framework == "onnx" or not runs_here) and data and all(s.outputs for s in data))
    if not runs_here and not stored_only:
        raise DataError(
            f"nothing independent to verify against: a {loaded.framework} model cannot run on this machine",
            hint="give inputs with their expected outputs (--data x.npz holding inputs and outputs, or a "
            "test_data_set folder), or skip verification with --no-verify",
        )
    if loaded.framework == "onnx" and not stored_only:
        custom = custom_domains(loaded.model)
        if custom:
            ops = ", ".join(f"{domain}::{op}" for domain, in_domain in custom.items() for op in in_domain)
            raise DataError(
                f"nothing independent to verify against: ONNX's reference evaluator does not implement the "
                f"custom operator(s) {ops}",
                hint="give inputs with their expected outputs (--data test_data_set_0/ with output_K.pb, or "
                ".npz holding the outputs too), or skip verification with --no-verify",
            )
    samples = plan_samples(inputs, options, base_sizes, data, alternates=not stored_only)
    output_names = [o.name for o in outputs]
    reference = None if stored_only else (lambda feeds: frontend.run(loaded, feeds, output_names))
    ref_name = (
        f"expected outputs in {Path(options.data).name}"
        if stored_only and options.data
        else ("ONNX reference evaluator" if loaded.framework == "onnx" else f"{loaded.framework} source model")
    )

    def before(i: int, n: int, label: str) -> None:
        ctx.check()
        if i < n:
            ctx.emit("verify", label, i, n)

    def after(i: int, n: int, run) -> None:
        worst = {o.name: o.max_abs for o in run.outputs}
        ctx.emit(
            "verify",
            f"{run.label}: {'passed' if run.passed else 'FAILED'}",
            i + 1,
            n,
            payload={"run": run.label, "sizes": run.sizes, "passed": run.passed, "max_abs": worst, "error": run.error},
        )

    note = None
    compute = loaded.compute_dtype
    if compute and options.rtol is None and options.atol is None:
        rtol, atol = default_tolerance(compute)
        options = options.model_copy(update={"rtol": rtol, "atol": atol})
        note = (
            f"the source computes in {compute} (its mixed-precision policy), so outputs are compared with "
            f"{compute} tolerances (rtol {rtol:g}, atol {atol:g}); --rtol/--atol override them"
        )
    report = verify_model(
        model_path,
        samples,
        tolerances_for(outputs, options),
        reference=reference,
        reference_name=ref_name,
        session_config=session,
        on_progress=before,
        on_run=after,
    )
    if note:
        report.notes.append(note)
    return report


def verify_generation(loaded, record: ConvertRecord, folder: Path, options: VerifyOptions):
    """Greedy generation through the exported model(s) in ``folder`` against the source's generate, on a synthetic
    prompt (decoder-only) or synthetic encoder inputs (encoder-decoder), both at batch 2."""

    spec, generate = loaded.generation, loaded.generate
    sessions = convert_sessions(folder, record)
    if record.parts:
        encoder = read_record(folder / (spec.encoder or "encoder") / CONVERT_RECORD, ConvertRecord)
        inputs = synthesize(encoder.inputs, {**encoder.export_sizes, "batch": 2}, seed=options.seed)
    else:
        prompt = [s for s in record.inputs if s.name in ("input_ids", spec.attention_mask)]
        inputs = synthesize(prompt, {"batch": 2, "sequence": 8, "past_sequence": 0}, seed=options.seed)
    rtol, atol = default_tolerance("float32")
    return check_generation(
        generate, sessions, spec, inputs, options.new_tokens, atol=options.atol or atol, rtol=options.rtol or rtol
    )


def _verify_one(frontend, loaded, folder: Path, record: ConvertRecord, options: VerifyOptions, ctx: StepContext, session):
    """Verify the model of one convert folder as its record describes it."""
    return verify_loaded(
        frontend, loaded, folder / "model.onnx", record.inputs, record.outputs, record.export_sizes, options, ctx, session
    )


def _save(folder: Path, options: VerifyOptions, source: str | None, report, model: Path | None) -> None:
    write_record(
        folder / VERIFY_RECORD,
        VerifyRecord(
            options=paths_to_record(options, folder),
            source=to_record(source, folder) if source else None,
            model_fingerprint=fingerprint(model) if model else None,
            report=report,
        ),
    )


def verify_step(target: str | Path, options: VerifyOptions, ctx: StepContext, *, source: str | None = None):
    """Verify a convert output folder against its source (saving verify.json), or an .onnx file. A model exported as
    parts has each part verified (each saving its verify.json) and its generation checked; the report names the part
    of every figure."""

    target = Path(target)
    custom_ops = resolve_custom_ops(options.custom_ops)
    if not target.is_dir():
        frontend = get_frontend("onnx")
        loaded = frontend.load(str(target), ConvertOptions())
        inputs, outputs = specs_from_onnx(load_onnx(target, load_external_data=False))
        return verify_loaded(frontend, loaded, target, inputs, outputs, {}, options, ctx, SessionConfig(custom_ops=custom_ops))
    record = read_convert_record(target, "verify")
    with RunFolder.claim(target) as folder, ctx.writing_to(folder.path / "events.jsonl"):
        copts = options_from_record(record, folder.path)
        session = SessionConfig(custom_ops=custom_ops or copts.custom_ops)
        src = source_for(record, folder.path, source)
        ctx.emit("load", f"loading {record.framework} source {source or record.source}")
        ctx.check()
        import_user_modules(copts.imports)
        frontend, loaded = load_source(record.framework, src, copts, part=record.part, input_structure=record.input_structure)
        if record.parts:
            reports = {}
            for name in record.parts:
                part = read_convert_record(folder.path / name, "verify")
                ctx.emit("verify", f"part {name}", payload={"part": name})
                own = SessionConfig(custom_ops=custom_ops or [from_record(c, folder.path / name) for c in part.custom_ops])
                reports[name] = _verify_one(frontend, loaded.part(name), folder.path / name, part, options, ctx, own)
                _save(folder.path / name, options, source, reports[name], folder.path / name / "model.onnx")
            report = VerifyReport.of_parts(reports)
        else:
            report = _verify_one(frontend, loaded, folder.path, record, options, ctx, session)
        if record.generation and loaded.generate and options.new_tokens:
            ctx.check()
            report = report.with_generation(verify_generation(loaded, record, folder.path, options))
        _save(folder.path, options, source, report, None if record.parts else folder.path / "model.onnx")
        return report
