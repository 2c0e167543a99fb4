"""GlobalOpinionQA loader: parsing, filters, labels, claim wording, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data.gqa import (COUNTRIES, is_nonsubstantive, load_gqa, parse_selections,
                                 question_counts)
from plural_icm.data.records import ConsistencyRule
from plural_icm.data.registry import load_claimset
from plural_icm.data.sources import DataFormatError

FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "gqa" / "global_opinions.csv"


def make_cfg(path=FIXTURE, **options):
    opts = {"count_nonsubstantive": False, "countries": list(COUNTRIES), "max_options": 3,
            "download": False}
    opts.update(options)
    return OmegaConf.structured(DatasetConfig(name="gqa", loader="gqa", path=str(path),
                                              skip_bad_rows=True, options=opts))


def by_question(cs):
    out = {}
    for c in cs.claims:
        out.setdefault(c.question, []).append(c)
    return out


def test_parse_selections_strips_defaultdict_wrapper_without_eval():
    text = "defaultdict(<class 'list'>, {'Brazil': [0.6, 0.4], 'Japan': [0.1, 0.9]})"
    assert parse_selections(text, "x") == {"Brazil": [0.6, 0.4], "Japan": [0.1, 0.9]}
    with pytest.raises(DataFormatError, match="selections"):
        parse_selections("defaultdict(<class 'list'>, {'Brazil': __import__('os')})", "x")


@pytest.mark.parametrize("option,expected", [
    ("DK/Refused", True), ("(VOL) Don't know", True), ("Don't know", True), ("No answer", True),
    ("Refused", True), ("Yes", False), ("Not important", False), ("Nobody", False)])
def test_nonsubstantive_detection(option, expected):
    assert is_nonsubstantive(option) is expected


def test_filters_labels_and_wording(caplog):
    with caplog.at_level(logging.WARNING):
        cs = load_gqa(make_cfg())
    assert cs.rule is ConsistencyRule.EXACTLY_ONE
    assert set(cs.personas) == set(COUNTRIES)
    assert cs.personas["Brazil"].description == "The user is from Brazil."
    qs = by_question(cs)
    # kept: binary (1), 2 substantive + DK (2), 3 substantive + (VOL) (3); not kept: missing
    # Turkey (4), Brazil tie (5), 4 options (6), Mexico all zero (7), empty, malformed
    assert set(qs) == {"Do you think the economy is doing well?",
                       "Is religion important in your life?",
                       "How much do you trust the national government?"}
    assert "skipped 1 bad row" in caplog.text and "tie" in caplog.text
    econ = {(c.persona_id, c.option_key): c for c in qs["Do you think the economy is doing well?"]}
    assert econ[("Brazil", "0")].gold is True and econ[("Brazil", "1")].gold is False
    assert econ[("Turkey", "0")].gold is False and econ[("Turkey", "1")].gold is True
    c = econ[("Turkey", "1")]
    assert c.claim == "The majority of people from Turkey would answer this question as: 'No'"
    assert c.meta["options"] == ["Yes", "No"] and c.meta["option_index"] == 1
    assert c.meta["distribution"] == pytest.approx([0.35, 0.65])
    # non-substantive options never become claims; distribution renormalised without them
    relig = [c for c in qs["Is religion important in your life?"] if c.persona_id == "France"]
    assert [c.meta["options"] for c in relig][0] == ["Important", "Not important"]
    assert [c.gold for c in relig] == [False, True]
    assert relig[0].meta["distribution"] == pytest.approx([0.2 / 0.9, 0.7 / 0.9])
    # one exactly-one group per (country, question), one question id shared by all countries
    for group in cs.groups().values():
        assert sum(c.gold for c in group) == 1
        assert len({c.persona_id for c in group}) == 1
    for claims in qs.values():
        assert len({c.question_id for c in claims}) == 1
        assert {c.persona_id for c in claims} == set(COUNTRIES)
    assert len({c.item_id for c in cs.claims}) == len(cs.claims)


def test_count_nonsubstantive_flag_and_ties_option():
    strict = {c.question for c in load_gqa(make_cfg(count_nonsubstantive=True)).claims}
    assert "How much do you trust the national government?" not in strict
    assert "Is religion important in your life?" in strict
    broken = by_question(load_gqa(make_cfg(ties="first")))
    tie = {c.persona_id: c for c in broken["Is it acceptable to eat meat?"] if c.option_key == "0"}
    assert tie["Brazil"].gold is True  # first listed option wins the tie


def test_question_counts_reports_both_settings():
    df = question_counts(make_cfg())
    got = {(r.count_nonsubstantive, r.ties): r.questions for r in df.itertuples()}
    assert got == {(False, "drop"): 3, (False, "first"): 4, (True, "drop"): 2, (True, "first"): 3}


def test_malformed_row_is_an_error_naming_file_and_row():
    cfg = make_cfg()
    cfg.skip_bad_rows = False
    with pytest.raises(DataFormatError, match=r"global_opinions\.csv: data row 9 .*'options'"):
        load_gqa(cfg)


def _write(tmp_path, rows):
    path = tmp_path / "global_opinions.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_shares_not_matching_options(tmp_path):
    sel = "defaultdict(<class 'list'>, {'Brazil': [0.5, 0.3, 0.2]})"
    path = _write(tmp_path, [{"question": "Q?", "options": "['Yes', 'No']", "selections": sel,
                              "source": "GAS"}])
    cfg = make_cfg(path)
    cfg.skip_bad_rows = False
    with pytest.raises(DataFormatError, match=r"data row 1.*3 shares but the row has 2 options"):
        load_gqa(cfg)


def test_missing_columns(tmp_path):
    path = _write(tmp_path, [{"question": "Q?", "options": "['Yes', 'No']"}])
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['selections', 'source'\]"):
        load_gqa(make_cfg(path))


def test_missing_path_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)dataset\.path=.*huggingface-cli download"):
        load_gqa(make_cfg(tmp_path / "nope.csv"))
    cfg = make_cfg()
    cfg.path = None
    with pytest.raises(FileNotFoundError, match="downloads are off"):
        load_gqa(cfg)


def test_registry_folds_whole_questions_and_persona_filter():
    cfg = make_cfg()
    cs = load_claimset(cfg)
    assert set(cs.folds.values()) <= {0, 1, 2, 3}
    assert set(cs.folds) == {c.question_id for c in cs.claims}
    assert load_claimset(cfg).folds == cs.folds  # deterministic
    cfg.personas = ["Japan", "Brazil"]
    sub = load_claimset(cfg)
    assert {c.persona_id for c in sub.claims} == {"Japan", "Brazil"}
    assert sub.folds == cs.folds  # the split does not depend on the persona subset
    cfg.personas = ["Atlantis"]
    with pytest.raises(ValueError, match=r"unknown persona\(s\) \['Atlantis'\].*Brazil"):
        load_claimset(cfg)
