"""What one ICM search covers: ``icm.search_unit``.

* ``training_folds`` (ours): for held-out fold k, one search per persona over the union of the
  training folds; mutual predictability spans every training claim.
* ``part`` (the paper's fork, from its run scripts): one search per training fold part j != k,
  over that part's claims only (12-28 claims in the fork); the in-context examples of fold k are
  the union of the parts' labels, each part labelled by its own search. A part's search does not
  depend on k, so the cells of the other folds share it (the search store is content-addressed).

The cell builds its search tasks from :func:`search_sets` and reads one result per persona back
with :func:`best_per_persona`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping, Sequence

from plural_icm.choices import SearchUnit
from plural_icm.data.records import Claim
from plural_icm.search.records import SearchSummary


def search_sets(train: Sequence[Claim], folds: Mapping[str, int],
                unit: SearchUnit | str) -> list[tuple[int | None, list[Claim]]]:
    """``(part, claims)`` of the searches over the training claims ``train`` of one persona:
    one ``(None, train)`` for ``training_folds``, one ``(j, claims of fold j)`` per training fold
    ``j`` for ``part`` (in fold order; ``folds`` maps question id to fold)."""
    unit = SearchUnit(unit)
    if unit is SearchUnit.training_folds:
        return [(None, list(train))]
    parts: dict[int, list[Claim]] = {}
    for c in train:
        if c.question_id not in folds:
            raise ValueError(f"icm.search_unit=part: question {c.question_id!r} of claim "
                             f"{c.item_id!r} has no fold assigned")
        parts.setdefault(int(folds[c.question_id]), []).append(c)
    return sorted(parts.items())


def best_per_persona(stored: Sequence[Any]) -> dict[str, Any]:
    """One search result per persona from the stored searches of a cell.

    Restarts of one search set (same persona and part) compete on U (the highest wins, as
    published); the winners of a persona's parts are then merged into one result whose labels
    and confidences are the union of the parts' and whose summary averages U over the parts (the
    objective of one search, so "coherence" reads on the scale of a search over one part as the
    paper's Table 1, whatever the number of parts; each part's is in ``parts``), sums I and the claim
    counts, and averages P and the label accuracy weighted by claims (each part's P is its own
    mutual predictability: the parts never saw each other). ``summary["parts"]`` keeps each part's.
    """
    from plural_icm.search.store import best_of_restarts

    groups: dict[tuple[str, int | None], list] = {}
    for s in stored:
        groups.setdefault((s.task.persona, getattr(s.task, "part", None)), []).append(s)
    winners: dict[str, list] = {}
    for (pid, _), ss in sorted(groups.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        winners.setdefault(pid, []).append(best_of_restarts(ss))
    return {pid: ws[0] if len(ws) == 1 else merge_parts(ws) for pid, ws in winners.items()}


def merge_parts(parts: Sequence[Any]) -> Any:
    """The union of several parts' stored searches (see :func:`best_per_persona`)."""
    labels: dict[str, bool] = {}
    confidence: dict[str, float] = {}
    for p in parts:
        overlap = set(labels) & set(p.labels)
        if overlap:
            raise ValueError(f"search parts overlap on claims {sorted(overlap)[:5]}")
        labels.update(p.labels)
        confidence.update(p.confidence)
    sums = [p.summary for p in parts]
    n = [int(s.n_claims or len(p.labels)) for s, p in zip(sums, parts)]

    def weighted(key: str) -> float | None:
        vals = [(getattr(s, key), k) for s, k in zip(sums, n) if getattr(s, key) is not None]
        return sum(v * k for v, k in vals) / sum(k for _, k in vals) if vals else None

    warnings = [s.warning for s in sums if s.warning]
    summary = SearchSummary(
        # U: the mean over the parts (one search's objective, the paper's Table 1 "coherence"
        # scale); the parts' sum is in ``parts`` (each part's own U)
        U=sum(s.U for s in sums) / len(sums), P=weighted("P"), I=sum(s.I for s in sums),
        label_accuracy=weighted("label_accuracy"), n_claims=sum(n),
        n_predicted_unlabelled=sum(int(s.n_predicted_unlabelled or 0) for s in sums),
        iterations=sum(int(s.iterations or 0) for s in sums),
        search_unit=SearchUnit.part.value, seed_labels=sums[0].seed_labels,
        persona=sums[0].persona, context_order=sums[0].context_order,
        parts=[s.as_dict() | {"path": str(p.path)} for s, p in zip(sums, parts)],
        warning="; ".join(warnings) if warnings else None)
    return replace(parts[0], labels=labels, confidence=confidence, summary=summary,
                   computed=any(p.computed for p in parts))
