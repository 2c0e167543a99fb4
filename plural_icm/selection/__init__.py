"""Which training examples each held-out query sees: the ``selection`` axis (conf/selection).

``all`` (default) is today's behaviour; ``random``, ``nearest`` and ``spica`` pick
``inference.n_examples`` examples per held-out question from the condition's labelled examples
(:mod:`plural_icm.selection.retrieve`), with SPICA's group terms in
:mod:`plural_icm.selection.group_terms`. Selection is independent of the condition: the condition
decides the labels, the selection which labelled examples a query is shown.
"""

from __future__ import annotations

from typing import Any

SELECTIONS = ("all", "random", "nearest", "spica")
#: contrastive: a retrieved question's claims, True and False; positive: its True ones (SPICA's P-R in
#: steered generation); contrastive_response: as contrastive, and in steered generation the False
#: answers too, marked as not representing the group (SPICA's C-R).
PROMPTS = ("contrastive", "positive", "contrastive_response")
GROUP_SOURCES = ("auto", "gold", "icm")


def selection_name(cfg: Any) -> str:
    """``cfg.selection.name`` (``cfg``: the job's typed settings, or a config with those
    attributes), ``all`` when there is no selection (older configs)."""
    sel = getattr(cfg, "selection", None)
    return "all" if sel is None else str(getattr(sel, "name", None) or "all")


def per_query(cfg: Any) -> bool:
    """Whether each held-out question gets its own examples (any selection but ``all``)."""
    return selection_name(cfg) != "all"
