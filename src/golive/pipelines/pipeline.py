"""The KFP v2 pipeline: convert (with verify) → tune → report, fanned out over a job's items.

Each component is a thin Python function in the golive image that calls golive.pipelines.components on
artifact paths: the convert step's ``Output[Model]`` is a golive run folder, the tune step's is a tune
folder (``best/`` inside, loadable with golive.load_session), ``Output[Metrics]`` carries the figures the
KFP UI lists (p50/p99, speed-up, accuracy) and ``Output[HTML]`` the tune report the UI renders.
"""

# no `from __future__ import annotations` here: kfp reads the components' annotations as types
import json
import warnings
from pathlib import Path
from typing import Any

from golive.errors import GoliveError
from golive.pipelines.job import DEFAULT_IMAGE, PipelineJob

__all__ = ["build_pipeline", "compile_pipeline", "run_local", "submit"]


def _kfp():
    try:
        import kfp  # noqa: F401
        from kfp import dsl
    except ImportError:
        raise GoliveError("Kubeflow Pipelines support needs the kfp SDK", hint="pip install 'golive[kubeflow]'") from None
    return dsl


def _components(image: str) -> dict[str, Any]:
    """The components, for ``image`` (the golive image every step runs in; kfp is already in it). KFP ships each
    component function's own source to its pod, so what a function uses it imports itself."""
    dsl = _kfp()
    from kfp.dsl import HTML, Input, Metrics, Model, Output

    @dsl.component(base_image=image, install_kfp_package=False)
    def convert(item: str, model: Output[Model], metrics: Output[Metrics]) -> str:
        """Convert the item's model to ONNX and verify it against its source (golive convert)."""
        import json

        from golive.pipelines.components import convert_item

        figures = convert_item(item, model.path)
        for key, value in figures["metrics"].items():
            metrics.log_metric(key, value)
        model.metadata.update(figures["metadata"])
        return json.dumps(figures)

    @dsl.component(base_image=image, install_kfp_package=False)
    def tune(item: str, model: Input[Model], tuned: Output[Model], metrics: Output[Metrics], report: Output[HTML]) -> str:
        """Find the fastest ONNX Runtime configuration that passes the accuracy gate (golive tune)."""
        import json

        from golive.pipelines.components import report_html, tune_item

        figures = tune_item(item, model.path, tuned.path)
        for key, value in figures["metrics"].items():
            metrics.log_metric(key, value)
        tuned.metadata.update({"best": figures["best"], "objective": figures["objective"], "item": figures["name"]})
        with open(report.path, "w") as f:
            f.write(report_html(tuned.path))
        return json.dumps(figures)

    @dsl.component(base_image=image, install_kfp_package=False)
    def rank(summaries: list, title: str, ranking: Output[HTML]):
        """Every tuned item in one table, fastest first."""
        from golive.pipelines.components import rank_html

        with open(ranking.path, "w") as f:
            f.write(rank_html(summaries, title))

    @dsl.component(base_image=image, install_kfp_package=False)
    def report(summary: str, title: str, ranking: Output[HTML]):
        """The tuned result in one table (the one-item form of rank)."""
        from golive.pipelines.components import rank_html

        with open(ranking.path, "w") as f:
            f.write(rank_html([summary], title))

    return {"convert": convert, "tune": tune, "rank": rank, "report": report}


def _resources(task, res) -> None:
    if res.cpu is not None:
        cpu = f"{res.cpu:g}"
        task.set_cpu_request(cpu).set_cpu_limit(cpu)
    if res.memory is not None:
        task.set_memory_request(res.memory).set_memory_limit(res.memory)


def build_pipeline(job: PipelineJob, image: str | None = None, *, parallelism: int | None = None):
    """The pipeline function for ``job``: its parameters default to the job's items (JSON). ``parallelism``
    caps the branches that run at once (a local run tunes one item at a time: two would share the CPUs)."""
    dsl = _kfp()
    ops = _components(image or job.image or DEFAULT_IMAGE)
    items = [i.to_json() for i in job.items]

    def branch(item):
        converted = ops["convert"](item=item)
        converted.set_display_name("convert + verify")
        _resources(converted, job.resources.convert)
        tuned = ops["tune"](item=item, model=converted.outputs["model"])
        tuned.set_display_name("tune")
        tuned.set_caching_options(False)  # timings belong to the moment and the machine they were taken on
        _resources(tuned, job.resources.tune)
        return tuned

    if job.fan_out:

        @dsl.pipeline(name=job.name, description=job.description or f"golive: convert and tune {len(items)} items")
        def pipeline(items: list = items):
            with dsl.ParallelFor(items, name="items", parallelism=parallelism or 0) as item:
                tuned = branch(item)
            ops["rank"](summaries=dsl.Collected(tuned.outputs["Output"]), title=job.name).set_display_name("rank")
    else:

        @dsl.pipeline(name=job.name, description=job.description or "golive: convert, verify and tune a model")
        def pipeline(item: str = items[0]):
            tuned = branch(item)
            ops["report"](summary=tuned.outputs["Output"], title=job.name).set_display_name("report")

    return pipeline


def compile_pipeline(job: PipelineJob, output: str | Path, image: str | None = None) -> Path:
    """Write the pipeline as KFP v2 YAML (IR) to ``output``."""
    from kfp import compiler

    output = Path(output)
    if output.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise GoliveError(
            f"{output}: a compiled pipeline is .yaml (or .json)", hint="golive pipeline compile job.yaml -o pipeline.yaml"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".partial-{output.name}")  # kfp wants the .yaml suffix
    try:
        compiler.Compiler().compile(build_pipeline(job, image), str(tmp))
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    return output


def run_local(job: PipelineJob, output_dir: str | Path) -> dict[str, Any]:
    """Run the pipeline here with KFP's local subprocess runner (no cluster, no Docker): each step in a process
    of its own, with this Python environment. Returns where each item's artifacts lie, and the ranking.

    ``kfp.local.init`` sets process-wide state, so callers outside a process golive owns use golive.pipelines.run."""
    _kfp()
    from kfp import local

    root = Path(output_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    before = {p.name for p in root.iterdir()}
    try:
        with warnings.catch_warnings():  # "no effect in the local runner": resources, the image; expected here
            warnings.filterwarnings("ignore", message=r".*(have no effect in the current local runner|non-Python base image).*")
            build_pipeline(job, job.image or DEFAULT_IMAGE, parallelism=1)()
    except RuntimeError as exc:
        raise GoliveError(
            f"the pipeline failed: {exc}", hint=f"the failed step's log is above; its files are under {root}"
        ) from None
    runs = sorted((p for p in root.iterdir() if p.is_dir() and p.name not in before), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise GoliveError(f"the local run wrote nothing under {root}")
    return collect(runs[-1], job)


def collect(run: Path, job: PipelineJob) -> dict[str, Any]:
    """Each item's artifact folders in a local run's folder, found through the items' names in the tune outputs."""
    items: dict[str, dict[str, str]] = {}
    for out in run.rglob("executor_output.json"):
        step = out.parent
        if step.name != "tune" or not (step / "tuned").is_dir():
            continue
        figures = json.loads(json.loads(out.read_text())["parameterValues"]["Output"])
        items[figures["name"]] = {
            "convert": str(step.parent / "convert" / "model"),
            "tuned": str(step / "tuned"),
            "report": str(step / "report"),
            "metrics": figures["metrics"],
            "best": figures["best"],
        }
    ranking = run / ("rank" if job.fan_out else "report") / "ranking"
    missing = sorted({i.name for i in job.items} - set(items))
    if missing:
        raise GoliveError(f"the local run has no tuned result for {', '.join(missing)}", hint=f"look under {run}")
    return {"run": str(run), "items": items, "ranking": str(ranking)}


def submit(job: PipelineJob, host: str, *, experiment: str | None = None, image: str | None = None) -> dict[str, str]:
    """Submit the pipeline to a Kubeflow Pipelines endpoint; returns the run's id and URL."""
    _kfp()
    import kfp

    try:
        client = kfp.Client(host=host)
        run = client.create_run_from_pipeline_func(
            build_pipeline(job, image), arguments={}, run_name=job.name, experiment_name=experiment
        )
    except GoliveError:
        raise
    except Exception as exc:  # the kfp client raises urllib3, ApiException, ValueError... for an unreachable host
        raise GoliveError(
            f"cannot submit to Kubeflow Pipelines at {host}: {type(exc).__name__}: {str(exc)[:300]}",
            hint="check the URL (the KFP API endpoint, e.g. http://localhost:8080 after a port-forward) "
            "and that you are signed in",
        ) from None
    return {"run_id": run.run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run.run_id}"}
