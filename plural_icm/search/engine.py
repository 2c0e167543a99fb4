"""The ICM search: simulated annealing on U = alpha * P(D) - I(D).

One :class:`ICMSearch` labels the claims of one (model, dataset, persona, fold) search set. It is
written as a generator that *yields* the prompts it needs scored and receives their label
log-probabilities, so :func:`run_searches` can interleave many searches (personas x folds x
restarts) and send their prompts to the model in shared batches.

What is computed is the published algorithm (Wen et al. 2025; see the README for its defects that
we fix): leave-one-out mutual predictability over the labelled set, the model's prediction as the
proposal, consistency repair, Metropolis acceptance indexed by accepted changes.

The order of the other claims in each leave-one-out context is part of the objective (an LM's
log-probabilities depend on it), chosen by ``icm.context_order``:

* ``published``: one global order, by uid grouped by consistency group, as the published code.
  Every prompt shares its prefix with every other up to its left-out claim; the backend's prefix
  cache and the score memo make that reuse exact, so this engine computes the published scores
  (the same as each prompt run alone) at a fraction of the published code's tokens.
* ``halving_tail``: per-query recursive-halving orders over a seeded shuffle plus a tail of
  recently changed claims (plural_icm.search.context_order): far fewer tokens, but a different order, so
  different scores (docs/benchmark.md measures how different).

Within one order a proposal's two scores U(D) and U(D') use the same orders, so their difference
reflects the label change alone.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable, Mapping, Sequence

import numpy as np

from plural_icm.backends.base import ContextLengthError, LMBackend, Prompt
from plural_icm.choices import Aggregate
from plural_icm.data.records import Claim, ConsistencyRule
from plural_icm.search.consistency import group_inconsistencies, repair_options
from plural_icm.search.context_order import FixedLayout, TreeTailLayout, layout_from_dict
from plural_icm.search.params import CONTEXT_ORDERS, SearchParams  # noqa: F401 (re-exported)
from plural_icm.search.prompts import ClaimRenderer
from plural_icm.search.schedule import temperature, temperature_index
from plural_icm.utils.stop import ScoringStopped

log = logging.getLogger(__name__)

Scores = dict[str, tuple[float, float]]  # item_id -> (logP(True), logP(False))
Request = list[Prompt]
Step = Generator[Request, np.ndarray, Any]


@dataclass
class SearchResult:
    labels: dict[str, bool]
    confidence: dict[str, float]
    U: float
    P: float
    I: int
    iterations: int
    accepted: int
    trajectory: list[dict]
    seed: int
    wall_time_s: float
    label_accuracy: float | None
    n_predicted_unlabelled: int = 0
    """Claims never labelled by the search (budget exhausted), labelled by one final prediction.
    U, P and I are those of the final labels, these included; ``searched`` holds the U, P, I and
    size of the labelled set the search itself reached."""
    searched: dict | None = None
    context_order: str = "published"
    """The order every leave-one-out context used (U and P are of this order)."""
    nearest_example: dict | None = None
    """Of the leave-one-out contexts the search scored (this session's, after a resume): how many
    (``queries``), how many had the query's own consistency group as the last example before it
    (``same_group``), and how many a claim of the tail, i.e. a recently changed one
    (``recently_changed``)."""

    def warning(self) -> str | None:
        if not self.n_predicted_unlabelled:
            return None
        return (f"{self.n_predicted_unlabelled} of {len(self.labels)} claims were never reached "
                f"in {self.iterations} iterations and are labelled by one final prediction given "
                "the searched labels; raise icm.max_iters to search them")

    def summary(self) -> dict:
        out = {"U": self.U, "P": self.P, "I": self.I, "context_order": self.context_order,
               "iterations": self.iterations,
               "accepted": self.accepted, "seed": self.seed, "wall_time_s": self.wall_time_s,
               "label_accuracy": self.label_accuracy, "n_claims": len(self.labels),
               "n_predicted_unlabelled": self.n_predicted_unlabelled}
        if self.searched is not None:
            out["searched"] = self.searched
        if self.nearest_example is not None:
            out["nearest_example"] = self.nearest_example
        if self.warning():
            out["warning"] = self.warning()
        return out


@dataclass
class SearchState:
    """Everything a running search carries from one iteration to the next (and checkpoints)."""

    rng: np.random.Generator
    labels: dict[str, bool]
    layout: Any
    scores: Scores
    iteration: int = 0
    accepted: int = 0
    """Accepted changes: the published temperature index."""
    since_accept: int = 0
    trajectory: list[dict] = field(default_factory=list)
    elapsed_s: float = 0.0
    """Wall time of earlier sessions of a resumed search."""
    U: float = 0.0
    P: float = 0.0
    I: int = 0
    last_row: dict = field(default_factory=dict)

    def to_checkpoint(self, seed: int, wall_time_s: float) -> dict:
        """A JSON-able dict (the keys are the checkpoint format; U, P, I are recomputed)."""
        return {"seed": seed, "iteration": self.iteration, "accepted": self.accepted,
                "since_accept": self.since_accept, "labels": self.labels,
                "layout": self.layout.to_dict(),
                "scores": {k: list(v) for k, v in self.scores.items()},
                "rng": self.rng.bit_generator.state, "trajectory": self.trajectory,
                "wall_time_s": wall_time_s}

    @classmethod
    def from_checkpoint(cls, d: Mapping[str, Any]) -> "SearchState":
        rng = np.random.default_rng()
        rng.bit_generator.state = d["rng"]
        return cls(rng=rng, labels={k: bool(v) for k, v in d["labels"].items()},
                   layout=layout_from_dict(d["layout"]),
                   scores={k: (float(v[0]), float(v[1])) for k, v in d["scores"].items()},
                   iteration=int(d["iteration"]), accepted=int(d["accepted"]),
                   since_accept=int(d["since_accept"]), trajectory=list(d["trajectory"]),
                   elapsed_s=float(d.get("wall_time_s", 0.0)))


class SearchInterrupted(Exception):
    """A stop was requested (SIGTERM/SIGINT/SIGUSR2); the search wrote its checkpoint first.

    ``kept`` lists, per interrupted search, the iteration its checkpoint holds (None: it was
    still starting, nothing was kept)."""

    def __init__(self, message: str, kept: list | None = None):
        super().__init__(message)
        self.kept = list(kept or [])
        self.finished: list = []


class ICMSearch:
    """One annealing search over the claims of one search set.

    ``fixed`` labels are hard constraints: labelled from the start and never changed.
    ``checkpoint`` is a callable receiving a JSON-able state dict (written atomically by the
    caller); ``resume_state`` is such a dict to continue from. ``should_stop`` is polled at
    iteration boundaries.
    """

    def __init__(self, claims: Sequence[Claim], rule: ConsistencyRule, renderer: ClaimRenderer,
                 params: SearchParams, seed: int, fixed: Mapping[str, bool] | None = None,
                 max_context: int | None = None, resume_state: dict | None = None,
                 checkpoint: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_iteration: Callable[[dict], None] | None = None):
        if not claims:
            raise ValueError("a search needs at least one claim")
        self.claims = {c.item_id: c for c in claims}
        if len(self.claims) != len(claims):
            raise ValueError("duplicate item_id in the search set")
        self.order = [c.item_id for c in claims]
        self.rule = ConsistencyRule(rule)
        self.renderer = renderer
        self.p = params
        self.seed = seed
        self.fixed = dict(fixed or {})
        unknown = set(self.fixed) - set(self.claims)
        if unknown:
            raise ValueError(f"fixed labels for claims outside the search set: {sorted(unknown)[:5]}")
        self.groups: dict[str, list[str]] = {}
        for c in claims:
            self.groups.setdefault(c.group_id, []).append(c.item_id)
        self.group_of = {c.item_id: c.group_id for c in claims}
        self.max_context = max_context
        self.resume_state = resume_state
        self._checkpoint = checkpoint
        self._should_stop = should_stop or (lambda: False)
        self._on_iteration = on_iteration
        self._memo: OrderedDict = OrderedDict()
        self._memo_max = max(1000, 40 * len(claims))
        self.nearest = {"queries": 0, "same_group": 0, "recently_changed": 0}
        # Before any work: prompts must be the tokenizer's encoding of their text.
        self.renderer.check_boundaries(claims)
        self.check_context()

    # -- sizes ------------------------------------------------------------------------------
    def check_context(self) -> None:
        """Refuse, before any work, a claim set whose full context exceeds the model's window."""
        if not self.max_context:
            return
        r = self.renderer
        need = len(r.bos) + max(len(r.blocks(c).query) for c in self.claims.values())
        need += sum(r.blocks(c).longest_example() for c in self.claims.values()) + 1
        if need > self.max_context:
            raise ContextLengthError(
                f"a search over {len(self.claims)} claims needs up to {need} prompt tokens, but the "
                f"model's context is {self.max_context}. Use fewer claims per search "
                f"(dataset.max_search_claims=<n>, about {int(len(self.claims) * self.max_context / need)} "
                f"fit) or a model with a longer context (model.max_context).")

    def published_order(self) -> list[str]:
        """The published code's context order: by uid (the claim's position in the search set),
        grouped by consistency group (groups in the order of their first claim)."""
        first = {}
        for k, j in enumerate(self.order):
            first.setdefault(self.group_of[j], k)
        pos = {j: k for k, j in enumerate(self.order)}
        return sorted(self.order, key=lambda j: (first[self.group_of[j]], pos[j]))

    # -- scoring ----------------------------------------------------------------------------
    def _layout_new(self):
        if self.p.context_order == "published":
            return FixedLayout(canonical=self.published_order())
        # The seed shuffles the tree at every (re)build, so no claim's own group sits next to its
        # query by construction (claims arrive grouped); it is the search's seed, so restarts differ.
        return TreeTailLayout(max_tail=self.p.max_tail, seed=self.seed)

    def _count_nearest(self, j: str, ctx: Sequence[str], layout) -> None:
        """Which claim is the last example before query ``j`` (see SearchResult.nearest_example)."""
        self.nearest["queries"] += 1
        if not ctx:
            return
        last = ctx[-1]
        self.nearest["same_group"] += int(self.group_of[last] == self.group_of[j])
        self.nearest["recently_changed"] += int(last in getattr(layout, "tail", ()))

    def _score(self, labels: Mapping[str, bool], layout, queries: Iterable[str] | None = None,
               contexts: dict | None = None) -> Step:
        """Scores of ``queries`` (default: every labelled claim) under ``layout``'s orders.

        The context of a labelled claim is its layout context restricted to labelled claims; the
        context of an unlabelled claim is the layout's full order. Identical prompts are answered
        from a memo (the prompt is determined by the (claim, label) sequence).
        """
        ctxs = contexts if contexts is not None else layout.contexts()
        queries = list(labels) if queries is None else list(queries)
        full = None
        keys, prompts_needed, out = [], [], {}
        for j in queries:
            if j in ctxs:
                ctx = [c for c in ctxs[j] if c in labels and c != j]
            else:
                if full is None:
                    full = [c for c in layout.full_context() if c in labels]
                ctx = [c for c in full if c != j]
            self._count_nearest(j, ctx, layout)
            key = (j, tuple((c, labels[c]) for c in ctx))
            if self.p.memo and key in self._memo:
                self._memo.move_to_end(key)
                out[j] = self._memo[key]
                continue
            keys.append((j, key))
            prompts_needed.append(self.renderer.prompt([(self.claims[c], labels[c]) for c in ctx],
                                                       self.claims[j]))
        if prompts_needed:
            arr = yield prompts_needed
            for (j, key), row in zip(keys, arr):
                val = (float(row[0]), float(row[1]))
                out[j] = val
                if self.p.memo:
                    self._memo[key] = val
                    if len(self._memo) > self._memo_max:
                        self._memo.popitem(last=False)
        return out

    def utility(self, labels: Mapping[str, bool], scores: Scores) -> tuple[float, float, int]:
        """(U, P, I) of a labelling given its leave-one-out scores."""
        if labels:
            if Aggregate(self.p.aggregate) is Aggregate.mean_log_odds:
                vals = [(scores[j][0] - scores[j][1]) * (1 if y else -1) for j, y in labels.items()]
                P = float(np.mean(vals))
            else:
                P = float(sum(_log_softmax2(scores[j])[0 if y else 1] for j, y in labels.items()))
        else:
            P = 0.0
        touched = {self.group_of[j] for j in labels}
        I = sum(group_inconsistencies(self.groups[g], labels, self.rule) for g in touched)
        return self.p.alpha * P - I, P, I

    # -- the search -------------------------------------------------------------------------
    def run(self) -> Step:
        """The search as a generator of scoring requests; returns a :class:`SearchResult`.

        start (or restore a checkpoint) -> one annealing step per iteration until the budget is
        spent or the early stop holds -> finish (label what the budget never reached).
        """
        t_start = time.perf_counter()
        st = self._restore() if self.resume_state is not None else (yield from self._start())
        # The stop condition is checked before every step, so a search resumed from the
        # checkpoint of the iteration that stopped it stops there too.
        while not self._finished(st):
            if self._should_stop():
                self._save(st, t_start)
                raise SearchInterrupted(f"stop requested at iteration {st.iteration}",
                                        [st.iteration])
            # What a stop in the middle of this iteration keeps (:meth:`interrupt`): the state
            # is only replaced once the iteration's scores are in, except the generator's draws.
            self._boundary = (st, st.rng.bit_generator.state, t_start)
            yield from self._step(st)
            self._record(st, t_start)
        self._boundary = (st, st.rng.bit_generator.state, t_start)  # _finish changes no state
        return (yield from self._finish(st, t_start))

    _boundary: tuple | None = None

    def interrupt(self) -> int | None:
        """Checkpoint the state of the last iteration boundary (a stop between two scoring
        batches: the unfinished iteration's work is dropped and redone on resume, so the resumed
        search is the one that was never stopped). The iteration kept, or None while the search
        was still starting (nothing to keep)."""
        if self._boundary is None:
            return None
        st, rng_state, t_start = self._boundary
        st.rng.bit_generator.state = rng_state
        self._save(st, t_start)
        return st.iteration

    def _start(self) -> Step:
        """Fresh state: seed labels on ``num_seed`` random claims, their scores, U."""
        rng = np.random.default_rng(self.seed)
        labels = dict(self.fixed)
        free = [j for j in self.order if j not in self.fixed]
        k = min(self.p.num_seed, len(free))
        seeds = [free[i] for i in rng.choice(len(free), size=k, replace=False)] if k else []
        # Balanced random seed labels, as published (the extra one of an odd count is random).
        seed_labels = [True, False] * (k // 2) + ([bool(rng.integers(2))] if k % 2 else [])
        rng.shuffle(seed_labels)
        if self.p.seed_labels == "gold":
            seed_labels = self._gold_seed_labels(seeds)
        elif self.p.seed_labels != "random":
            raise ValueError(f"icm.seed_labels must be 'random' or 'gold', got {self.p.seed_labels!r}")
        labels.update(dict(zip(seeds, seed_labels)))
        layout = self._layout_new().with_changes(list(labels), set(labels))
        layout = layout.compacted()
        scores = yield from self._score(labels, layout)
        if self.p.repair_seed_labels:
            # As published (Wen et al. Alg. 1 line 2): repair the seed labels before iterating.
            labels, scores = yield from self._repair(labels, layout, layout.contexts(), scores)
        st = SearchState(rng=rng, labels=labels, layout=layout, scores=scores)
        st.U, st.P, st.I = self.utility(labels, scores)
        return st

    def _gold_seed_labels(self, seeds: Sequence[str]) -> list[bool]:
        missing = [j for j in seeds if self.claims[j].gold is None]
        if missing:
            raise ValueError(f"icm.seed_labels=gold needs gold labels, but seed claim(s) "
                             f"{missing[:5]} have none")
        return [bool(self.claims[j].gold) for j in seeds]

    def _restore(self) -> "SearchState":
        """The state of a checkpoint written by :meth:`_save`."""
        log.info("resuming search (seed %d) at iteration %d", self.seed, self.resume_state["iteration"])
        st = SearchState.from_checkpoint(self.resume_state)
        st.U, st.P, st.I = self.utility(st.labels, st.scores)
        return st

    def _finished(self, st: "SearchState") -> bool:
        """Budget spent, or the early stop: every claim labelled and no accepted change for
        ``patience`` iterations (``patience=None``: no early stop, as published)."""
        if st.iteration >= self.p.max_iters:
            return True
        return (self.p.patience is not None and len(st.labels) == len(self.claims)
                and st.since_accept >= self.p.patience)

    def _step(self, st: "SearchState") -> Step:
        """One iteration: pick a claim, propose the model's label, repair, accept or reject."""
        T = temperature(temperature_index(self.p.temperature_index, st.iteration, st.accepted),
                        self.p.schedule, self.p.initial_temp, self.p.final_temp, self.p.decay,
                        self.p.log_schedule_constant)
        i = self._pick(st.rng, st.labels)
        u = float(st.rng.random())  # drawn every iteration, so decisions never shift the stream
        accepted = changed_any = False
        if i is not None:
            # Predict: a labelled claim's leave-one-out score is already known.
            if i in st.labels:
                s_i = st.scores[i]
            else:
                s_i = (yield from self._score(st.labels, st.layout, queries=[i]))[i]
            new = s_i[0] >= s_i[1]
            if st.labels.get(i) != new:
                changed_any = True
                accepted = yield from self._propose(st, i, new, u, T)
        st.iteration += 1
        st.since_accept = 0 if accepted else st.since_accept + 1
        st.last_row = {"iteration": st.iteration, "U": st.U, "P": st.P, "I": st.I,
                       "temperature": T, "accepted": accepted, "proposed_change": changed_any,
                       "n_labelled": len(st.labels), "label_accuracy": self._accuracy(st.labels)}

    def _propose(self, st: "SearchState", i: str, new: bool, u: float, T: float) -> Step:
        """Apply label ``new`` to claim ``i``, repair, and accept by Metropolis; True if accepted."""
        group = self.groups[self.group_of[i]]
        proposal = dict(st.labels)
        proposal[i] = new
        # The claim moves to the tail, where a change invalidates least; so do its labelled
        # group-mates when the repair will relabel them (the proposal made their group
        # inconsistent). Moving a tree claim costs one re-derivation of U(D) under the new
        # orders, so nothing is moved without need.
        moved = [i]
        if group_inconsistencies(group, proposal, self.rule):
            moved += [m for m in group if m in st.labels and m != i]
        moved += self._repair_targets(proposal, st.layout, exclude=self.group_of[i],
                                      room=self.p.max_tail - len(moved))
        lay = st.layout.with_changes(moved, set(proposal))
        ctxs = lay.contexts()
        if lay.to_dict() == st.layout.to_dict():
            cur_scores = st.scores  # same orders: D's scores are already known
        else:
            cur_scores = yield from self._score(st.labels, lay, contexts=ctxs)
        U_cur, _, _ = self.utility(st.labels, cur_scores)
        best, best_scores = yield from self._repair(proposal, lay, ctxs)
        U_new, _, _ = self.utility(best, best_scores)
        dU = U_new - U_cur
        accepted = dU >= 0 or u < math.exp(dU / T)
        st.layout = lay
        if accepted:
            st.labels, st.scores = best, best_scores
            st.accepted += 1
        else:
            st.scores = cur_scores
        st.U, st.P, st.I = self.utility(st.labels, st.scores)
        return accepted

    def _record(self, st: "SearchState", t_start: float) -> None:
        """Trajectory row, progress callback, periodic checkpoint."""
        st.trajectory.append(st.last_row)
        if self._on_iteration:
            self._on_iteration(st.last_row)
        if self._checkpoint and st.iteration % self.p.checkpoint_every == 0:
            self._save(st, t_start)

    def _finish(self, st: "SearchState", t_start: float) -> Step:
        """Claims the budget never reached get the model's prediction given the final labelled
        set; confidences of every label; the result."""
        missing = [j for j in self.order if j not in st.labels]
        final = dict(st.labels)
        conf_scores = dict(st.scores)
        if missing:
            extra = yield from self._score(st.labels, st.layout, queries=missing)
            for j in missing:
                final[j] = extra[j][0] >= extra[j][1]
                conf_scores[j] = extra[j]
        confidence = {j: float(np.exp(_log_softmax2(conf_scores[j])[0 if final[j] else 1]))
                      for j in final}
        U, P, I = st.U, st.P, st.I
        searched = None
        if missing:
            # Report U, P, I of the labels we hand out, not only of the subset the search reached.
            layout = st.layout.with_changes(missing, set(final))
            U, P, I = self.utility(final, (yield from self._score(final, layout)))
            searched = {"U": st.U, "P": st.P, "I": st.I, "n_labelled": len(st.labels)}
        res = SearchResult(labels=final, confidence=confidence, U=U, P=P, I=I,
                           iterations=st.iteration, accepted=st.accepted,
                           trajectory=st.trajectory, seed=self.seed,
                           wall_time_s=st.elapsed_s + time.perf_counter() - t_start,
                           label_accuracy=self._accuracy(final),
                           n_predicted_unlabelled=len(missing), searched=searched,
                           context_order=self.p.context_order, nearest_example=dict(self.nearest))
        if res.warning():
            log.warning("search (seed %d): %s", self.seed, res.warning())
        return res

    def _pick(self, rng: np.random.Generator, labels: Mapping[str, bool]) -> str | None:
        cands = [j for j in self.order if j not in self.fixed]
        if not cands:
            return None
        has_labelled = {g for g, ms in self.groups.items() if any(m in labels for m in ms)}
        w = np.array([self.p.unlabelled_weight
                      if (j not in labels and self.group_of[j] in has_labelled) else 1.0
                      for j in cands])
        return cands[int(rng.choice(len(cands), p=w / w.sum()))]

    def _repair_targets(self, proposal: Mapping[str, bool], layout, exclude: str, room: int) -> list[str]:
        """Tree claims of the other inconsistent groups, which the repair will try to relabel.

        Relabelling a tree claim re-derives every context behind its slot, for each option the
        repair scores, in every proposal while the group stays inconsistent; in the tail the same
        option costs about n*L. So they move to the tail with the proposal, when they fit (a
        layout change that does not fit would merge the tail into a new tree, a full evaluation).
        """
        if self.rule is ConsistencyRule.NONE or not isinstance(layout, TreeTailLayout):
            return []
        out = []
        for g, members in self.groups.items():
            if g == exclude or not repair_options(members, proposal, self.rule, self.fixed):
                continue
            out += [m for m in members if m in proposal and m not in self.fixed and m not in layout.tail]
        return out if len(out) <= room else []

    def _repair(self, proposal: dict, layout, ctxs: dict, scores: Scores | None = None) -> Step:
        """ConsistencyFix: per round, for each inconsistent group, score its consistent options
        and adopt the best if it raises U (``repair_rule=first``, the paper's fork: adopt the
        group's best option whatever U it gives); stop when a round improves nothing (the published code
        always ran 10 rounds). The adopted option's scores are reused, never recomputed.
        ``scores``: the proposal's scores under ``layout`` when already known."""
        best = proposal
        best_scores = scores if scores is not None else (yield from self._score(best, layout, contexts=ctxs))
        best_U = self.utility(best, best_scores)[0]
        if self.rule is ConsistencyRule.NONE:
            return best, best_scores
        unconditional = self.p.repair_rule == "first"
        for _ in range(self.p.fix_max_rounds):
            improved = False
            for g, members in self.groups.items():
                options = repair_options(members, best, self.rule, self.fixed)
                # the fork's rule: the group's first scored option is adopted whatever U it gives
                bar = -math.inf if unconditional and options else best_U
                for option in options:
                    cand = dict(best)
                    cand.update(option)
                    cand_scores = yield from self._score(cand, layout, contexts=ctxs)
                    cand_U = self.utility(cand, cand_scores)[0]
                    if cand_U > bar:
                        bar = cand_U
                        best, best_scores, best_U, improved = cand, cand_scores, cand_U, True
            if not improved:
                break
        return best, best_scores

    def _accuracy(self, labels: Mapping[str, bool]) -> float | None:
        """Agreement with gold, for the trajectory only: the search never reads it."""
        pairs = [(y, self.claims[j].gold) for j, y in labels.items() if self.claims[j].gold is not None]
        return float(np.mean([y == g for y, g in pairs])) if pairs else None

    def _save(self, st: "SearchState", t_start: float) -> None:
        if self._checkpoint is None:
            return
        self._checkpoint(st.to_checkpoint(self.seed, st.elapsed_s + time.perf_counter() - t_start))


def _log_softmax2(s: tuple[float, float]) -> tuple[float, float]:
    m = max(s)
    z = m + math.log(math.exp(s[0] - m) + math.exp(s[1] - m))
    return s[0] - z, s[1] - z


def run_searches(searches: Sequence[ICMSearch], backend: LMBackend,
                 labels: Sequence[str],
                 should_stop: Callable[[], bool] | None = None) -> list[SearchResult]:
    """Run several searches against one model, sending their prompts in shared batches.

    Every round, each active search contributes the prompts it is waiting for; one
    ``label_logprobs`` call scores them all (a GPU stays busy; on CPU the prefix cache still
    sees every search's shared prefixes). Progress is reported through each search's
    ``on_iteration`` callback. Results are in the order of ``searches``.

    ``should_stop`` is polled before every scoring batch: when it holds, every unfinished search
    checkpoints its last iteration boundary (:meth:`ICMSearch.interrupt`) and
    :class:`SearchInterrupted` is raised, so a stop waits for one batch, not one iteration. When
    ``should_stop`` also has a ``scoring()`` context (:class:`plural_icm.utils.stop.StopRequest`),
    a stop raised inside a batch (:class:`~plural_icm.utils.stop.ScoringStopped`) does not wait
    for the batch either.
    """
    scoring = getattr(should_stop, "scoring", None) or nullcontext
    gens = [s.run() for s in searches]
    pending: dict[int, Request] = {}
    results: list[SearchResult | None] = [None] * len(gens)
    interrupted: list[tuple[int, SearchInterrupted]] = []
    for k, g in enumerate(gens):
        try:
            pending[k] = next(g)
        except StopIteration as stop:
            results[k] = stop.value
        except SearchInterrupted as exc:
            interrupted.append((k, exc))
    while pending:
        if should_stop is not None and should_stop():
            raise _interrupted(interrupted, searches, {k: searches[k].interrupt() for k in pending},
                               results)
        order = sorted(pending)
        flat = [p for k in order for p in pending[k]]
        for p in flat:
            backend.check_length(p, what="an ICM search prompt")
        try:
            with scoring():
                arr = backend.label_logprobs(flat, labels)
        except ScoringStopped:
            raise _interrupted(interrupted, searches,
                               {k: searches[k].interrupt() for k in pending}, results) from None
        pos = 0
        for k in order:
            n = len(pending[k])
            chunk = arr[pos:pos + n]
            pos += n
            try:
                pending[k] = gens[k].send(chunk)
            except StopIteration as stop:
                results[k] = stop.value
                del pending[k]
            except SearchInterrupted as exc:
                # Keep serving the others until each reaches its boundary and checkpoints too.
                interrupted.append((k, exc))
                del pending[k]
    if interrupted:
        raise _interrupted(interrupted, searches, {}, results)
    return [r for r in results if r is not None]


def _interrupted(at_boundary: list[tuple[int, SearchInterrupted]], searches: Sequence[ICMSearch],
                 mid_batch: dict[int, int | None],
                 results: Sequence[SearchResult | None]) -> SearchInterrupted:
    """One :class:`SearchInterrupted` whose ``kept`` is aligned with ``searches`` (None for a
    search that finished or kept nothing) and whose ``finished`` holds the results of the
    searches that finished before the stop (None for the others), for the caller to write."""
    kept: list[int | None] = [None] * len(searches)
    for k, exc in at_boundary:
        kept[k] = exc.kept[0] if exc.kept else None
    for k, v in mid_batch.items():
        kept[k] = v
    n = sum(v is not None for v in kept)
    exc = SearchInterrupted(f"stop requested: {n} of {len(searches)} search(es) checkpointed", kept)
    exc.finished = list(results)
    return exc


def drive(step: Step, backend: LMBackend, labels: Sequence[str]) -> Any:
    """Run one scoring generator to completion against ``backend``."""
    try:
        request = next(step)
        while True:
            request = step.send(backend.label_logprobs(request, labels))
    except StopIteration as stop:
        return stop.value


def evaluate_labelling(claims: Sequence[Claim], rule: ConsistencyRule, backend: LMBackend,
                       params: SearchParams, labels: Mapping[str, bool], template: str,
                       label_strings: Sequence[str]) -> tuple[float, float, int]:
    """(U, P, I) of a complete labelling, with the search's own scorer and context order
    (``params.context_order``: its P is comparable only with P's of the same order).

    The order depends only on the claims (their given order; ``halving_tail`` shuffles it with
    seed 0), so evaluating several labellings of the same claims (the accuracy-matched control)
    reuses the cached prefixes of the first.
    """
    search, scores = _full_evaluation(claims, rule, backend, params, labels, template, label_strings)
    return search.utility(labels, scores)


def labelling_scores(claims: Sequence[Claim], rule: ConsistencyRule, backend: LMBackend,
                     params: SearchParams, labels: Mapping[str, bool], template: str,
                     label_strings: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``item_id -> (ln P(True), ln P(False))`` of every labelled claim given all the other
    labelled claims (leave-one-out), scored as :func:`evaluate_labelling` scores them."""
    return _full_evaluation(claims, rule, backend, params, labels, template, label_strings)[1]


def _full_evaluation(claims, rule, backend, params, labels, template, label_strings):
    renderer = ClaimRenderer(backend, template, label_strings)
    search = ICMSearch(claims, rule, renderer, params, seed=0, max_context=backend.max_context)
    order = [c.item_id for c in claims if c.item_id in labels]
    layout = search._layout_new().with_changes(order, set(order)).compacted()
    return search, drive(search._score(dict(labels), layout), backend, label_strings)
