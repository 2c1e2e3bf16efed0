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
from golive.rundir import JOB_FILE, TUNE_RECORD, RunFolder
from golive.spec import JobSpec, TuneOptions, VerifyOptions
from golive.steps.convert import ConvertResult, convert_key, convert_step, finished_convert, job_record
from golive.steps.tune import tune_step, tune_unless_done
from golive.steps.verify import verify_step

__all__ = ["ConvertResult", "convert_step", "replay", "run_job", "saved_step", "tune_step", "verify_step"]


def run_job(job: JobSpec, ctx: StepContext) -> ConvertResult:
    """Convert (with verify), then tune when the job asks; each step skipped when already done with this spec."""
    from golive import _io

    out = Path(job.output_dir).absolute()
    tune_dir = job.tune_folder()
    if job.tune is not None and tune_dir == out:
        raise GoliveError(
            "tune_dir is the output folder itself", hint="leave tune_dir out (OUTPUT_DIR/tuned) or name another folder"
        )
    with RunFolder.claim(out, keep_failed=ctx.keep_failed) as folder, ctx.writing_to(out / EVENTS_FILE):
        done, key = finished_convert(out), convert_key(job)
        if done is not None and done.spec_key == key:
            ctx.emit("convert", "skipped: its output is complete and its spec unchanged", payload={"skipped": True})
            result = ConvertResult.of(out, done, skipped=True)
        else:
            result = convert_step(job, ctx, folder=folder, key=key)
        if job.tune is not None and not result.skipped and (tune_dir / TUNE_RECORD).exists():
            # a tuning result of the model converted before no longer counts; until the new one is committed
            # the tune folder is unfinished (load_session refuses it)
            with RunFolder.claim(tune_dir) as stale:
                (stale.path / TUNE_RECORD).unlink()
            ctx.emit("tune", "the earlier tuning result was for the model converted before: it no longer counts")
        if job.tune is not None and result.passed is False:
            result.record.notes.append("tuning skipped: the converted model failed verification")
        elif job.tune is not None:
            result.tuning = tune_unless_done(out, tune_dir, job.tune, job.verify, ctx)
        if job.profile is not None and result.passed is not False:
            from golive.steps.profile import profile_step

            profiled = tune_dir if job.tune is not None else out
            profile_step(profiled, None, ctx, dim_sizes=job.profile.dim_sizes, runs=job.profile.runs)
        _io.write_json(out / JOB_FILE, job_record(job, out).to_json())
    return result


def saved_step(path: str | Path) -> str:
    """Which step a saved spec describes, by its file name: "tune" (tune.json), "verify" (verify.json), or
    "job" (any other job file: job.yaml, OUT/job.json)."""
    from golive.rundir import TUNE_RECORD, VERIFY_RECORD

    return {TUNE_RECORD: "tune", VERIFY_RECORD: "verify"}.get(Path(path).name, "job")


def replay(path: str | Path, ctx: StepContext):
    """Run again the step a saved spec describes: a job file (job.yaml, OUT/job.json; finished steps with an
    unchanged spec are skipped), a tune folder's tune.json (skipped when its output is complete and unchanged)
    or a run folder's verify.json (verified again with the options it saved)."""
    from golive.rundir import TuneRecord, VerifyRecord, from_record, paths_from_record, read_record
    from golive.spec import load_job

    path = Path(path).absolute()
    kind = saved_step(path)
    folder = path.parent
    if kind == "tune":
        tuned = read_record(path, TuneRecord)
        verify_options = paths_from_record(tuned.verify_options, folder) if tuned.verify_options else None
        return tune_unless_done(
            from_record(tuned.target, folder), folder, paths_from_record(tuned.options, folder), verify_options, ctx
        )
    if kind == "verify":
        verified = read_record(path, VerifyRecord)
        return verify_step(folder, paths_from_record(verified.options, folder), ctx, source=from_record(verified.source, folder))
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


def profile_entry(
    ctx: StepContext, target: str, output_dir: str | None, dim_sizes: dict[str, int], data: str | None, runs: int
) -> dict:
    from golive.steps.profile import profile_step

    return _dump(profile_step(target, output_dir, ctx, dim_sizes=dim_sizes, data=data, runs=runs))
