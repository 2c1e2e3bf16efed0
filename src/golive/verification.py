"""Compare ONNX Runtime's outputs with a reference (the source model, or stored expected outputs).

``compare_outputs`` holds the figures, ``plan_samples`` chooses the inputs (user data, or synthetic
batches at the export size and at a second size of every dynamic axis), ``verify_model`` runs it all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from golive._html import box, escape, table, verdict
from golive.errors import InputSpecError, first_line
from golive.generation import GenerationCheck
from golive.runtime import make_session, run_session
from golive.spec import VerifyOptions
from golive.tensors import Sample, TensorSpec, bind_inputs, check_dim_names, dynamic_dims, resolve_sizes, sizes_of, synthesize

__all__ = [
    "OutputStats",
    "RunResult",
    "VerifyReport",
    "compare_outputs",
    "default_tolerance",
    "plan_samples",
    "verify_model",
]

log = logging.getLogger(__name__)

# (rtol, atol) by element type of the output
_DEFAULT_TOL = {"float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2), "float32": (1e-3, 1e-4), "float64": (1e-5, 1e-6)}

Reference = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def default_tolerance(dtype: str) -> tuple[float, float]:
    """(rtol, atol) for an output of this dtype; exact for integers, booleans and strings.

    Non-tensor outputs (a ZipMap's sequence of maps) hold probabilities: float32 tolerances.
    """
    if dtype in _DEFAULT_TOL:
        return _DEFAULT_TOL[dtype]
    try:
        np.dtype(dtype)
    except TypeError:
        return _DEFAULT_TOL["float32"]
    return (0.0, 0.0)


class OutputStats(BaseModel):
    """How one output compares, over one run or over all runs."""

    # an error on an exact zero of the reference has an infinite relative error (and no rtol passes it): written as
    # Infinity, which reads back, rather than null, which does not (a record with one could not be read again)
    model_config = ConfigDict(ser_json_inf_nan="constants")

    name: str
    dtype: str
    shape: list[int] = Field(default_factory=list)
    rtol: float
    atol: float
    max_abs: float = 0.0
    max_rel: float = 0.0
    p99_abs: float = 0.0
    mismatch_share: float = 0.0
    atol_needed: float = Field(default=0.0, description="smallest atol that passes at this rtol")
    rtol_needed: float = Field(default=0.0, description="smallest rtol that passes at this atol (inf: no rtol can)")
    label_agreement: float | None = None
    passed: bool
    note: str | None = None


class RunResult(BaseModel):
    label: str
    part: str | None = Field(default=None, description="the part of a model exported as several (encoder, decoder)")
    sizes: dict[str, int] = Field(default_factory=dict)
    passed: bool
    outputs: list[OutputStats] = Field(default_factory=list)
    error: str | None = None


class VerifyReport(BaseModel):
    passed: bool
    reference: str
    runs: list[RunResult]
    outputs: list[OutputStats]
    notes: list[str] = Field(default_factory=list)
    generation: GenerationCheck | None = Field(
        default=None, description="a generative model: greedy generation through the ONNX model(s) against the source's"
    )

    def with_generation(self, check: GenerationCheck) -> VerifyReport:
        """This report with a generation check added: it fails the report when the tokens part (not on a near tie)."""
        return self.model_copy(update={"generation": check, "passed": self.passed and check.passed})

    @classmethod
    def of_parts(cls, reports: dict[str, VerifyReport]) -> VerifyReport:
        """One report for a model exported as parts: every run and output named by its part (``decoder/logits``)."""

        def named(items, attr: str, part: str):
            return [i.model_copy(update={attr: f"{part}/{getattr(i, attr)}"}) for i in items]

        runs = [
            r.model_copy(update={"label": f"{part}: {r.label}", "part": part, "outputs": named(r.outputs, "name", part)})
            for part, report in reports.items()
            for r in report.runs
        ]
        return cls(
            passed=all(r.passed for r in reports.values()),
            reference=next(iter(reports.values())).reference if reports else "",
            runs=runs,
            outputs=[o for part, report in reports.items() for o in named(report.outputs, "name", part)],
            notes=[f"{part}: {n}" for part, report in reports.items() for n in report.notes],
        )

    def _repr_html_(self) -> str:
        return verify_html(self)

    def failures(self) -> list[str]:
        """One line per failed run and output, for messages."""
        lines = []
        for run in self.runs:
            if run.error:
                lines.append(f"{run.label}: {run.error}")
            for o in run.outputs:
                if not o.passed:
                    lines.append(
                        f"{run.label}: {o.name} {o.note or f'max abs error {o.max_abs:.3g}, {o.mismatch_share:.1%} mismatched'}"
                    )
        return lines


# ---------------------------------------------------------------- comparison


def _as_array(value) -> np.ndarray:
    """ORT returns a list of dicts for a ZipMap output; make it a (rows, classes) array by sorted class."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = sorted(value[0])
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


class _Diffs:
    """Element-wise errors of one output, kept so that runs can be pooled."""

    def __init__(self) -> None:
        self.abs: list[np.ndarray] = []
        self.ref: list[np.ndarray] = []
        self.equal: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []


def _diff(actual: np.ndarray, expected: np.ndarray, bucket: _Diffs) -> None:
    numeric = actual.dtype.kind in "biufc" and expected.dtype.kind in "biufc"
    if numeric:
        a = actual.astype(np.float64).ravel()
        e = expected.astype(np.float64).ravel()
        both_nan = np.isnan(a) & np.isnan(e)
        d = np.abs(a - e)
        d[both_nan] = 0.0
        d[np.isnan(d)] = np.inf
        bucket.abs.append(d)
        bucket.ref.append(np.abs(np.nan_to_num(e, nan=0.0)))
    else:
        bucket.equal.append(actual.ravel() == expected.ravel())
    if actual.ndim == 1 and actual.dtype.kind not in "fc":  # class labels
        bucket.labels.append(actual.ravel() == expected.ravel())


def _stats(name: str, dtype: str, shape: list[int], bucket: _Diffs, rtol: float, atol: float) -> OutputStats:
    s = OutputStats(name=name, dtype=dtype, shape=shape, rtol=rtol, atol=atol, passed=True)
    if bucket.labels:
        s.label_agreement = float(np.concatenate(bucket.labels).mean())
    if bucket.equal:
        eq = np.concatenate(bucket.equal)
        s.mismatch_share = float(1 - eq.mean()) if eq.size else 0.0
    if bucket.abs:
        d = np.concatenate(bucket.abs)
        r = np.concatenate(bucket.ref)
        if d.size:
            s.max_abs = float(d.max())
            with np.errstate(divide="ignore", invalid="ignore"):
                s.p99_abs = float(np.percentile(d, 99))
                s.max_rel = float(np.where(d == 0, 0.0, d / r).max())
                s.rtol_needed = float(np.where(d <= atol, 0.0, (d - atol) / r).max())
            s.mismatch_share = float((d > atol + rtol * r).mean())
            s.atol_needed = float(max((d - rtol * r).max(), 0.0))
    s.passed = s.mismatch_share == 0.0
    return s


def compare_outputs(actual: dict, expected: dict, tolerances: dict[str, tuple[float, float]] | None = None) -> list[OutputStats]:
    """Compare one run's outputs by name; ``tolerances`` maps output name to (rtol, atol)."""
    return _pool([(actual, expected)], tolerances or {})


def _pool(pairs: list[tuple[dict, dict]], tolerances: dict[str, tuple[float, float]]) -> list[OutputStats]:
    names = list(pairs[0][1]) if pairs else []
    results = []
    for name in names:
        bucket = _Diffs()
        note = None
        dtype = shape = None
        for actual, expected in pairs:
            if name not in actual:
                note = "missing from the ONNX model's outputs"
                continue
            a, e = _as_array(actual[name]), _as_array(expected[name])
            dtype = dtype or a.dtype.name
            shape = list(a.shape)
            if a.shape != e.shape:
                if a.size == e.size and np.squeeze(a).shape == np.squeeze(e).shape:
                    a = a.reshape(e.shape)
                else:
                    note = f"shape {list(a.shape)} where the reference has {list(e.shape)}"
                    continue
            if (a.dtype.kind in "fc") != (e.dtype.kind in "fc") and (a.dtype.kind in "OSU" or e.dtype.kind in "OSU"):
                note = f"type {a.dtype} where the reference has {e.dtype}"
                continue
            _diff(a, e, bucket)
        rtol, atol = tolerances.get(name) or default_tolerance(dtype or "float32")
        s = _stats(name, dtype or "unknown", shape or [], bucket, rtol, atol)
        if note:
            s.note, s.passed = note, False
        results.append(s)
    return results


# ---------------------------------------------------------------- planning and running


def tolerances_for(outputs: list[TensorSpec], options: VerifyOptions) -> dict[str, tuple[float, float]]:
    """(rtol, atol) per output: defaults by dtype, then the global overrides, then per-output ones."""
    unknown = sorted(set(options.per_output) - {o.name for o in outputs})
    if unknown:
        raise InputSpecError(
            f"tolerance given for unknown output(s) {', '.join(unknown)}",
            hint="the model's outputs are " + ", ".join(o.name for o in outputs),
        )
    tol = {}
    for o in outputs:
        rtol, atol = default_tolerance(o.dtype)
        rtol = options.rtol if options.rtol is not None else rtol
        atol = options.atol if options.atol is not None else atol
        per = options.per_output.get(o.name)
        if per:
            rtol = per.rtol if per.rtol is not None else rtol
            atol = per.atol if per.atol is not None else atol
        tol[o.name] = (rtol, atol)
    return tol


def size_configs(inputs: list[TensorSpec], base_sizes: dict[str, int], options: VerifyOptions) -> list[dict[str, int]]:
    """The export sizes, then each dynamic axis alone at a second size (or the sizes the user asked for)."""

    check_dim_names(inputs, options.dim_sizes)
    dims = dynamic_dims(inputs)
    base = resolve_sizes(inputs, base_sizes)
    for d, values in options.dim_sizes.items():
        base[d] = values[0]
    configs = [base]
    for d in dims:
        alternates = options.dim_sizes[d][1:] if d in options.dim_sizes else [base[d] + 3]
        configs.extend({**base, d: v} for v in alternates)
    return configs


def _describe(sizes: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sizes.items())


def plan_samples(
    inputs: list[TensorSpec],
    options: VerifyOptions,
    base_sizes: dict[str, int],
    data: list[Sample] | None = None,
    *,
    alternates: bool = True,
) -> list[Sample]:
    """User data as given (plus synthetic runs at other sizes), or ``options.batches`` synthetic batches."""

    samples: list[Sample] = []
    if data:
        for i, s in enumerate(data):
            feeds = bind_inputs(s.inputs, inputs, where=s.label or f"sample {i}")
            samples.append(
                Sample(inputs=feeds, outputs=s.outputs, label=s.label or f"data #{i + 1}", sizes=sizes_of(feeds, inputs))
            )
        base_sizes = samples[0].sizes
        configs = size_configs(inputs, base_sizes, options)[1:] if alternates else []
        first = []
    else:
        configs = size_configs(inputs, base_sizes, options)
        first = [configs.pop(0)] * options.batches
    for i, sizes in enumerate(first + configs):
        seed = options.seed + i
        samples.append(
            Sample(
                inputs=synthesize(inputs, sizes, seed=seed),
                sizes=sizes,
                label=f"synthetic {_describe(sizes) or 'static'} seed={seed}",
            )
        )
    return samples


def verify_model(
    model_path,
    samples: list[Sample],
    tolerances: dict[str, tuple[float, float]],
    *,
    reference: Reference | None = None,
    reference_name: str = "expected outputs",
    session_config=None,
    on_progress: Callable[[int, int, str], None] | None = None,
    on_run: Callable[[int, int, RunResult], None] | None = None,
) -> VerifyReport:
    """Run ONNX Runtime on every sample and compare with ``reference(feeds)`` or the sample's stored outputs.

    ``on_progress`` is called before each sample (a step checks its cancel signal there), ``on_run`` after it.
    """

    session = make_session(model_path, session_config)
    order = [i.name for i in session.get_inputs()]
    runs: list[RunResult] = []
    pairs: list[tuple[dict, dict]] = []
    for i, sample in enumerate(samples):
        if on_progress:
            on_progress(i, len(samples), sample.label)
        feeds = {n: sample.inputs[n] for n in order}
        try:
            actual = run_session(session, feeds)
        except Exception as exc:
            runs.append(
                RunResult(
                    label=sample.label, sizes=sample.sizes, passed=False, error=f"ONNX Runtime failed: {first_line(exc, 400)}"
                )
            )
            if on_run:
                on_run(i, len(samples), runs[-1])
            continue
        if reference is not None:
            try:
                expected = reference(feeds)
            except Exception as exc:
                runs.append(
                    RunResult(
                        label=sample.label,
                        sizes=sample.sizes,
                        passed=False,
                        error=f"the {reference_name} failed on these inputs: {first_line(exc, 400)}",
                    )
                )
                if on_run:
                    on_run(i, len(samples), runs[-1])
                continue
        elif sample.outputs is not None:
            expected = sample.outputs
        else:
            runs.append(
                RunResult(label=sample.label, sizes=sample.sizes, passed=False, error="no reference outputs for this sample")
            )
            continue
        stats = _pool([(actual, expected)], tolerances)
        runs.append(RunResult(label=sample.label, sizes=sample.sizes, passed=all(s.passed for s in stats), outputs=stats))
        pairs.append((actual, expected))
        if on_run:
            on_run(i, len(samples), runs[-1])
    if on_progress:
        on_progress(len(samples), len(samples), "done")
    overall = _pool(pairs, tolerances)
    passed = bool(runs) and all(r.passed for r in runs)
    return VerifyReport(passed=passed, reference=reference_name, runs=runs, outputs=overall)


def verify_html(report: VerifyReport) -> str:

    rows = [
        (
            o.name,
            o.dtype,
            o.rtol,
            o.atol,
            o.max_abs,
            o.max_rel,
            f"{100 * o.mismatch_share:.2f}%",
            o.label_agreement,
            "passed" if o.passed else "FAILED",
        )
        for o in report.outputs
    ]
    runs = [(r.label, "passed" if r.passed else "FAILED", r.error or "") for r in report.runs]
    lines = [*report.notes, *([report.generation.summary()] if report.generation else [])]
    notes = "".join(f"<li>{escape(n)}</li>" for n in lines)
    return box(
        f"verify: {verdict(report.passed)} against the {escape(report.reference)}",
        table(
            ["output", "dtype", "rtol", "atol", "max abs", "max rel", "mismatch", "label agreement", "verdict"],
            rows,
            "class='verify-outputs'",
        )
        + table(["run", "verdict", "error"], runs, "class='verify-runs'")
        + (f"<ul>{notes}</ul>" if notes else ""),
    )
