"""Step job functions: convert, verify, tune, and a whole job (convert → tune), on run folders.

Every front door runs these: the Python API in a worker process (``golive._worker``), the CLI in its own
process, the job queue's workers in a process per job, a Kubeflow component in its pod. Each step saves
the spec it ran, reports through a :class:`golive.events.StepContext` (events.jsonl, cancel checks) and
commits its folder with its record last; ``run_job`` skips a step whose output is complete and whose spec
is unchanged, so a rerun after a crash resumes instead of starting over.

The ``*_entry`` functions are the worker's side: JSON in, JSON out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive.errors import GoliveError
from golive.events import EVENTS_FILE, StepContext
from golive.rundir import JOB_FILE, RunFolder
from golive.spec import JobSpec, TuneOptions, VerifyOptions
from golive.steps.convert import ConvertResult, convert_key, convert_step, finished_convert, job_record
from golive.steps.tune import finished_tune, load_tune_result, tune_key, tune_step
from golive.steps.verify import verify_step

__all__ = ["ConvertResult", "convert_step", "verify_step", "tune_step", "run_job", "replay", "saved_step", "tune_dir_of"]


def tune_dir_of(job: JobSpec) -> Path:
    return Path(job.tune_dir).absolute() if job.tune_dir else Path(job.output_dir).absolute() / "tuned"


def run_job(job: JobSpec, ctx: StepContext) -> ConvertResult:
    """Convert (with verify), then tune when the job asks; each step skipped when already done with this spec."""
    from golive import _io

    out = Path(job.output_dir).absolute()
    tune_dir = tune_dir_of(job)
    if job.tune is not None and tune_dir == out:
        raise GoliveError("tune_dir is the output folder itself", hint="leave tune_dir out (OUTPUT_DIR/tuned) or name another folder")
    with RunFolder.claim(out, keep_failed=ctx.keep_failed) as folder, ctx.writing_to(out / EVENTS_FILE):
        done = finished_convert(out)
        if done is not None and done.spec_key == convert_key(job):
            ctx.emit("convert", "skipped: its output is complete and its spec unchanged", payload={"skipped": True})
            result = ConvertResult(output_dir=out, model_path=out / "model.onnx", record=done, skipped=True)
        else:
            result = convert_step(job, ctx, folder=folder)
        if job.tune is not None and result.passed is False:
            result.record.notes.append("tuning skipped: the converted model failed verification")
        elif job.tune is not None:
            finished = finished_tune(tune_dir)
            if finished is not None and finished.spec_key == tune_key(out, tune_dir, job.tune, job.verify):
                ctx.emit("tune", "skipped: its output is complete and its spec unchanged", payload={"skipped": True})
                result.tuning = load_tune_result(tune_dir)
            else:
                result.tuning = tune_step(out, tune_dir, job.tune, job.verify, ctx)
        _io.write_json(out / JOB_FILE, job_record(job, out).to_json())
    return result


def saved_step(path: str | Path) -> str:
    """Which step a saved spec describes: "tune" (tune.json), "verify" (verify.json) or "job" (a job file)."""
    import json

    path = Path(path)
    if path.suffix == ".json" and path.is_file():
        try:
            raw = json.loads(path.read_text())
        except ValueError:
            return "job"  # load_job says what is wrong with it
        if isinstance(raw, dict) and {"target", "spec_key", "options"} <= raw.keys():
            return "tune"
        if isinstance(raw, dict) and {"report", "options", "model_fingerprint"} <= raw.keys():
            return "verify"
    return "job"


def replay(path: str | Path, ctx: StepContext):
    """Run again the step a saved spec describes: a job file (job.yaml, OUT/job.json; finished steps with an
    unchanged spec are skipped), a tune folder's tune.json (skipped when its output is complete and unchanged)
    or a run folder's verify.json (verified again with the options it saved)."""
    from golive.rundir import TuneRecord, VerifyRecord, custom_ops_from_record, from_record, read_record
    from golive.spec import load_job

    path = Path(path).absolute()
    kind = saved_step(path)
    folder = path.parent
    if kind == "tune":
        record = read_record(path, TuneRecord)
        options = record.options.model_copy(update={"data": from_record(record.options.data, folder),
                                                    "custom_ops": [from_record(c, folder) or c for c in record.options.custom_ops]})
        target = from_record(record.target, folder)
        if finished_tune(folder) is not None and record.spec_key == tune_key(target, folder, options, record.verify_options):
            ctx.emit("tune", "skipped: its output is complete and its spec unchanged", payload={"skipped": True})
            return load_tune_result(folder)
        return tune_step(target, folder, options, record.verify_options, ctx)
    if kind == "verify":
        record = read_record(path, VerifyRecord)
        options = record.options.model_copy(update={"data": from_record(record.options.data, folder),
                                                    "custom_ops": custom_ops_from_record(record.options.custom_ops, folder)})
        return verify_step(folder, options, ctx, source=from_record(record.source, folder))
    return run_job(load_job(path), ctx)


# ---------------------------------------------------------------- the worker's side (JSON in, JSON out)

def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def convert_entry(ctx: StepContext, job: dict) -> dict:
    return _dump(convert_step(JobSpec.model_validate(job), ctx))


def run_entry(ctx: StepContext, job: dict) -> dict:
    return _dump(run_job(JobSpec.model_validate(job), ctx))


def replay_entry(ctx: StepContext, path: str) -> dict:
    return {"kind": saved_step(path), "value": _dump(replay(path, ctx))}


def verify_entry(ctx: StepContext, target: str, options: dict, source: str | None = None) -> dict:
    return _dump(verify_step(target, VerifyOptions.model_validate(options), ctx, source=source))


def tune_entry(ctx: StepContext, target: str, output_dir: str, options: dict, verify_options: dict | None) -> dict:
    verify = VerifyOptions.model_validate(verify_options) if verify_options is not None else None
    return _dump(tune_step(target, output_dir, TuneOptions.model_validate(options), verify, ctx))
