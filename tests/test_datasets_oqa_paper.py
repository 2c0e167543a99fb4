"""The paper's OpinionQA items from the fork's released result files (loader ``oqa_paper``)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plural_icm.data.registry import declared_folds, load_claimset
from plural_icm.data.sources import DataFormatError

ROOT = Path(__file__).resolve().parents[1]
RELEASED = ROOT.parent / "shared" / "data" / "paper_released" / "opinionqa"


def _cfg(path, **options):
    return OmegaConf.create({"name": "oqa_paper", "loader": "oqa_paper", "path": str(path),
                             "n_folds": 4, "options": options})


def _item(party: str, q: str, option: str, gold: bool, out: str = "True") -> dict:
    return {"instruction": "Label the input claim as True or False",
            "input": f"Question: {q}\nClaim: The majority of {party} would answer this question "
                     f"as: '{option}'\nI think this claim is ",
            "output": "True" if gold else "False", "generated_output": out}


def _write(root: Path, folds: dict[int, list[dict]]) -> Path:
    d = root / "zero_shot_chat"
    d.mkdir(parents=True)
    for k, items in folds.items():
        (d / f"result_opinionsqa_zero_shot_chat_fold{k}.json").write_text(json.dumps(items))
    return root


def test_fixture_groups_adjacent_options_persona_from_claim_fold_from_file(tmp_path):
    generic = "Please choose the statement that comes closer to your own views."
    folds = {1: [_item("Democrats", generic, "A", True), _item("Democrats", generic, "B", False),
                 _item("Democrats", generic, "C", False), _item("Democrats", generic, "D", True),
                 _item("Republicans", "Q2?", "yes", True, out="You")],
             2: [_item("independent (no party affiliation) respondents", "Q3?", "no", False)],
             3: [], 4: []}
    cs = load_claimset(_cfg(_write(tmp_path, folds)))
    assert len(cs.claims) == 6 and set(cs.personas) == {"Democrat", "Republican", "Independent"}
    groups = cs.groups()
    # a generic question text shared by two questions: two groups of two, not one of four
    assert sorted(len(m) for m in groups.values()) == [1, 1, 2, 2]
    assert Counter(cs.folds[c.question_id] for c in cs.claims) == {0: 5, 1: 1}
    rep = next(c for c in cs.claims if c.persona_id == "Republican")
    assert rep.meta["released_output"] == "You" and rep.gold is True
    assert "The user is a Republican" in cs.personas["Republican"].description
    assert declared_folds(_cfg(tmp_path)) == 4


def test_bad_prompt_names_the_file_and_item_and_missing_fold_is_named(tmp_path):
    bad = {"input": "Question: q\nClaim: something else", "output": "True"}
    root = _write(tmp_path / "a", {1: [bad], 2: [], 3: [], 4: []})
    with pytest.raises(DataFormatError, match=r"fold1\.json: item 0"):
        load_claimset(_cfg(root))
    skipped = load_claimset(OmegaConf.merge(_cfg(_write(tmp_path / "b", {
        1: [bad, _item("Democrats", "q", "x", True)], 2: [], 3: [], 4: []})), {"skip_bad_rows": True}))
    assert len(skipped.claims) == 1 and "skipped 1 bad row" in skipped.description
    with pytest.raises(FileNotFoundError, match=r"fold\{3,4\}"):
        load_claimset(_cfg(_write(tmp_path / "c", {1: [], 2: []})))


@pytest.mark.data
def test_released_files_hold_the_papers_559_claims_in_4_folds():
    """Counts of ../shared/data/paper_released/SOURCE.md: 559 claims, Democrat 234, Republican
    172, Independent 153, 199 question texts; per fold 161, 75, 149, 174."""
    if not RELEASED.is_dir():
        pytest.skip(f"the fork's released files are not at {RELEASED}")
    for variant in ("zero_shot_chat", "zero_shot"):
        cs = load_claimset(_cfg(RELEASED, variant=variant))
        assert len(cs.claims) == 559
        assert Counter(c.persona_id for c in cs.claims) == {"Democrat": 234, "Republican": 172,
                                                            "Independent": 153}
        assert len({c.question for c in cs.claims}) == 199
        assert Counter(cs.folds[c.question_id] for c in cs.claims) == {0: 161, 1: 75, 2: 149, 3: 174}
        sizes = Counter(len(m) for m in cs.groups().values())
        assert sizes == {2: 264, 1: 31}
        assert all(sum(c.gold for c in m) == 1 for m in cs.groups().values() if len(m) == 2)
    # the fork's scorer on its own released predictions: the paper's 69.5% zero-shot (chat)
    cs = load_claimset(_cfg(RELEASED))
    acc = []
    for k in range(4):
        fold = [c for c in cs.claims if cs.folds[c.question_id] == k]
        right = [c.meta["released_output"].strip().lower().startswith(str(c.gold).lower())
                 for c in fold]
        acc.append(sum(right) / len(right))
    assert [round(a, 4) for a in acc] == [0.6894, 0.7467, 0.7047, 0.6379]
    assert sum(acc) / 4 == pytest.approx(0.6947, abs=5e-5)
