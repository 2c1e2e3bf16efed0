"""The search's state: what it measured so far, the budget left, the candidates, and how they rank."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from golive.events import StepContext
from golive.optimize import ModelFacts, TransformContext, get_transform
from golive.rundir import ConvertTimes
from golive.runtime import SessionConfig
from golive.spec import TuneOptions
from golive.tuning.estimate import Estimator
from golive.tuning.space import (
    Candidate,
    session_precision,
)

__all__ = ["NOISE", "SearchState", "allowed", "best_of", "new_candidate", "rank_score", "report_candidate"]

NOISE = 0.02  # a change must beat the best by more than this share to replace it


@dataclass
class SearchState:
    model: Path
    work: Path
    options: TuneOptions
    providers: list[str]
    available: list[str]
    tolerances: dict[str, tuple[float, float]]
    ctx: TransformContext
    step: StepContext
    started: float
    deadline: float
    candidates: list[Candidate] = field(default_factory=list)
    reference: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the search left out, and why
    scores: set[str] = field(default_factory=set)  # outputs holding class scores: gated by top-1 agreement too
    inputs_at: Callable[[int], Path] | None = None  # throughput: measurement inputs at another batch size
    share_deadline: float | None = None  # the end of the current provider's share of the budget
    facts: ModelFacts | None = None  # read from the model's graph when first needed
    not_applicable: dict[str, list[str]] = field(default_factory=dict)  # why -> transforms with nothing to do here
    baseline: Candidate | None = None  # the yardstick re-measured beside the search's candidates (latency)
    beside: list[float] = field(default_factory=list)  # the baseline's p50 beside each measurement, in order (ms)
    beside_mean: list[float] = field(default_factory=list)  # and its mean time per run (ms)
    busy: set[str] = field(default_factory=set)  # candidates first measured while the machine ran slow
    # the baseline's usual p50 beside measurements, for the candidates ranked scaled (kept here, not in their figures)
    usual_beside: dict[str, float] = field(default_factory=dict)
    scaled: set[str] = field(default_factory=set)  # and those still busy when measured again, or with no time to
    budget: float = 0.0  # seconds: the one asked for, or what --budget auto planned once the baseline was measured
    estimator: Estimator | None = None  # expected gain and cost of candidates, once the baseline was measured
    built: set[str] = field(default_factory=set)  # transform chains built so far ("+"-joined), cached on disk
    timed_source: bool = False  # the source model is timed after the search (its cost is kept inside the budget)
    convert_times: ConvertTimes = field(default_factory=ConvertTimes)  # what loading and exporting the source took
    source_left_out: bool = False  # its timing did not fit an explicit budget (said in the notes)

    @property
    def auto(self) -> bool:
        return self.options.budget == "auto"

    @property
    def short_seconds(self) -> float:
        """One measurement's timed part: scaled to the model's run time (estimate.measure_seconds) once the baseline
        was measured; a large explicit budget lengthens it (up to 3 s) for steadier figures."""
        if self.estimator is not None:
            return self.estimator.seconds
        return 1.0 if self.auto else float(min(max(self.budget / 80, 1.0), 3.0))

    def search_end(self) -> float:
        """When the search must stop: the budget's end less what its ending is expected to cost now (the confirm
        rounds, the ahead-of-time graph, the profile, the source timing; at most 40% of the budget), re-estimated as
        measurements teach the estimate their real cost; before the estimate exists, the provisional deadline."""
        if self.estimator is None:
            return self.deadline
        ending = self.estimator.ending_seconds(source=self.timed_source)
        return self.started + self.budget - min(ending, 0.4 * self.budget)

    def model_facts(self) -> ModelFacts:
        """The model's graph facts, read once when first needed."""
        if self.facts is None:
            self.facts = ModelFacts.of(self.model)
        return self.facts

    def left(self) -> float:
        """Seconds left to the search (the current provider's share of it, when several are searched)."""
        end = self.search_end()
        return min(end, self.share_deadline or end) - time.monotonic()

    def budget_left(self) -> float:
        """Seconds left of the whole budget, the ending's included."""
        return self.started + self.budget - time.monotonic()

    def progress(self, message: str, payload: dict[str, Any] | None = None) -> None:
        """A tune event: done/total are seconds spent of the budget."""
        self.step.emit("tune", message, int(time.monotonic() - self.started), int(self.budget), payload)

    def stopping(self) -> bool:
        return self.step.cancel.is_set()


def allowed(state: SearchState, name: str, provider: str | None = None) -> bool:
    """Whether the search may try ``name`` (on ``provider``: one it suits; the others cannot help there). A transform
    with nothing to do on this model (decided from its graph) is not tried: the report says which, and why."""
    if provider is not None and get_transform(name).unavailable_for(provider):
        return False
    if state.options.transforms is not None and name not in state.options.transforms:
        return False
    why = get_transform(name).not_applicable(state.model_facts())
    if why:
        state.not_applicable.setdefault(why, [])
        if name not in state.not_applicable[why]:
            state.not_applicable[why].append(name)
        return False
    return True


def new_candidate(state: SearchState, stage: str, transforms: list[str], session: SessionConfig) -> Candidate:
    """A new candidate, or the one already tried with the same transforms and settings."""
    disabled = sorted({*session.disabled_optimizers, *(o for t in transforms for o in get_transform(t).disables)})
    if disabled != session.disabled_optimizers:  # what a transform undid, the session must not redo at load
        session = session.model_copy(update={"disabled_optimizers": disabled})
    for c in state.candidates:
        if c.transforms == transforms and c.session == session and c.stage != "ahead-of-time":
            return c
    precision = next((get_transform(t).precision for t in transforms if get_transform(t).precision != "fp32"), "fp32")
    if precision == "fp32":  # the provider computing in lower precision (OpenVINO's bf16 hint, TensorRT's fp16)
        precision = session_precision(session) or precision
    c = Candidate(id=f"c{len(state.candidates):03d}", stage=stage, transforms=transforms, session=session, precision=precision)
    state.candidates.append(c)
    return c


def report_candidate(state: SearchState, c: Candidate) -> None:
    """One event per candidate judged, carrying its row of the report."""
    f = c.figures
    cos = c.min_cosine
    row = {
        "id": c.id,
        "stage": c.stage,
        "transforms": c.transforms,
        "session": c.session.describe(),
        "precision": c.precision,
        "status": c.status,
        "reason": c.reason,
        "p50_ms": f.get("p50_ms"),
        "p99_ms": f.get("p99_ms"),
        "throughput": f.get("throughput"),
        "min_cosine": cos,
    }
    figure = f"p50 {f['p50_ms']:.3f} ms" if f.get("p50_ms") else c.reason[:80]
    state.progress(f"{c.id} {c.status}: {figure}", {"candidate": row})


def best_of(state: SearchState, cands: list[Candidate] | None = None) -> Candidate | None:
    passing = [c for c in (cands if cands is not None else state.candidates) if c.status == "passed"]
    return min(passing, key=lambda c: rank_score(state, c)) if passing else None


def rank_score(state: SearchState, c: Candidate) -> float:
    """The score candidates measured at different moments are ranked by (lower is better): a latency taken in a busy
    spell that did not pass is scaled by how much slower the baseline beside it ran than usually, so the spell does
    not decide the order; other figures as measured (a quiet machine's yardstick wavers too much to scale by)."""
    usual, beside = state.usual_beside.get(c.id), c.figures.get("beside_p50_ms")
    if usual and beside and "p50_ms" in c.figures:
        return float(c.figures["p50_ms"]) * float(usual) / float(beside)
    return c.score(state.options.objective)
