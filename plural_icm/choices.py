"""The enumerated settings of the layers below the config: the search algorithm, the data and the
inference use them, and the Hydra schema (:mod:`plural_icm.config.schema`) types its fields with
them. Importing this module loads nothing of Hydra or OmegaConf.
"""

from __future__ import annotations

from enum import Enum


class Schedule(str, Enum):
    log = "log"   # T = max(T_min, T0 / (1 + c * ln(1 + n_accepted))), c = 2 in the published code
    exp = "exp"   # T = max(T_min, T0 * decay ** n_accepted)


class TemperatureIndex(str, Enum):
    accepted = "accepted"    # the published code: n = accepted changes
    iteration = "iteration"  # Wen et al.'s paper text (Alg. 1): n = iteration


class SearchUnit(str, Enum):
    training_folds = "training_folds"  # ours: one search over the union of the training folds
    part = "part"                      # the paper's fork: one search per training fold part


class SeedLabels(str, Enum):
    random = "random"  # balanced random seed labels, as the paper's text says
    gold = "gold"      # the first num_seed claims get their gold labels (one fork GQA script)


class Aggregate(str, Enum):
    mean_log_odds = "mean_log_odds"  # the published code: mean of signed ln P(True) - ln P(False)
    sum_logprob = "sum_logprob"      # the paper's formula: sum of ln P(y_i | others)


class Engine(str, Enum):
    fast = "fast"            # prefix-sharing layouts, incremental rescoring (ours)
    reference = "reference"  # the published cost model: fixed order, full rescoring, no reuse


class ContextOrder(str, Enum):
    """The order of the other labelled claims in each leave-one-out context (part of the objective:
    an LM's log-probabilities depend on it; docs/benchmark.md measures by how much)."""
    published = "published"        # one global order, by uid grouped by consistency group (the published code)
    halving_tail = "halving_tail"  # per-query recursive-halving orders over a seeded shuffle, recently changed claims last (ours, faster)


class ContextPolicy(str, Enum):
    error = "error"              # refuse prompts longer than the context, naming item and sizes
    drop_oldest = "drop_oldest"  # drop in-context examples from the front until it fits (logged)


class RepairRule(str, Enum):
    improve = "improve"  # ours: a repair is adopted only if it raises U
    first = "first"      # the paper's fork: each inconsistent group's best repair, unconditionally


class ExampleOrder(str, Enum):
    shuffled = "shuffled"  # the paper's fork ("must shuffle"): a seeded shuffle per persona
    loader = "loader"      # the loader's order: a question's options adjacent


class ScoreMetric(str, Enum):
    """The metric a dataset's cells are scored by (the analysis reads it from the cell)."""
    claim_accuracy = "claim_accuracy"              # the paper's metric: each True/False claim vs gold
    question_accuracy = "question_accuracy"        # stricter: the highest-P(True) option is the plurality
    representation_score = "representation_score"  # OvertonBench: judge rating 1-5


class QuestionsFrom(str, Enum):
    """Where collaborative elicitation takes its ``k_per_fold`` questions from (per round)."""
    pooled = "pooled"                        # ours: the k least sure over all the training claims
    per_training_fold = "per_training_fold"  # the paper's Section 6: k from EACH training fold


__all__ = ["Schedule", "TemperatureIndex", "SearchUnit", "SeedLabels", "Aggregate", "Engine",
           "ContextPolicy", "RepairRule", "ExampleOrder", "ScoreMetric", "QuestionsFrom"]
