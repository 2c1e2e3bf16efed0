"""The verify step: ONNX Runtime against the source model (or stored expected outputs), run by run."""

from __future__ import annotations

from pathlib import Path

from golive._imports import import_user_modules
from golive.errors import DataError
from golive.events import StepContext
from golive.rundir import (
    VERIFY_RECORD,
    RunFolder,
    VerifyRecord,
    fingerprint,
    options_from_record,
    paths_to_record,
    read_convert_record,
    source_for,
    to_record,
    write_record,
)
from golive.spec import ConvertOptions, VerifyOptions

__all__ = ["verify_loaded", "verify_step"]


def verify_loaded(
    frontend, loaded, model_path, inputs, outputs, base_sizes, options: VerifyOptions, ctx: StepContext, session=None
):
    """Verify ``model_path`` against a loaded source model; one event per run, a cancel check before each."""
    from golive.tensors import load_data
    from golive.verification import default_tolerance, plan_samples, tolerances_for, verify_model

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
        from golive.runtime import custom_domains

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
    compute = loaded.details.get("compute_dtype")
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


def verify_step(target: str | Path, options: VerifyOptions, ctx: StepContext, *, source: str | None = None):
    """Verify a convert output folder against its source (saving verify.json), or an .onnx file."""
    from golive.frontends.base import get_frontend
    from golive.frontends.onnxfile import load_onnx
    from golive.runtime import SessionConfig, resolve_custom_ops
    from golive.tensors import specs_from_onnx

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
        frontend = get_frontend(record.framework)
        src = source_for(record, folder.path, source)
        ctx.emit("load", f"loading {record.framework} source {source or record.source}")
        ctx.check()
        import_user_modules(copts.imports)
        loaded = frontend.load(src, copts)
        if record.input_structure:
            loaded.details["input_structure"] = record.input_structure
        report = verify_loaded(
            frontend,
            loaded,
            folder.path / "model.onnx",
            record.inputs,
            record.outputs,
            record.export_sizes,
            options,
            ctx,
            session,
        )
        saved = paths_to_record(options, folder.path)
        write_record(
            folder.path / VERIFY_RECORD,
            VerifyRecord(
                options=saved,
                source=to_record(source, folder.path) if source else None,
                model_fingerprint=fingerprint(folder.path / "model.onnx"),
                report=report,
            ),
        )
        return report
