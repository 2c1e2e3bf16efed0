"""Tuning: find the fastest ONNX Runtime configuration whose outputs still pass the accuracy gate."""

from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from golive.errors import GoliveError, ProviderError
from golive.events import StepContext
from golive.rundir import SESSION_RECORD, ConvertRecord
from golive.spec import TuneOptions, VerifyOptions
from golive.tensors import TensorSpec
from golive.tuning.report import TuneReport

__all__ = ["TuneResult", "convert_sessions", "load_session", "load_sessions", "tune_model"]

_CALIBRATION_BATCHES = 8
AUTO_START = 3600.0  # --budget auto's provisional budget, replaced by its plan as soon as the baseline is measured
THROUGHPUT_BATCH = 8


class TuneResult(BaseModel):
    """What ``golive.tune`` returns: the report, and where the best model lies. A model converted as parts (encoder,
    decoder) has no report of its own: each part's result is in ``parts``."""

    output_dir: Path
    report: TuneReport | None = None
    skipped: bool = False  # the tune folder was complete and its spec unchanged: nothing was redone
    parts: dict[str, TuneResult] = Field(default_factory=dict)

    @property
    def reports(self) -> dict[str, TuneReport]:
        """The report of each part (``model`` for a model in one piece)."""
        if self.report is not None:
            return {"model": self.report}
        return {name: r for name, part in self.parts.items() for r in part.reports.values()}

    @property
    def best(self):
        if self.report is None:
            raise GoliveError("a model tuned as parts has a best per part", hint="read result.parts[NAME].best")
        return self.report.best

    @property
    def speedup(self) -> float:
        """The best against the baseline; for parts, one call of each part: the baselines' time over the bests' time."""
        if self.report is not None:
            return self.report.speedup
        base = sum(r.baseline.shown_p50() or 0.0 for r in self.reports.values())
        best = sum(r.best.shown_p50() or 0.0 for r in self.reports.values())
        return base / best if best else 0.0

    def summary(self) -> str:
        if self.report is not None:
            return self.report.summary()
        return "; ".join(f"{name}: {r.summary()}" for name, r in self.reports.items())

    def load_session(self):
        return load_session(self.output_dir)

    def _repr_html_(self) -> str:
        return tune_html(self)

    def __repr__(self) -> str:
        return f"TuneResult({self.output_dir}, {self.summary()})"


def tune_html(result: TuneResult) -> str:
    from golive._html import box, escape
    from golive.tuning.report import render_html_fragment

    skipped = " (skipped: already done with this spec)" if result.skipped else ""
    if result.report is None:
        return box(
            f"tune: {escape(str(result.output_dir))}{skipped}",
            "".join(f"<h4>{escape(name)}</h4>" + render_html_fragment(r) for name, r in result.reports.items()),
        )
    return box(f"tune: {escape(str(result.output_dir))}{skipped}", render_html_fragment(result.report))


def load_session(tune_dir: str | Path):
    """A configured ``onnxruntime.InferenceSession`` for the best model of a tuning run (or a copied best/ folder)."""
    from golive.rundir import tuned_record
    from golive.runtime import make_session

    best, record = tuned_record(tune_dir)
    return make_session(best / "model.onnx", record.session)


def load_sessions(folder: str | Path) -> dict[str, Any]:
    """A session for every part of a model, by part (``model`` for a model in one piece): a tune folder's tuned bests,
    or a convert folder's exported models (with the custom operators each needs)."""
    from golive.generation import SINGLE
    from golive.rundir import TUNE_RECORD, finished_tune, read_convert_record

    folder = Path(folder)
    if (folder / TUNE_RECORD).is_file() or (folder / SESSION_RECORD).is_file():
        record = finished_tune(folder)
        if record is not None and record.parts:
            return {name: load_session(folder / name) for name in record.parts}
        return {SINGLE: load_session(folder)}
    return convert_sessions(folder, read_convert_record(folder, "load"))


def convert_sessions(folder: Path, record) -> dict[str, Any]:
    """The sessions of a convert folder's exported model(s), by part (``model`` for a model in one piece), each with the
    custom operators its record names. ``record``: the folder's ConvertRecord (passed: a step has it before it is on
    disk)."""
    from golive.generation import SINGLE
    from golive.rundir import CONVERT_RECORD, ConvertRecord, from_record, read_record
    from golive.runtime import SessionConfig, make_session

    def session(where: Path, r: ConvertRecord):
        return make_session(where / "model.onnx", SessionConfig(custom_ops=[from_record(c, where) for c in r.custom_ops]))

    if record.parts:
        return {name: session(folder / name, read_record(folder / name / CONVERT_RECORD, ConvertRecord)) for name in record.parts}
    return {SINGLE: session(folder, record)}


def _where_the_time_goes(model: Path, baseline, best, work: Path, notes: list[str]) -> list[dict[str, Any]]:
    """Baseline and best profiled per node (ONNX Runtime's profiler, in a worker), summed by op type: what the
    tuning changed, in ms per run. Outside the budget; a failure is a note, not a failed tune."""
    from golive._isolate import in_worker
    from golive.profiling import ProfileRecord, compare

    folder = work / "profile"
    folder.mkdir(exist_ok=True)
    records = {}
    for label, c, origin in (("baseline", baseline, None), ("best", best, str(model))):
        ok, value = in_worker(
            "golive.profiling:profile_dump",
            (c.model, c.session.model_dump(), str(work / "inputs.npz"), str(folder), label, 8, origin, 2),
            timeout=600,
        )
        if not ok:
            notes.append(f"where the time goes: profiling the {label} failed: {value}")
            return []
        records[label] = ProfileRecord.model_validate(value)
    return [{"op_type": op, "baseline_ms": a, "best_ms": b} for op, a, b in compare(records["baseline"], records["best"])]


def _providers(options: TuneOptions, available: list[str], notes: list[str]) -> list[str]:
    """The providers to search: the ones asked for (each must be here, or exit 2 naming what to install), or every
    one with a device here; a plugin installed without a device here is said in the notes."""
    from golive.providers import PLUGINS, provider_problem, short_name
    from golive.tuning.space import NOT_FOR_TUNING, PROVIDER_ALIASES

    if not options.providers:
        for name in PLUGINS:
            problem = provider_problem(name)
            if problem and "not installed" not in problem[0]:
                notes.append(f"{short_name(name)} was not searched: {problem[0]} ({problem[1].split(';')[0]})")
        return [p for p in available if p not in NOT_FOR_TUNING]
    chosen = []
    for name in options.providers:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        problem = provider_problem(full)
        if problem:
            raise ProviderError(problem[0], hint=problem[1])
        if full not in chosen:
            chosen.append(full)
    return chosen


def _inputs(specs: list[TensorSpec], base_sizes: dict[str, int], options: TuneOptions):
    """The measurement inputs and the calibration batches: the user's data, or synthetic at the asked sizes."""
    from golive.tensors import bind_inputs, check_dim_names, dynamic_dims, load_data, resolve_sizes, synthesize

    names = [s.name for s in specs]
    if options.data:
        samples = load_data(options.data, names)
        bound = [bind_inputs(s.inputs, specs, where=s.label or options.data) for s in samples]
        return bound[0], bound[:_CALIBRATION_BATCHES] if len(bound) > 1 else [bound[0]]
    check_dim_names(specs, options.dim_sizes)
    wanted = dict(options.dim_sizes)
    if options.objective == "throughput" and "batch" in dynamic_dims(specs) and "batch" not in wanted:
        wanted["batch"] = THROUGHPUT_BATCH  # batching is half of throughput; --dim batch=N to choose
    sizes = resolve_sizes(specs, {**base_sizes, **wanted})
    feeds = synthesize(specs, sizes, seed=options.seed)
    calibration = [synthesize(specs, sizes, seed=options.seed + 1 + i) for i in range(_CALIBRATION_BATCHES)]
    return feeds, calibration


def _batch_inputs(specs: list[TensorSpec], base_sizes: dict[str, int], options: TuneOptions, work: Path, notes: list[str]):
    """Throughput: a function giving synthetic inputs at any batch size (None, with a note, when it cannot)."""
    from golive._io import save_npz
    from golive.tensors import dynamic_dims, resolve_sizes, synthesize

    if options.objective != "throughput":
        return None
    if "batch" not in dynamic_dims(specs):
        notes.append("batch size was not searched: the model has no dynamic batch axis")
        return None
    if options.data:
        notes.append("batch size was not searched: measured on --data, whose batch size is its own")
        return None

    def inputs_at(batch: int) -> Path:
        path = work / f"inputs_batch{batch}.npz"
        if not path.exists():
            sizes = resolve_sizes(specs, {**base_sizes, **options.dim_sizes, "batch": batch})
            save_npz(path, synthesize(specs, sizes, seed=options.seed))
        return path

    return inputs_at


def _source_record(folder: Path | None, record):
    """(the convert record, "") when the convert folder's source model is at hand, else (None, why not)."""
    from golive.rundir import source_for

    if folder is None or record is None:
        return None, "the model is an ONNX file, not a convert folder with its source"
    try:
        source_for(record, folder, None)
    except GoliveError as exc:
        return None, exc.message
    return record, ""


def _reexport_source(folder: Path | None, record) -> tuple[Path | None, str]:
    """The convert folder whose source the tuner may export again, or (None, why not)."""
    record, why = _source_record(folder, record)
    if record is None:
        return None, why
    if record.framework != "pytorch":
        return None, f"the source is a {record.framework} model"
    if record.exporter == "torchscript" and record.source_kind != "transformers":
        return None, "the model was exported with the TorchScript exporter already"
    return folder, ""


def _measure_source(folder: Path | None, record, inputs: Path, seconds: float, notes: list[str]):
    """The source model timed on the tune's inputs (the figure users ask for: how much faster than what I had?)."""
    from golive._isolate import in_worker

    record, why = _source_record(folder, record)
    if record is None:
        notes.append(f"the source model was not timed: {why}")
        return None
    ok, figures = in_worker("golive.tuning.worker:measure_source", (str(folder), str(inputs), seconds), timeout=300 + 6 * seconds)
    if not ok:
        notes.append(f"the source model could not be timed: {figures}")
        return None
    return figures


def _route_notes(candidates, best) -> list[str]:
    """Which export route won, with the fusions each reached."""

    def fused(chain: list[str]) -> dict | None:
        c = next((c for c in candidates if c.transforms == chain and c.transform_info), None)
        return c.transform_info[-1].get("fused") if c else None

    dynamo, again = fused(["ort_fusion"]), fused(["torchscript_export", "ort_fusion"])
    if again is None:
        return []
    won = "the TorchScript re-export" if best.transforms[:1] == ["torchscript_export"] else "the converted model"
    return [
        f"export route: {won} won. ONNX Runtime's optimizer fused {_counts(again)} in the TorchScript re-export "
        f"and {_counts(dynamo or {})} in the converted model"
    ]


def _counts(fused: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(fused.items())) or "nothing"


def tune_model(
    model: Path,
    specs: list[TensorSpec],
    base_sizes: dict[str, int],
    stage: Path,
    options: TuneOptions,
    verify_options: VerifyOptions | None,
    ctx: StepContext,
    *,
    folder: Path,
    source: Path | None = None,
    record: ConvertRecord | None = None,
) -> TuneReport:
    """Search, then write best/, report.json, report.html and inputs.npz into ``stage``, the partial folder
    of the tune folder ``folder``. ``options.custom_ops`` are absolute paths here; best/ gets copies, and
    the report names files relative to ``folder``. ``source``: the convert folder tuned, ``record`` its golive.json
    (read once, by the step)."""
    import onnxruntime as ort

    from golive import _io
    from golive.cpu import available_cpus, cpu_features
    from golive.frontends.onnxfile import load_onnx
    from golive.inspection import summarize
    from golive.optimize import TransformContext, check_transforms, get_transform
    from golive.providers import available_providers
    from golive.rundir import ConvertTimes, SessionRecord, carry_custom_ops, convert_times, copy_model, to_record, write_record
    from golive.tensors import sizes_of, specs_from_onnx, with_ranges
    from golive.tuning.gate import class_score_outputs
    from golive.tuning.report import render_html
    from golive.tuning.search import SearchState, run_search
    from golive.tuning.worker import preload_custom_ops
    from golive.verification import tolerances_for

    check_transforms(options.transforms)  # an unknown name fails before anything is measured
    started = time.monotonic()
    notes: list[str] = []
    available = available_providers()
    providers = _providers(options, available, notes)
    if {"CPUExecutionProvider", "OpenVINOExecutionProvider"} & set(providers):
        from golive.cpu import cpu_features
        from golive.tuning.space import cpu_plan

        facts = cpu_features()
        notes.append(cpu_plan(list(facts["isa"] or []), facts["cpu"], providers))  # type: ignore[call-overload,arg-type]
    feeds, calibration = _inputs(specs, base_sizes, options)
    folder_source = source
    source, why_not = _reexport_source(source, record)
    if why_not and options.transforms is not None and "torchscript_export" in options.transforms:
        notes.append(f"torchscript_export was not tried: {why_not}")
    proto = load_onnx(model, load_external_data=False)
    _, outputs = specs_from_onnx(proto)
    scores = class_score_outputs(proto)
    tolerances = tolerances_for(outputs, verify_options or VerifyOptions())
    if not options.data:
        notes.append("measured and calibrated on synthetic inputs; pass --data for your own")
    if scores and options.metrics.get("argmax", 0) > 0:
        notes.append(
            f"{', '.join(sorted(scores))}: class scores, so INT8/FP16 candidates must also keep the top-1 class "
            f"of at least {options.metrics['argmax']:.0%} of the rows (--metric argmax=0 turns this off)"
        )
    if options.objective == "throughput":
        notes.append(
            f"throughput: {options.concurrency} concurrent requests per session, batch of "
            f"{next(iter(feeds.values())).shape[0] if feeds else 1} per request"
        )
    for name in options.transforms or []:  # asked for by name, and for no provider searched here
        transform = get_transform(name)
        if transform.providers and not set(transform.providers) & set(providers):
            notes.append(f"{name} was not tried: {transform.unavailable_for(providers[0])}, not searched here")

    # --budget auto: planned once the baseline is measured (planning.plan); until then a deadline no baseline reaches
    budget = AUTO_START if options.budget == "auto" else float(options.budget)
    work = stage / "work"
    work.mkdir()
    _io.save_npz(work / "inputs.npz", feeds)
    inputs_at = _batch_inputs(specs, base_sizes, options, work, notes)
    state = SearchState(
        model=Path(model),
        work=work,
        options=options,
        providers=providers,
        available=available,
        tolerances=tolerances,
        ctx=TransformContext(
            calibration=calibration,
            provider=providers[0],
            work_dir=work,
            custom_ops=options.custom_ops,
            source=str(source) if source else None,
            gate=dict(options.metrics),
            deadline=started + budget,
            fixed_sizes=sizes_of(feeds, specs),
        ),
        step=ctx,
        started=started,
        deadline=started + budget,
        scores=scores,
        inputs_at=inputs_at,
        budget=budget,
        timed_source=options.time_source and _source_record(folder_source, record)[0] is not None,
        convert_times=convert_times(folder_source) if folder_source is not None else ConvertTimes(),
    )
    preload_custom_ops(options.custom_ops)
    baseline, best = run_search(state)
    notes.extend(_route_notes(state.candidates, best))
    ctx.check()
    if state.source_left_out:
        source_figures = None
    elif options.time_source:
        source_figures = _measure_source(folder_source, record, work / "inputs.npz", max(2.0, 2.5 * state.short_seconds), notes)
        ctx.check()
    else:
        source_figures = None
        notes.append("the source model was not timed: time_source is off")
    speed = (
        best.figures["throughput"] / baseline.figures["throughput"]
        if options.objective == "throughput"
        else baseline.figures["p50_ms"] / best.figures["p50_ms"]
    )
    best_dir = stage / "best"
    copy_model(Path(best.model), best_dir)
    shutil.copy2(work / "outputs" / f"{best.id}.npz", best_dir / "outputs.npz")  # what was measured, for checks
    origin = Path(model)
    if best.transforms[:1] == ["torchscript_export"]:  # a new graph: its nodes are traced back to the re-export
        from golive.profiling import ORIGIN_GRAPH, save_graph_only

        origin = best_dir / ORIGIN_GRAPH
        save_graph_only(work / "models" / "torchscript_export" / "model.onnx", origin)
    ctx.emit(
        "tune",
        "profiling the baseline and the best per operator",
        int(time.monotonic() - started),
        int(max(state.budget, time.monotonic() - started)),
    )
    time_by_op = _where_the_time_goes(origin, baseline, best, work, notes)
    for c in state.candidates:  # the work folder goes away; the report names the model that stays
        c.model = "best/model.onnx" if c is best else ""
        c.session = c.session.model_copy(update={"custom_ops": [to_record(p, folder) or p for p in c.session.custom_ops]})
    environment = {
        "cpus": available_cpus(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        **cpu_features(),
        "onnxruntime": ort.__version__,
    }
    session = best.session.model_copy(update={"custom_ops": carry_custom_ops(options.custom_ops, best_dir)})
    best_inputs, best_outputs = specs_from_onnx(load_onnx(best_dir / "model.onnx", load_external_data=False))
    write_record(
        best_dir / SESSION_RECORD,
        SessionRecord(
            session=session,
            transforms=best.transforms,
            candidate=best.id,
            placement=best.placement,
            environment=environment,
            figures=best.figures,
            inputs=with_ranges(best_inputs, specs),  # fixed_shape may have fixed the axes: the specs come from best/
            outputs=best_outputs,
        ),
    )
    report = TuneReport(
        model=to_record(str(model), folder) or str(model),
        objective=options.objective,
        budget_s=state.budget,
        budget_auto=options.budget == "auto",
        elapsed_s=time.monotonic() - started,
        baseline=baseline,
        best=best,
        speedup=speed,
        source=source_figures,
        speedup_over_source=source_figures["p50_ms"] / best.figures["p50_ms"] if source_figures else None,
        candidates=state.candidates,
        time_by_op=time_by_op,
        notes=notes + state.notes,
        environment={**environment, "providers": providers, "nodes": summarize(model).node_count},
    )
    _io.write_json(stage / "report.json", report.model_dump_json(indent=2))
    (stage / "report.html").write_text(render_html(report))
    _io.save_npz(stage / "inputs.npz", feeds)
    shutil.rmtree(work, ignore_errors=True)
    return report
