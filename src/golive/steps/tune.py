"""The tune step: search in a partial folder, then commit best/, the reports and tune.json (last)."""

from __future__ import annotations

import shutil
from pathlib import Path

from golive import _io
from golive.errors import DataError, GoliveError
from golive.events import EVENTS_FILE, StepContext
from golive.frontends.onnxfile import load_onnx
from golive.rundir import (
    TUNE_RECORD,
    ConvertRecord,
    RunFolder,
    TuneRecord,
    fingerprint,
    finished_tune,
    from_record,
    model_files,
    parts_of,
    paths_to_record,
    read_convert_record,
    read_record,
    resolve_target,
    step_key,
    to_record,
    write_record,
)
from golive.runtime import resolve_custom_ops
from golive.spec import TuneOptions, VerifyOptions
from golive.tensors import specs_from_onnx
from golive.tuning import TuneResult, tune_model
from golive.tuning.report import TuneReport, render_html

__all__ = ["load_tune_result", "tune_key", "tune_step", "tune_unless_done"]

_OUTPUTS = ["best", "report.json", "report.html", "inputs.npz"]


def _convert_record(target: Path) -> ConvertRecord | None:
    """golive.json of the convert folder tuned (None for an .onnx file): read once a tune, here."""

    kind = resolve_target(target, "tune", allowed=("onnx", "convert")).kind
    return read_convert_record(target, "tune") if kind == "convert" else None


def _target(target: Path, options: TuneOptions, record: ConvertRecord | None):
    """(model file, input specs, base sizes, options with absolute custom ops) of a convert folder or .onnx file."""

    options = options.model_copy(update={"custom_ops": resolve_custom_ops(options.custom_ops)})
    if record is not None:
        if not options.custom_ops:
            options = options.model_copy(update={"custom_ops": [from_record(c, target) for c in record.custom_ops]})
        return target / "model.onnx", record.inputs, {**record.export_sizes, **record.tune_sizes}, options
    specs, _ = specs_from_onnx(load_onnx(target, load_external_data=False))
    return target, specs, {}, options


def tune_key(
    target: str | Path,
    output_dir: str | Path,
    options: TuneOptions,
    verify_options: VerifyOptions | None,
    *,
    parts: list[str] | None = None,
) -> str:
    """The tune step's identity: its options as tune.json records them, the tolerances its gate uses (the
    only part of the verify options it reads), and the bytes of the model (external data included), data
    and custom ops it reads. ``parts``: the target's parts, when the caller has read them."""
    target, out = Path(target).absolute(), Path(output_dir).absolute()
    parts = parts_of(target) if parts is None else parts
    model = target / "model.onnx" if target.is_dir() else target
    files = [f for name in parts for f in model_files(target / name / "model.onnx")] if parts else model_files(model)
    tolerances = (verify_options or VerifyOptions()).model_dump(mode="json", include={"rtol", "atol", "per_output"})
    spec = {
        "target": to_record(str(target), out),
        "options": paths_to_record(options, out).model_dump(mode="json"),
        "tolerances": tolerances,
    }
    return step_key(spec, [*files, options.data, *options.custom_ops])


def load_tune_result(out: Path) -> TuneResult:
    record = read_record(out / TUNE_RECORD, TuneRecord)
    if record.parts:
        return TuneResult(output_dir=out, skipped=True, parts={name: load_tune_result(out / name) for name in record.parts})
    report = TuneReport.model_validate_json((out / "report.json").read_text())
    return TuneResult(output_dir=out, report=report, skipped=True)


def _tune_parts(
    target: Path,
    out: Path,
    convert: ConvertRecord,
    options: TuneOptions,
    verify_options: VerifyOptions | None,
    ctx: StepContext,
    key: str,
) -> TuneResult:
    """Each part tuned into the subfolder of its name with an equal share of the budget (auto: each plans its own);
    tune.json last."""

    parts = convert.parts
    if options.data:
        raise DataError(
            f"--data gives one model's inputs, and {target} holds {len(parts)} parts ({', '.join(parts)}) that take different ones",
            hint="leave --data out (each part is measured on synthetic inputs at its usual sizes), or tune one part: "
            f"golive tune {target / parts[-1]} -o DIR --data ...",
        )
    share = None if options.budget == "auto" else float(options.budget) / len(parts)
    with RunFolder.claim(out, keep_failed=ctx.keep_failed) as folder, ctx.writing_to(folder.path / EVENTS_FILE):
        # until every part is tuned again, the folder is not finished (load_sessions refuses it); what a tune of the
        # model in one piece left here goes
        (folder.path / TUNE_RECORD).unlink(missing_ok=True)
        for name in _OUTPUTS:
            stale = folder.path / name
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink(missing_ok=True)
        results = {}
        for name in parts:
            ctx.check()
            if share is None:  # each part plans its own
                ctx.emit("tune", f"part {name}: --budget auto", payload={"part": name})
                part_options = options
            else:
                ctx.emit("tune", f"part {name}: {share:.0f} s of the {options.budget:.0f} s budget", payload={"part": name})
                part_options = options.model_copy(update={"budget": share})
            results[name] = tune_unless_done(target / name, out / name, part_options, verify_options, ctx)
        result = TuneResult(output_dir=out, parts=results)
        record = TuneRecord(
            golive_version=_io.package_versions().get("golive", "dev"),
            target=to_record(str(target), out),
            options=paths_to_record(options, out),
            verify_options=paths_to_record(verify_options, out) if verify_options else None,
            spec_key=key,
            elapsed_s=sum(r.elapsed_s for r in result.reports.values()),
            best="; ".join(f"{name}: {r.best.id}" for name, r in result.reports.items()),
            speedup=result.speedup,
            parts=parts,
            generation=convert.generation,
        )
        _io.write_json(out / "report.html", render_html(result.reports))  # every part's report on one page
        write_record(out / TUNE_RECORD, record)
        ctx.emit("done", result.summary(), payload={"best": record.best, "speedup": record.speedup, "parts": parts})
    return result


def tune_unless_done(
    target: str | Path, output_dir: str | Path, options: TuneOptions, verify_options: VerifyOptions | None, ctx: StepContext
) -> TuneResult:
    """The tune step, or its result as it stands when the folder is complete and its spec unchanged."""
    key = tune_key(target, output_dir, options, verify_options)
    finished = finished_tune(Path(output_dir))
    if finished is not None and finished.spec_key == key:
        ctx.emit("tune", "skipped: its output is complete and its spec unchanged", payload={"skipped": True})
        return load_tune_result(Path(output_dir))
    return tune_step(target, output_dir, options, verify_options, ctx, key=key)


def tune_step(
    target: str | Path,
    output_dir: str | Path,
    options: TuneOptions,
    verify_options: VerifyOptions | None,
    ctx: StepContext,
    *,
    key: str | None = None,
) -> TuneResult:
    """Tune a convert folder or .onnx file into ``output_dir`` (best/, report.json, report.html, tune.json).
    ``key``: the step's tune_key, when the caller has computed it already."""

    target = Path(target).absolute()
    out = Path(output_dir).absolute()
    if out == target or out in target.parents:
        raise GoliveError(f"the tune folder {out} would replace what it tunes ({target})", hint="choose another -o folder")
    convert = _convert_record(target)
    parts = convert.parts if convert is not None else []
    key = key or tune_key(target, out, options, verify_options, parts=parts)
    if convert is not None and parts:
        return _tune_parts(target, out, convert, options, verify_options, ctx, key)
    given = options  # what tune.json records: the options as asked for, before the convert record fills them in
    model, specs, base_sizes, options = _target(target, options, convert)
    with RunFolder.claim(out, keep_failed=ctx.keep_failed) as folder, ctx.writing_to(folder.path / EVENTS_FILE):
        if folder.swept:
            ctx.emit("tune", f"swept {len(folder.swept)} partial folder(s) left by a killed run", payload={"swept": folder.swept})
        ctx.check()
        stage = folder.stage("tune")
        report = tune_model(
            model,
            specs,
            base_sizes,
            stage,
            options,
            verify_options,
            ctx,
            folder=folder.path,
            source=target if convert is not None else None,
            record=convert,
        )
        ctx.check()
        record = TuneRecord(
            golive_version=_io.package_versions().get("golive", "dev"),
            target=to_record(str(target), out),
            target_fingerprint=fingerprint(model),
            options=paths_to_record(given, out),
            verify_options=paths_to_record(verify_options, out) if verify_options else None,
            spec_key=key,
            elapsed_s=report.elapsed_s,
            best=report.best.id,
            speedup=report.speedup,
            generation=convert.generation if convert is not None else None,
        )
        folder.commit(stage, TUNE_RECORD, record, replaces=[*_OUTPUTS, *parts_of(folder.path)])  # a tune in parts before
        ctx.emit("done", report.summary(), payload={"best": report.best.id, "speedup": report.speedup})
    return TuneResult(output_dir=out, report=report)
