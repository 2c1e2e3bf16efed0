"""The profile step: a model.onnx, a convert folder, or a tune folder (its best and its baseline) profiled per node
into a folder of its own: profile.json, overlay.json (what the viewer colours the graph by) and the optimized graphs
the figures are drawn on. The folder is written beside itself and renamed into place: nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from golive._io import folder_in_place
from golive.errors import DataError, GoliveError
from golive.events import StepContext
from golive.frontends.onnxfile import load_onnx
from golive.profiling import ORIGIN_GRAPH, PROFILE_RECORD, ProfileRecord, ProfileReport, profile_model
from golive.rundir import from_record, parts_of, read_convert_record, read_record, resolve_target, to_record, tuned_record
from golive.runtime import SessionConfig
from golive.steps.tune import load_tune_result
from golive.tensors import bind_inputs, check_dim_names, dynamic_dims, load_data, resolve_sizes, specs_from_onnx, synthesize

__all__ = ["profile_step", "profile_targets"]

OVERLAY = "overlay.json"


Job = tuple[str, Path, SessionConfig, Path | None]  # label, model, session, the model its nodes are traced back to


def profile_targets(target: Path) -> tuple[list[Job], Path | None, Path]:
    """(label, model, session, origin) to profile, the inputs a tune measured on (None: none saved), and the default output
    folder, for a model.onnx, a convert folder, a tune folder or a copied best/ folder."""

    found = resolve_target(target, "profile")
    if found.kind == "onnx":
        return [("model", target, SessionConfig(), None)], None, target.with_name(f"{target.stem}-profile")
    if found.kind in ("tune", "best"):
        best, record = tuned_record(target)  # an unfinished tune folder is an error that says so
        jobs: list[Job] = [("best", best / "model.onnx", record.session, None)]
        if found.kind == "tune":
            report = load_tune_result(target).report
            baseline = Path(from_record(report.model, target)) if report else None
            if (
                baseline and baseline.is_file()
            ):  # the best's nodes are traced back to the model it was tuned from (or re-exported)
                origin = best / ORIGIN_GRAPH if (best / ORIGIN_GRAPH).is_file() else baseline
                jobs = [("best", best / "model.onnx", record.session, origin)]
                jobs.append(("baseline", baseline, SessionConfig(custom_ops=record.session.custom_ops), None))
        inputs = target / "inputs.npz"
        return jobs, inputs if inputs.is_file() else None, target / "profile"
    convert = read_convert_record(target, "profile")
    custom = [from_record(c, target) for c in convert.custom_ops]
    return [("model", target / "model.onnx", SessionConfig(custom_ops=custom), None)], None, target / "profile"


def _feeds(model: Path, data: str | None, saved: Path | None, dim_sizes: dict[str, int]) -> dict[str, Any]:
    import numpy as np

    specs, outputs = specs_from_onnx(load_onnx(model, load_external_data=False))
    check_dim_names(specs, dim_sizes)
    if data:
        samples = load_data(data, [s.name for s in specs], [o.name for o in outputs])
        if not samples:
            raise DataError(f"{data} holds no inputs")
        return bind_inputs(samples[0].inputs, specs, str(data))
    if saved is not None and not dim_sizes:
        with np.load(saved, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    return synthesize(specs, resolve_sizes(specs, dim_sizes))


def profile_step(
    target: str | Path,
    output_dir: str | Path | None,
    ctx: StepContext,
    *,
    dim_sizes: dict[str, int] | None = None,
    data: str | None = None,
    runs: int = 20,
) -> ProfileReport:

    if runs < 1:
        raise GoliveError(f"--runs {runs}: at least one run is needed", hint="e.g. --runs 20")
    target = Path(target).absolute()
    if output_dir and Path(output_dir).absolute() in (target, *target.parents):
        raise GoliveError(f"the profile folder {output_dir} would replace what it profiles", hint="choose another -o folder")
    parts = parts_of(target)
    if parts:
        return _profile_parts(target, parts, output_dir, ctx, dim_sizes=dim_sizes or {}, data=data, runs=runs)
    jobs, saved, default_out = profile_targets(target)
    out = Path(output_dir).absolute() if output_dir else default_out
    if out == target:
        raise GoliveError(f"the profile folder {out} would replace what it profiles", hint="choose another -o folder")
    feeds = _feeds(jobs[0][1], data, saved, dim_sizes or {})
    with folder_in_place(out) as partial:
        profiles: list[ProfileRecord] = []
        for i, (label, model, session, origin) in enumerate(jobs):
            ctx.check()
            ctx.emit("profile", f"profiling {label}: {model}", i, len(jobs))
            record = profile_model(model, session, feeds, partial, label=label, runs=runs, origin=origin)
            record.model = to_record(str(model), out)
            record.origin = to_record(str(origin), out) if origin else None
            profiles.append(record)
        report = ProfileReport(target=to_record(str(target), out), profiles=profiles)
        (partial / PROFILE_RECORD).write_text(report.model_dump_json(indent=2))
        (partial / OVERLAY).write_text(json.dumps(overlay(report), indent=1))
    ctx.emit("profile", f"profile written to {out}", len(jobs), len(jobs))
    return report


def _profile_parts(
    target: Path, parts: list[str], output_dir: str | Path | None, ctx: StepContext, *, dim_sizes: dict[str, int], data, runs: int
) -> ProfileReport:
    """Each part profiled into the subfolder of its name (sizes given apply to the parts that have those axes), then
    profile.json listing them; the whole folder is written beside itself and renamed into place."""

    if data:
        raise DataError(
            f"--data gives one model's inputs, and {target} holds {len(parts)} parts ({', '.join(parts)})",
            hint="profile one part with --data (golive profile TARGET/PART), or leave --data out",
        )
    dims = {}
    for name in parts:
        jobs, _, _ = profile_targets(target / name)
        dims[name] = dynamic_dims(specs_from_onnx(load_onnx(jobs[0][1], load_external_data=False))[0])
    unknown = sorted(set(dim_sizes) - {d for names in dims.values() for d in names})
    if unknown:
        raise GoliveError(
            f"--dim names {', '.join(unknown)}, which no part has",
            hint="; ".join(f"{name}: {', '.join(d) or 'no dynamic axes'}" for name, d in dims.items()),
        )
    out = Path(output_dir).absolute() if output_dir else target / "profile"
    with folder_in_place(out) as partial:
        reports = {}
        for name in parts:
            ctx.emit("profile", f"part {name}", payload={"part": name})
            sizes = {k: v for k, v in dim_sizes.items() if k in dims[name]}
            reports[name] = profile_step(target / name, partial / name, ctx, dim_sizes=sizes, runs=runs)
        report = ProfileReport(target=to_record(str(target), out), profiles=[], parts=reports)
        (partial / PROFILE_RECORD).write_text(report.model_dump_json(indent=2))
    return report


def overlay(report: ProfileReport) -> dict[str, Any]:
    """What the viewer draws per node of each optimized graph: share of the time (its colour), figures, origin."""
    return {
        "version": 1,
        "graphs": {
            p.label: {
                "model": p.optimized_model,
                "nodes": {
                    n.name: {
                        "op_type": n.op_type,
                        "provider": n.provider,
                        "mean_us": round(n.mean_us, 3),
                        "share": round(n.share, 5),
                        "replaced": n.replaced,
                    }
                    for n in p.nodes
                },
            }
            for p in report.profiles
        },
    }


def load_profile(folder: str | Path) -> ProfileReport:
    """profile.json of a profile folder (moved or not: its paths are relative)."""

    return read_record(Path(folder) / PROFILE_RECORD, ProfileReport)
