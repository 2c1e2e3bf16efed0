"""Deciding between close candidates: alternating rounds (a duel), the winner confirmed against the baseline, and what
the rounds say about how steady the machine was."""

from __future__ import annotations

import numpy as np

from golive.tuning.measuring import BUSY, measure_candidate
from golive.tuning.space import (
    NOISY,
    Candidate,
)
from golive.tuning.state import NOISE, SearchState, rank_score

__all__ = ["beats", "confirm", "duel", "duel_all", "note_steadiness", "spread_of"]


def beats(state: SearchState, challenger: Candidate, incumbent: Candidate) -> bool:
    """Whether ``challenger`` (just measured) is faster than ``incumbent`` re-measured right after it.

    On a small or shared machine the same configuration measures tens of percent apart at different
    moments; figures taken back to back are the ones worth comparing.
    """
    if state.left() > 0:  # with the budget spent, the figures at hand decide (confirm() re-measures the winner)
        measure_candidate(state, incumbent, state.short_seconds, beside="beside_p50_ms" in challenger.figures)
    if incumbent.status != "passed":
        return True
    return rank_score(state, challenger) < rank_score(state, incumbent) * (1 - NOISE)


def duel(
    state: SearchState, incumbent: Candidate, challenger: Candidate, rounds: int = 2, prefer_challenger: bool = False
) -> Candidate:
    """The faster of two candidates, measured in alternation (challenger, incumbent, challenger, ...) whatever is
    left of the budget: on a small or shared machine a figure taken minutes earlier, in a slower or faster moment,
    decides nothing. A tie goes to the incumbent, or to the challenger when ``prefer_challenger``."""
    sums = {challenger.id: 0.0, incumbent.id: 0.0}
    for _ in range(rounds):
        for c in (challenger, incumbent):
            measure_candidate(state, c, state.short_seconds)
            if c.status != "passed":
                return incumbent if c is challenger else challenger
            sums[c.id] += c.score(state.options.objective)
    if prefer_challenger:
        return challenger if sums[challenger.id] <= sums[incumbent.id] else incumbent
    return challenger if sums[challenger.id] < sums[incumbent.id] else incumbent


def duel_all(state: SearchState, finalists: list[Candidate]) -> Candidate:
    ranked = sorted(finalists, key=lambda c: c.score(state.options.objective))
    winner = ranked[0]
    for challenger in ranked[1:]:
        if state.left() > 0:
            winner = duel(state, winner, challenger)
    return winner


def confirm(state: SearchState, baseline: Candidate, best: Candidate, rounds: int = 3) -> Candidate:
    """Re-measure the winner and the baseline in alternation: on a busy or small machine a single
    measurement can crown noise. Both keep the median of their rounds; the winner must still win."""
    samples: dict[str, list[dict]] = {baseline.id: [], best.id: []}

    def noisy() -> bool:  # the rounds of either lie far apart: a busy spell; more rounds outvote it
        return any(spread_of([f["p50_ms"] for f in samples[c.id]]) > NOISY for c in (baseline, best))

    est = state.estimator
    round_cost = 2 * est.measure_cost(beside=False) if est is not None else 0.0
    if round_cost > 0 and not state.auto:
        # an explicit budget is kept: fewer rounds (at least one pair side by side) where the rest of it pays for no more
        # (a 30 s tune of a 257 ms Whisper encoder spent 3 rounds of 8 s each and ended at 62 s)
        rounds = max(1, min(rounds, int(max(0.0, state.budget_left()) // round_cost)))
    done = 0
    # the extra rounds that outvote a busy spell run while the budget pays for them (a 30 s tune of a 80 ms ViT once
    # spent 4 more rounds, 12 s, past its budget)
    while done < rounds or (done < rounds + 4 and noisy() and state.budget_left() > round_cost):
        for c in (baseline, best):
            measure_candidate(state, c, state.short_seconds)
            if c.status != "passed":
                return baseline if c is best else best
            samples[c.id].append(dict(c.figures))
        done += 1
    rounds = done
    if noisy():
        state.notes.append(
            f"the machine was busy while the best and the baseline were re-measured ({rounds} alternating rounds, "
            f"spread {max(spread_of([f['p50_ms'] for f in samples[c.id]]) for c in (baseline, best)):.0%}): the speed-up is "
            "uncertain; tune again on a quieter machine"
        )
    else:
        state.notes.append(
            f"steady figures: the best and the baseline re-measured in {rounds} alternating rounds lay within "
            f"±{max(spread_of([f['p50_ms'] for f in samples[c.id]]) for c in (baseline, best)) / 2:.0%}"
        )
    for c in (baseline, best):
        runs = sorted(samples[c.id], key=lambda f: c.score_of(f, state.options.objective))
        c.figures = {
            **runs[len(runs) // 2],
            "confirm_rounds": rounds,
            "confirm_p50_ms": [round(f["p50_ms"], 4) for f in samples[c.id]],
        }
    if best.score(state.options.objective) < baseline.score(state.options.objective) * (1 - NOISE):
        return best
    best.reason = "measured faster during the search, but not faster than the baseline when both were re-measured in alternation"
    return baseline


def spread_of(values: list[float]) -> float:
    """(max - min) / median; 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mid = sorted(values)[len(values) // 2]
    return (max(values) - min(values)) / mid if mid else 0.0


def note_steadiness(state: SearchState) -> None:
    """Say how steady the machine was during the search, as the baseline timed beside the candidates saw it: what
    was found busy when measured (against the usual time known then), and what looks busy against the final one."""
    if len(state.beside_mean) < 2:
        return
    usual = float(np.median(state.beside_mean))
    slow = sum(b > usual * BUSY for b in state.beside_mean)
    span = (
        f"the baseline, timed beside {len(state.beside_mean)} measurements, took {min(state.beside_mean):.3g}-"
        f"{max(state.beside_mean):.3g} ms a run on average (median run {min(state.beside):.3g}-{max(state.beside):.3g} ms)"
    )
    if not slow and not state.busy and not state.scaled:
        state.notes.append(f"a steady machine during the search: {span}, never {BUSY:g}x its usual {usual:.3g} ms")
        return

    def many(n: int, what: str) -> str:
        return f"{n} {what}{'s' if n != 1 else ''}"

    found = [f"{many(len(state.busy), 'candidate')} measured again after a pause"] if state.busy else []
    if state.scaled:
        found.append(f"{many(len(state.scaled), 'candidate')} ranked by median latency scaled to the baseline's usual median")
    if not found:  # slow only against the usual time known at the end: early measurements, before it was known
        found.append("taken before the usual time was known, they stand as measured")
    state.notes.append(
        f"a busy machine during the search: {span}; {many(slow, 'measurement')} took more than {BUSY:g}x its usual "
        f"{usual:.3g} ms: " + "; ".join(found)
    )
