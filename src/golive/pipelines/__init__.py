"""golive as a Kubeflow Pipelines (KFP v2) pipeline: convert (with verify) → tune → report, per model and
target, fanned out with ParallelFor and ranked at the end. Needs the ``kubeflow`` extra (the kfp SDK).

    golive.pipelines.compile("job.yaml", "pipeline.yaml", image="registry/golive:0.1.0")
    golive.pipelines.run("job.yaml", "runs/pipeline")     # here, with kfp.local (no cluster, no Docker)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golive.pipelines.job import DEFAULT_IMAGE, Item, PipelineJob, load_pipeline_job

__all__ = ["DEFAULT_IMAGE", "Item", "PipelineJob", "compile", "load_pipeline_job", "run", "submit"]


def compile(job: str | Path, output: str | Path, *, image: str | None = None) -> Path:
    """Compile the job file into KFP v2 pipeline YAML."""
    from golive.pipelines.pipeline import compile_pipeline

    return compile_pipeline(load_pipeline_job(job), output, image)


def run(job: str | Path, output_dir: str | Path) -> dict[str, Any]:
    """Run the pipeline on this machine with KFP's local runner; returns each item's artifact folders and metrics.

    KFP's local runner keeps process-wide configuration, so outside a process golive owns (the CLI) the run
    happens in a worker process."""
    from golive import api

    if api.running_in_place():
        return run_entry(None, str(job), str(output_dir))
    from golive._worker import call

    return call("golive.pipelines:run_entry", {"job": str(job), "output_dir": str(output_dir)}, what="the pipeline run")


def run_entry(ctx, job: str, output_dir: str) -> dict[str, Any]:
    from golive.pipelines.pipeline import run_local

    return run_local(load_pipeline_job(job), output_dir)


def submit(job: str | Path, host: str, *, experiment: str | None = None, image: str | None = None) -> dict[str, str]:
    """Submit the pipeline to a Kubeflow Pipelines endpoint; returns the run's id and URL."""
    from golive.pipelines.pipeline import submit as _submit

    return _submit(load_pipeline_job(job), host, experiment=experiment, image=image)
