"""Tuning: find the fastest ONNX Runtime configuration whose outputs still pass the accuracy gate."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from golive.errors import GoliveError
from golive.spec import TuneOptions, VerifyOptions
from golive.tensors import TensorSpec

__all__ = ["TuneResult", "tune_model", "load_session"]

_CALIBRATION_BATCHES = 8
THROUGHPUT_BATCH = 8


class TuneResult:
    """What ``golive.tune`` returns: the report, and where the best model lies."""

    def __init__(self, output_dir: Path, report) -> None:
        self.output_dir = output_dir
        self.report = report

    @property
    def best(self):
        return self.report.best

    @property
    def speedup(self) -> float:
        return self.report.speedup

    def load_session(self):
        return load_session(self.output_dir)

    def _repr_html_(self) -> str:
        from golive.tuning.report import render_html

        return render_html(self.report)

    def __repr__(self) -> str:
        return f"TuneResult({self.output_dir}, {self.report.summary()})"


def load_session(tune_dir: str | Path):
    """A configured ``onnxruntime.InferenceSession`` for the best model of a tuning run."""
    from golive.runtime import SessionConfig, make_session

    best = Path(tune_dir) / "best"
    if not (best / "session.json").is_file():
        raise GoliveError(f"{tune_dir} holds no tuning result (no best/session.json)", hint="golive tune MODEL -o DIR")
    saved = json.loads((best / "session.json").read_text())
    return make_session(best / "model.onnx", SessionConfig(**saved["session"]))


def _providers(options: TuneOptions, available: list[str]) -> list[str]:
    from golive.tuning.space import PROVIDER_ALIASES

    if not options.providers:
        return [p for p in available if p != "AzureExecutionProvider"]
    chosen = []
    for name in options.providers:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise GoliveError(f"execution provider {name} is not available in this onnxruntime",
                              hint="available: " + ", ".join(available))
        chosen.append(full)
    return chosen


def _inputs(specs: list[TensorSpec], base_sizes: dict[str, int], options: TuneOptions):
    """The measurement inputs and the calibration batches: the user's data, or synthetic at the asked sizes."""
    from golive.tensors import bind_inputs, dynamic_dims, load_data, resolve_sizes, synthesize

    names = [s.name for s in specs]
    if options.data:
        samples = load_data(options.data, names)
        bound = [bind_inputs(s.inputs, specs, where=s.label or options.data) for s in samples]
        return bound[0], bound[:_CALIBRATION_BATCHES] if len(bound) > 1 else [bound[0]]
    unknown = sorted(set(options.dim_sizes) - set(dynamic_dims(specs)))
    if unknown:
        raise GoliveError(f"--dim names {', '.join(unknown)}, which is not a dynamic axis of the model",
                          hint="its dynamic axes are " + (", ".join(dynamic_dims(specs)) or "none"))
    wanted = dict(options.dim_sizes)
    if options.objective == "throughput" and "batch" in dynamic_dims(specs) and "batch" not in wanted:
        wanted["batch"] = THROUGHPUT_BATCH  # batching is half of throughput; --dim batch=N to choose
    sizes = resolve_sizes(specs, {**base_sizes, **wanted})
    feeds = synthesize(specs, sizes, seed=options.seed)
    calibration = [synthesize(specs, sizes, seed=options.seed + 1 + i) for i in range(_CALIBRATION_BATCHES)]
    return feeds, calibration


def tune_model(model: Path, specs: list[TensorSpec], base_sizes: dict[str, int], output_dir: Path,
               options: TuneOptions, verify_options: VerifyOptions | None = None,
               on_event: Callable[[str, str, int | None, int | None], None] | None = None) -> TuneResult:
    import onnxruntime as ort

    from golive import _io
    from golive.inspection import summarize
    from golive.optimize import TransformContext
    from golive.tensors import specs_from_onnx
    from golive.tuning.report import TuneReport, render_html
    from golive.tuning.search import SearchState, copy_model, cpu_count, run_search
    from golive.verification import tolerances_for
    from golive.frontends.onnxfile import load_onnx

    started = time.monotonic()
    available = ort.get_available_providers()
    providers = _providers(options, available)
    feeds, calibration = _inputs(specs, base_sizes, options)
    _, outputs = specs_from_onnx(load_onnx(model, load_external_data=False))
    tolerances = tolerances_for(outputs, verify_options or VerifyOptions())
    emit = on_event or (lambda *a: None)
    notes = []
    if not options.data:
        notes.append("measured and calibrated on synthetic inputs; pass --data for your own")
    if options.objective == "throughput":
        notes.append(f"throughput: {options.concurrency} concurrent requests per session, batch of "
                     f"{next(iter(feeds.values())).shape[0] if feeds else 1} per request")
    unavailable = [t for t in (options.transforms or []) if t == "fp16" and providers == ["CPUExecutionProvider"]]
    if unavailable:
        notes.append("fp16 is for GPU providers; none is available here, so it was not tried")

    with _io.staged_dir(output_dir) as stage:
        work = stage / "work"
        work.mkdir()
        np.savez(work / "inputs.npz", **feeds)
        state = SearchState(model=Path(model), work=work, options=options, providers=providers, available=available,
                            tolerances=tolerances,
                            ctx=TransformContext(calibration=calibration, provider=providers[0], work_dir=work, custom_ops=options.custom_ops,
                                                 options={**options.metrics, "deadline": started + options.budget}),
                            on_event=lambda step, msg, d, t: emit(step, msg, int(time.monotonic() - started),
                                                                  int(options.budget)),
                            deadline=started + options.budget)
        baseline, best = run_search(state)
        speed = (best.figures["throughput"] / baseline.figures["throughput"] if options.objective == "throughput"
                 else baseline.figures["p50_ms"] / best.figures["p50_ms"])
        best_dir = stage / "best"
        copy_model(Path(best.model), best_dir)
        best.model = str(output_dir / "best" / "model.onnx")
        shutil.copy2(work / "outputs" / f"{best.id}.npz", best_dir / "outputs.npz")  # what was measured, for checks
        environment = {"cpus": cpu_count(), "machine": platform.machine(), "onnxruntime": ort.__version__}
        (best_dir / "session.json").write_text(json.dumps({
            "session": best.session.model_dump(), "transforms": best.transforms, "candidate": best.id,
            "environment": environment, "figures": best.figures}, indent=2))
        report = TuneReport(
            model=str(model), objective=options.objective, budget_s=options.budget,
            elapsed_s=time.monotonic() - started, baseline=baseline, best=best, speedup=speed,
            candidates=state.candidates, notes=notes,
            environment={**environment, "providers": providers, "nodes": summarize(model).node_count})
        _io.write_json(stage / "report.json", report.model_dump_json(indent=2))
        (stage / "report.html").write_text(render_html(report))
        np.savez(stage / "inputs.npz", **feeds)
        shutil.rmtree(work, ignore_errors=True)
    return TuneResult(output_dir, report)
