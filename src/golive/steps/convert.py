"""The convert step: load the source, export it to ONNX, verify it, and commit the run folder."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from golive import _io
from golive._html import box, escape, table, verdict
from golive._imports import import_user_modules, is_import_path, split_file_attr
from golive._io import folder_in_place
from golive._resolve import export_sample, input_specs, resolve_source
from golive.errors import DataError, FrameworkError, GoliveError, InputSpecError, ModelLoadError
from golive.events import EVENTS_FILE, StepContext
from golive.frontends.base import get_frontend, guess_framework
from golive.frontends.onnxfile import check_onnx, load_onnx
from golive.rundir import (
    CONVERT_RECORD,
    CUSTOM_OPS_DIR,
    JOB_FILE,
    ConvertRecord,
    RunFolder,
    carry_custom_ops,
    paths_to_record,
    read_record,
    step_key,
    to_record,
    write_record,
)
from golive.runtime import SessionConfig, resolve_custom_ops
from golive.spec import ConvertOptions, JobSpec, VerifyOptions, map_job_paths, map_paths, paths_in
from golive.steps.verify import verify_generation, verify_loaded
from golive.tensors import load_data, parse_input_spec, sizes_of, specs_from_onnx, with_ranges
from golive.tuning import TuneResult, tune_html
from golive.verification import VerifyReport, verify_html

__all__ = ["ConvertResult", "convert_key", "convert_step", "finished_convert", "job_record"]


class ConvertResult(BaseModel):
    """What convert (and a whole job) returns: the run folder, its record, and the tuning when the job tuned."""

    output_dir: Path
    model_path: Path
    record: ConvertRecord
    skipped: bool = False  # the step's output was complete and its spec unchanged: nothing was redone
    tuning: TuneResult | None = None  # when the job tuned too
    parts: dict[str, ConvertRecord] = {}  # a model converted as parts: each part's record (in the subfolder of its name)

    @classmethod
    def of(cls, out: Path, record: ConvertRecord, *, skipped: bool = False) -> ConvertResult:
        """The result a convert folder holds: its model.onnx, or for a model in parts the folder and each part's record."""
        parts = {name: read_record(out / name / CONVERT_RECORD, ConvertRecord) for name in record.parts}
        model = out if record.parts else out / "model.onnx"
        return cls(output_dir=out, model_path=model, record=record, skipped=skipped, parts=parts)

    @property
    def verification(self):
        return self.record.verification

    @property
    def notes(self) -> list[str]:
        return self.record.notes

    @property
    def passed(self) -> bool | None:
        return None if self.verification is None else self.verification.passed

    def _repr_html_(self) -> str:
        return convert_html(self)

    @property
    def info(self) -> dict:
        """golive.json as a plain dict (earlier golive returned this; ``record`` is the typed form)."""
        return self.record.model_dump(mode="json")


def _verify_options(job: JobSpec) -> VerifyOptions:
    """Convert's own data verifies too, unless the verify section names other data."""
    if job.verify.data or not job.convert.data:
        return job.verify
    return job.verify.model_copy(update={"data": job.convert.data})


def _files_read(job: JobSpec) -> list[str | None]:

    source = job.source
    if source.startswith("pkg:"):
        try:
            source = resolve_source(source)
        except GoliveError:
            pass
    source_file: str | None = source
    if is_import_path(source):
        head, attr = split_file_attr(source)
        source_file = head if attr else None  # a module name is not a file of the job
    read = [split_file_attr(p)[0] for p in paths_in(job.convert)]  # a file.py:name reads the file
    return [source_file, *read, job.verify.data]


def _recorded_options(options: ConvertOptions, folder: Path, custom_ops: list[str]) -> ConvertOptions:
    """The options as golive.json records them: paths relative to the folder, custom ops as carried into it."""
    return map_paths(options, lambda p: to_record(p, folder)).model_copy(update={"custom_ops": custom_ops})


def convert_key(job: JobSpec) -> str:
    """The convert step's identity: its spec as the run folder records it, and the bytes of what it reads."""
    out = Path(job.output_dir).absolute()
    spec = {
        "source": to_record(job.source, out),
        "convert": _recorded_options(job.convert, out, [to_record(c, out) or c for c in job.convert.custom_ops]).model_dump(
            mode="json"
        ),
        "verify": paths_to_record(_verify_options(job), out).model_dump(mode="json"),
    }
    return step_key(spec, _files_read(job))


def finished_convert(out: Path) -> ConvertRecord | None:
    """The record of a complete convert output in ``out`` (record readable, model and data files there, every part
    complete), or None."""
    if not (out / CONVERT_RECORD).is_file():
        return None
    try:
        record = read_record(out / CONVERT_RECORD, ConvertRecord)
    except GoliveError:
        return None
    if record.parts:
        return record if all(finished_convert(out / name) is not None for name in record.parts) else None
    if not (out / "model.onnx").is_file() or not all((out / name).is_file() for name in record.external_data):
        return None
    return record


def fork_convert(src: str | Path, dst: str | Path) -> ConvertRecord:
    """Start the run folder ``dst`` from ``src``'s finished convert step: its record, model files and custom ops,
    hard-linked where the file system allows (golive replaces files and never rewrites one in place), so a job
    on ``dst`` with the same convert spec skips its convert step and writes only into ``dst``.

    ``dst`` is a sibling of ``src``: the record's paths are relative to the folder, and stay right there."""
    import os
    import shutil

    src, dst = Path(src).absolute(), Path(dst).absolute()
    record = finished_convert(src)
    if record is None:
        raise GoliveError(f"{src} holds no finished conversion", hint="convert the model first")
    if src.parent.resolve() != dst.parent.resolve():
        raise ValueError(f"{dst} is not a sibling of {src}: the record's relative paths would point elsewhere")
    if dst.exists():
        raise GoliveError(f"{dst} exists already", hint="fork into a new folder")

    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    with folder_in_place(dst, unique=True) as partial:
        for name in record.parts:  # each part a convert folder of its own
            shutil.copytree(src / name, partial / name, copy_function=link)
        for name in ("model.onnx", *record.external_data, CONVERT_RECORD) if not record.parts else (CONVERT_RECORD,):
            link(str(src / name), str(partial / name))
        if (src / CUSTOM_OPS_DIR).is_dir():
            shutil.copytree(src / CUSTOM_OPS_DIR, partial / CUSTOM_OPS_DIR, copy_function=link)
    return record


def job_record(job: JobSpec, folder: Path) -> JobSpec:
    """The job as its run folder keeps it (job.json): every path relative to ``folder``."""

    recorded = map_job_paths(job, lambda p: to_record(p, folder) or p)
    recorded.output_dir = to_record(str(Path(job.output_dir).absolute()), folder) or "."
    if job.tune_dir:
        recorded.tune_dir = to_record(str(Path(job.tune_dir).absolute()), folder)
    return recorded


def convert_step(job: JobSpec, ctx: StepContext, *, folder: RunFolder | None = None, key: str | None = None) -> ConvertResult:
    """Convert ``job.source`` into ``job.output_dir`` (model.onnx, golive.json, job.json), verifying unless told not to.
    ``key``: the step's convert_key, when the caller has computed it already (it reads every input file)."""
    if folder is None:
        with RunFolder.claim(job.output_dir, keep_failed=ctx.keep_failed) as claimed:
            return convert_step(job, ctx, folder=claimed, key=key)
    with ctx.writing_to(folder.path / EVENTS_FILE):
        if folder.swept:
            ctx.emit(
                "convert", f"swept {len(folder.swept)} partial folder(s) left by a killed run", payload={"swept": folder.swept}
            )
        return _convert(job, ctx, folder, key or convert_key(job))


def _convert(job: JobSpec, ctx: StepContext, folder: RunFolder, key: str) -> ConvertResult:

    out = folder.path
    source = resolve_source(job.source)
    opts = job.convert
    framework = opts.framework or guess_framework(source)
    opts = opts.model_copy(update={"framework": framework, "custom_ops": resolve_custom_ops(opts.custom_ops)})
    if opts.task and not (framework == "pytorch" and Path(source).is_dir()):
        raise FrameworkError(
            f"--task {opts.task} is for Hugging Face model folders; {job.source} is not one",
            hint="drop --task, or give the folder save_pretrained wrote",
        )
    frontend = get_frontend(framework)

    ctx.check()
    ctx.emit("load", f"loading {framework} model from {job.source}")
    try:
        import_user_modules(opts.imports)
        loaded = frontend.load(source, opts)
    except (ModelLoadError, FrameworkError) as exc:
        guessed = _guess_quietly(source)
        if job.convert.framework and guessed and guessed != framework:
            exc.hint = f"{source} looks like a {guessed} model; is --framework {framework} right?"
        raise
    if loaded.task is not None:
        ctx.emit("task", loaded.task.describe(), payload={"task": loaded.task.task, "reason": loaded.task.reason})
    given = [f for f in ("inputs", "dynamic", "output_names", "int_ranges") if getattr(opts, f)]
    if loaded.parts and given:
        flag = {"inputs": "--input", "dynamic": "--dynamic", "output_names": "--output-names", "int_ranges": "--int-range"}
        flags = ", ".join(flag[f] for f in given)
        raise InputSpecError(
            f"{flags} describe one model, and {job.source} exports as {len(loaded.parts)} parts "
            f"({', '.join(loaded.parts)}) whose inputs and outputs golive sets from the folder",
            hint="leave them out; to export one module of the model your own way, write a factory in a .py file and "
            "give its inputs with --input",
        )
    data = None
    if opts.data:
        if loaded.parts:
            raise DataError(
                f"--data gives one model's inputs, and {job.source} exports as {len(loaded.parts)} parts "
                f"({', '.join(loaded.parts)}) that take different inputs",
                hint="leave --data out: each part is verified on synthetic inputs at two sizes of each axis",
            )
        names = [s.name for s in loaded.inputs] if loaded.inputs else [parse_input_spec(t).name for t in opts.inputs]
        data = load_data(opts.data, names or ["input"], loaded.output_names)
    vopts = _verify_options(job)
    stage = folder.stage("convert")
    if loaded.parts:
        records = {}
        for name, part in loaded.parts.items():
            (stage / name).mkdir()
            records[name] = _export(job, ctx, frontend, part, opts, vopts, stage / name, out / name, None, key, part=name)
        record = _parts_record(job, loaded, records, opts, vopts, out, key)
    else:
        record = _export(job, ctx, frontend, loaded, opts, vopts, stage, out, data, key)
    generates = loaded.generation is not None and loaded.generate is not None and vopts.new_tokens > 0
    if opts.verify and generates and record.verification is not None:
        ctx.check()
        ctx.emit("verify", "greedy generation through the ONNX model(s) against the source's generate")
        check = verify_generation(loaded, record, stage, vopts)
        record.verification = record.verification.with_generation(check)
    ctx.check()
    _write_job(stage, job, out)
    old = finished_convert(out)
    replaces = ["model.onnx", "verify.json", "custom_ops", *(old.external_data if old else []), *(old.parts if old else [])]
    folder.commit(stage, CONVERT_RECORD, record, replaces=replaces)
    report = record.verification
    what = f"{len(record.parts)} parts ({', '.join(record.parts)})" if record.parts else "model.onnx"
    ctx.emit("done", f"wrote {what} ({record.exporter} exporter)", payload={"passed": report.passed if report else None})
    return ConvertResult.of(out, record)


def _write_job(stage: Path, job: JobSpec, out: Path) -> None:

    _io.write_json(stage / JOB_FILE, job_record(job, out).to_json())  # as given: replaying it gives the same key


def _export(
    job: JobSpec,
    ctx: StepContext,
    frontend,
    loaded,
    opts: ConvertOptions,
    vopts: VerifyOptions,
    stage: Path,
    out: Path,
    data,
    key: str,
    *,
    part: str | None = None,
) -> ConvertRecord:
    """Export one model into ``stage`` (which becomes ``out``), check it, verify it unless told not to, and return its
    record; a part's record is written into its folder here (the whole folder's record is written last, on commit)."""

    specs = input_specs(loaded, opts, data)
    sample = export_sample(loaded, specs, data)
    model_path = stage / "model.onnx"
    named = f"{part} " if part else ""
    ctx.check()
    ctx.emit("export", f"exporting {named}to ONNX ({', '.join(str(s) for s in specs)})", payload={"part": part})
    result = frontend.export(loaded, specs, sample, model_path, opts)
    ctx.check()
    model = load_onnx(model_path, load_external_data=False)
    check_onnx(model_path)
    onnx_inputs, onnx_outputs = specs_from_onnx(model)
    onnx_inputs = with_ranges(onnx_inputs, specs)
    notes = list(result.notes)
    if [s.name for s in onnx_inputs] != [s.name for s in specs]:
        notes.append(
            f"the ONNX model's inputs ({', '.join(s.name for s in onnx_inputs)}) differ from the "
            f"source's ({', '.join(s.name for s in specs)})"
        )
    export_sizes = sizes_of(sample, onnx_inputs)
    external = sorted(p.name for p in stage.iterdir() if p.name != "model.onnx" and p.is_file())
    report = None
    if opts.verify:
        session = SessionConfig(custom_ops=opts.custom_ops)
        report = verify_loaded(frontend, loaded, model_path, onnx_inputs, onnx_outputs, export_sizes, vopts, ctx, session)
    custom_ops = carry_custom_ops(opts.custom_ops, stage)
    versions = _io.package_versions()
    task = loaded.task
    record = ConvertRecord(
        golive_version=versions.get("golive", "dev"),
        source=to_record(job.source, out) or job.source,
        framework=opts.framework or "",
        source_kind=loaded.kind,
        exporter=result.exporter,
        exporter_attempts=result.attempts,
        fallback_reason=result.fallback_reason,
        notes=notes,
        options=_recorded_options(opts, out, custom_ops),
        verify_options=paths_to_record(vopts, out),
        opset={(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        inputs=onnx_inputs,
        outputs=onnx_outputs,
        export_sizes=export_sizes,
        custom_ops=custom_ops,
        input_structure=loaded.input_structure,
        output_structure=loaded.output_structure,
        external_data=external,
        versions=versions,
        verification=report,
        spec_key=key,
        task=task.task if task else None,
        task_reason=task.reason if task else None,
        part=part,
        generation=loaded.generation,
        tune_sizes=loaded.tune_sizes,
    )
    if part:
        write_record(stage / CONVERT_RECORD, record)
    return record


def _parts_record(job: JobSpec, loaded, records: dict[str, ConvertRecord], opts, vopts, out: Path, key: str) -> ConvertRecord:
    """The record of a model exported as parts: what it was, its task, its parts and their verification together."""

    exporters = {r.exporter for r in records.values()}
    reports = {name: r.verification for name, r in records.items() if r.verification is not None}
    versions = _io.package_versions()
    task = loaded.task
    return ConvertRecord(
        golive_version=versions.get("golive", "dev"),
        source=to_record(job.source, out) or job.source,
        framework=opts.framework or "",
        source_kind=loaded.kind,
        exporter=exporters.pop() if len(exporters) == 1 else ", ".join(f"{n}: {r.exporter}" for n, r in records.items()),
        notes=[f"{name}: {n}" for name, r in records.items() for n in r.notes],
        options=_recorded_options(opts, out, []),
        verify_options=paths_to_record(vopts, out),
        opset=next(iter(records.values())).opset,
        inputs=next(iter(records.values())).inputs,
        outputs=[],
        versions=versions,
        verification=VerifyReport.of_parts(reports) if len(reports) == len(records) else None,
        spec_key=key,
        task=task.task if task else None,
        task_reason=task.reason if task else None,
        parts=list(records),
        generation=loaded.generation,
    )


def _guess_quietly(source: str) -> str | None:

    try:
        return guess_framework(source)
    except GoliveError:
        return None


def convert_html(result: ConvertResult) -> str:

    rec = result.record
    io = [("input", t.name, t.dtype, t.shape) for t in rec.inputs] + [("output", t.name, t.dtype, t.shape) for t in rec.outputs]
    head = (
        f"convert: {escape(rec.framework)} → {escape(str(result.model_path))} with the {escape(rec.exporter)} exporter, "
        f"opset {escape(', '.join(f'{k} {v}' for k, v in rec.opset.items()))}; {verdict(result.passed)}"
        + (" (skipped: already done with this spec)" if result.skipped else "")
    )
    body = table(["", "name", "dtype", "shape"], io, "class='convert-io'")
    if rec.fallback_reason:
        body += f"<p>{escape(rec.fallback_reason)}</p>"
    if result.verification is not None:
        body += verify_html(result.verification)
    if result.tuning is not None:
        body += tune_html(result.tuning)
    return box(head, body)
