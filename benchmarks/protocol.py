"""Leave-one-group-out tuning that cannot fool itself: choose on the other groups, score the one left out."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)


@dataclass
class Fold(Generic[C]):
    held_out: str
    chosen: C
    threshold: float | None
    score: float


@dataclass
class Protocol(Generic[C]):
    """in_sample: the best candidate on every group (what tuning on the judging files reports);
    nested: each group scored with the candidate (and threshold) chosen on the others — the honest figure;
    per_candidate: each candidate's out-of-group figure (only its threshold chosen on the others);
    shipped: the candidate with the best out-of-group figure."""

    in_sample: float
    in_sample_choice: C
    nested: float
    folds: list[Fold[C]]
    per_candidate: dict[C, float]
    shipped: C


def leave_one_out(
    groups: Sequence[str],
    candidates: Sequence[C],
    fit: Callable[[C, list[str]], tuple[float, float | None]],
    apply: Callable[[C, list[str], float | None], float],
    total: Callable[[list[tuple[C, str, float | None]]], float],
) -> Protocol[C]:
    """`fit(candidate, groups)` -> (objective, threshold chosen on those groups);
    `apply(candidate, groups, threshold)` -> raw objective there at that threshold (additive over groups);
    `total(assignments)` -> the overall figure of (candidate, group, threshold) assignments."""
    scored = [(fit(c, list(groups)), c) for c in candidates]
    (best_val, _thr), best_c = max(scored, key=lambda t: t[0][0])
    folds: list[Fold[C]] = []
    assign: list[tuple[C, str, float | None]] = []
    per: dict[C, list[tuple[C, str, float | None]]] = {c: [] for c in candidates}
    for g in groups:
        others = [o for o in groups if o != g]
        fits = [(fit(c, others), c) for c in candidates]
        (_v, thr), chosen = max(fits, key=lambda t: t[0][0])
        folds.append(Fold(g, chosen, thr, apply(chosen, [g], thr)))
        assign.append((chosen, g, thr))
        for (_v2, t2), c in fits:
            per[c].append((c, g, t2))
    per_candidate = {c: total(a) for c, a in per.items()}
    shipped = max(candidates, key=lambda c: per_candidate[c])
    return Protocol(best_val, best_c, total(assign), folds, per_candidate, shipped)
