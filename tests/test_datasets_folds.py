"""Folds never leak: one question text lands in one fold, for every persona and every seed."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data.folds import assign_folds, question_text, question_units
from plural_icm.data.records import Claim
from plural_icm.data.registry import load_claimset

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"
# The research copies: ../shared/data from the repository root (PLURAL_ICM_SHARED_DATA overrides,
# e.g. for a git worktree that sits one level deeper).
SHARED = Path(os.environ.get("PLURAL_ICM_SHARED_DATA") or ROOT.parent / "shared" / "data")
SEEDS = range(10)


def _claim(persona, qid, text):
    return Claim(item_id=f"{persona}/{qid}", persona_id=persona, group_id=f"{persona}/{qid}",
                 question_id=qid, option_key="0", question=text, claim="c", gold=True)


def folds_by_text(cs):
    out = defaultdict(set)
    for c in cs.claims:
        out[question_text(c)].add(cs.folds[c.question_id])
    return out


def test_units_join_ids_sharing_a_text_transitively():
    claims = [_claim("A", "q1", "Same text?"), _claim("B", "q2", "  same   TEXT? "),
              _claim("A", "q3", "Other?"), _claim("B", "q4", "Other?"), _claim("A", "q5", "x")]
    units = question_units(claims)
    assert units["q1"] == units["q2"] == "q1" and units["q3"] == units["q4"] == "q3"
    assert units["q5"] == "q5"
    assert question_units(list(reversed(claims))) == units  # order does not matter


def test_statement_options_join_across_stems_but_short_options_do_not():
    opts = ["Society is better off if people marry", "Society is just as well off otherwise"]
    a = _claim("A", "MARRFAM2_W32", "Which statement comes closer to your own views?")
    b = _claim("A", "MARRFAM_W92", "Please choose the statement that comes closer.")
    c = _claim("A", "X", "Do you own a gun?")
    d = _claim("A", "Y", "Do you own a car?")
    for claim, options in ((a, opts), (b, opts), (c, ["Yes", "No"]), (d, ["Yes", "No"])):
        claim.meta["options"] = options
    units = question_units([a, b, c, d])
    assert units["MARRFAM2_W32"] == units["MARRFAM_W92"] and units["X"] != units["Y"]


@pytest.mark.parametrize("seed", SEEDS)
def test_synthetic_repeats_never_span_folds(seed):
    claims = []
    for p in ("A", "B", "C"):
        for q in range(12):
            claims.append(_claim(p, f"{p}{q}", f"question {q % 7}"))  # texts repeat across ids
    folds = assign_folds(claims, 4, seed)
    by_text = defaultdict(set)
    for c in claims:
        by_text[question_text(c)].add(folds[c.question_id])
    assert all(len(f) == 1 for f in by_text.values())
    assert len(set(folds.values())) == 4  # still spread over the folds


@pytest.mark.parametrize("seed", SEEDS)
def test_gqa_fixture_repeated_question_one_fold(seed):
    cfg = OmegaConf.structured(DatasetConfig(
        name="gqa", loader="gqa", path=str(FIXTURES / "gqa" / "global_opinions.csv"),
        skip_bad_rows=True, split_seed=seed, options={"download": False}))
    cs = load_claimset(cfg)
    econ = {c.question_id for c in cs.claims if "economy" in c.question}
    assert len(econ) == 2  # rows 1 and 18: one text, two option lists
    assert len({cs.folds[q] for q in econ}) == 1
    assert all(len(f) == 1 for f in folds_by_text(cs).values())


@pytest.mark.data
@pytest.mark.parametrize("seed", SEEDS)
def test_oqa_real_copy_one_text_two_waves_one_fold(seed):
    path = SHARED / "opinionqa"
    if not path.is_dir():
        pytest.skip(f"no research copy at {path}")
    cfg = OmegaConf.structured(DatasetConfig(name="oqa", loader="oqa", path=str(path),
                                             split_seed=seed, skip_bad_rows=True))
    cs = load_claimset(cfg)
    keys = {c.question_id for c in cs.claims}
    for pair in (("HARASS4_W32", "HARASS4_W41"), ("MARRFAM2_W32", "MARRFAM_W92")):
        if set(pair) <= keys:
            assert cs.folds[pair[0]] == cs.folds[pair[1]], pair
    sizes = [sum(1 for q in {c.question_id for c in cs.claims if c.persona_id == "Democrat"}
                 if cs.folds[q] == k) for k in range(4)]
    assert max(sizes) - min(sizes) <= 2, sizes  # large units do not unbalance the folds
    leaks = {t: f for t, f in folds_by_text(cs).items() if len(f) > 1}
    assert not leaks
