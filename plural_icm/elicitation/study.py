"""A study from finished ICM searches: per persona, the questions ``stage=collaborative`` would ask.

The config is composed exactly as ``launch.py`` composes it (same ``conf/``, same overrides, same
checks), so model, dataset, personas, seed and ICM settings resolve to the same searches; the
questions come from :func:`plural_icm.pipeline.collaborative.round_questions` (round 1), the one
function the collaborative stage uses, so the re-search with the exported answers asks, and finds
answered, exactly these questions.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from plural_icm.config.settings import typed
from plural_icm.data.records import Claim, ClaimSet
from plural_icm.data.registry import load_claimset
from plural_icm.elicitation.store import LAYOUTS, Option, Question, StudyStore
from plural_icm.errors import ConfigError
from plural_icm.pipeline.collaborative import (
    fewshot_confidence,
    question_folds,
    round_questions,
    search_set,
)
from plural_icm.pipeline.models import Backends
from plural_icm.pipeline.searches import run_searches_for, searches_on_disk

log = logging.getLogger(__name__)

METHODS = ("confidence", "active", "random")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(overrides: Sequence[str]) -> DictConfig:
    """The config ``python launch.py <overrides>`` would run with (validated the same way)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from plural_icm.config.checks import validate_config
    from plural_icm.config.guard import command_line_error
    from plural_icm.config.schema import check_config, register_configs

    problem = command_line_error(list(overrides))
    if problem:
        raise ConfigError(problem)
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    check_config(cfg)
    validate_config(cfg)
    return cfg


def option_text(claim: Claim) -> str:
    """The option as the survey states it (``meta.options[option_index]``); the claim sentence for
    datasets without an option list (response pairs)."""
    opts, idx = claim.meta.get("options"), claim.meta.get("option_index")
    if isinstance(opts, list) and isinstance(idx, int) and 0 <= idx < len(opts):
        return str(opts[idx])
    return claim.claim


def _fold_cfg(cfg: DictConfig, fold: int) -> DictConfig:
    """The same config (schema and interpolations kept) for another fold."""
    c = copy.deepcopy(cfg)
    c.fold = int(fold)
    return c


def select_for_study(cfg: DictConfig, method: str, k: int, folds: Sequence[int],
                     run_searches: bool = False) -> tuple[ClaimSet, dict[str, list[tuple[int, list[Claim]]]]]:
    """Per persona, ``[(fold, claims of one chosen question), ...]`` (the k per fold that
    ``stage=collaborative`` would ask in its first round)."""
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: use one of {', '.join(METHODS)}")
    if k < 1:
        raise ConfigError(f"--k {k}: ask at least 1 question per persona and fold")
    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    personas = sorted(claimset.personas)
    chosen: dict[str, list[tuple[int, list[Claim]]]] = {p: [] for p in personas}
    for fold in folds:
        fcfg = _fold_cfg(cfg, fold)
        fs = typed(fcfg)  # the pipeline's typed settings of this fold (compose() validated it)
        claimset.split(int(fold))  # a fold the dataset does not have: its clear error, now
        if not run_searches and not searches_on_disk(fs, claimset, personas):
            raise ConfigError(
                f"the ICM searches of fold {fold} are not finished under {fcfg.paths.searches_dir}: "
                f"run them first (`python launch.py stage=search fold={fold} <same overrides>`), "
                f"or pass --run-searches to run them now")
        backends = Backends(fs)
        try:
            base = run_searches_for(fs, claimset, personas, backends, desc=f"ICM search (fold {fold})")
            for pid in personas:
                train = search_set(fs, claimset, pid)
                fewshot = (fewshot_confidence(fs, claimset, pid, train, base[pid].labels, backends)
                           if method == "active" else None)
                groups = round_questions(method, train, k, fs.seed, 0, base[pid].confidence,
                                         {}, fewshot, [], question_folds(fs, claimset))
                by_group = claimset.groups(train)
                chosen[pid] += [(int(fold), by_group[g]) for g in groups]
        finally:
            backends.close()
    return claimset, chosen


def build_questions(chosen: dict[str, list[tuple[int, list[Claim]]]]) -> list[Question]:
    """Study questions: one per (persona, question group), the folds that chose it listed."""
    out: list[Question] = []
    for pid, picks in chosen.items():
        seen: dict[str, int] = {}
        for fold, claims in picks:
            g = claims[0].group_id
            if g in seen:  # chosen by several folds: asked once, answered for all of them
                q = out[seen[g]]
                out[seen[g]] = Question(q.id, q.persona_id, q.group_id, q.question_id, q.text,
                                        q.position, sorted({*q.folds, fold}), q.options, q.gold_key)
                continue
            gold = [c.option_key for c in claims if c.gold]
            seen[g] = len(out)
            out.append(Question(0, pid, g, claims[0].question_id, claims[0].question, len(seen) - 1,
                                [fold], [Option(c.option_key, option_text(c)) for c in claims],
                                gold[0] if len(gold) == 1 else None))
    return out


def create_study(path: str | Path, overrides: Sequence[str], method: str, k: int,
                 folds: Sequence[int] | None = None, annotators: int = 1, name: str | None = None,
                 instruction: str | None = None, run_searches: bool = False,
                 layout: str = LAYOUTS[0]) -> tuple[StudyStore, str, dict[str, list[tuple[str, str]]]]:
    """Create the study file; returns the store, the researcher token and per persona the
    ``(annotator id, invitation token)`` pairs (tokens exist only in this return value).
    ``layout``: one question per page, or all on one form (:data:`~.store.LAYOUTS`)."""
    if annotators < 1:
        raise ConfigError(f"--annotators {annotators}: invite at least 1 annotator per persona")
    if layout not in LAYOUTS:
        raise ConfigError(f"--layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    cfg = compose(overrides)
    folds = [int(cfg.fold)] if not folds else [int(f) for f in folds]
    claimset, chosen = select_for_study(cfg, method, k, folds, run_searches)
    meta = {"name": name or StudyStore(path).default_name, "model": cfg.model.name, "dataset": cfg.dataset.name,
            "method": method, "k_per_fold": k, "folds": folds, "seed": int(cfg.seed),
            "overrides": list(overrides), "instruction": instruction or DEFAULT_INSTRUCTION,
            "layout": layout}
    personas = {pid: claimset.personas[pid].description for pid in chosen}
    store = StudyStore.create(path, meta, personas, build_questions(chosen))
    researcher = store.set_researcher_token()
    invites = {pid: store.add_invitations(pid, annotators) for pid in sorted(personas)}
    log.info("study %s: %s", path, json.dumps({p: len(q) for p, q in chosen.items()}))
    return store, researcher, invites


DEFAULT_INSTRUCTION = ("For each question, choose the answer you think most people in this group "
                       "would give. There are no right or wrong answers.")
