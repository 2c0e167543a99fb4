"""GlobalOpinionQA loader: parsing, filters, labels, claim wording, bad input."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data import gqa
from plural_icm.data.gqa import COUNTRIES, is_nonsubstantive, parse_selections
from plural_icm.data.records import ConsistencyRule
from plural_icm.data.registry import dataset_settings, load_claimset
from plural_icm.data.sources import DataFormatError


def load_gqa(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return gqa.load_gqa(dataset_settings(cfg), data_dir)


def question_counts(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return gqa.question_counts(dataset_settings(cfg), data_dir)

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
    # kept: binary (1), 2 substantive + DK (2), 3 substantive + (VOL) (3), the quirk rows 10-13
    # and 18; not kept: missing Turkey (4), Brazil tie (5), 4 options (6), Mexico all zero (7),
    # empty, malformed (9), repeat (14), duplicate/empty options (15, 16), France's shares (17)
    assert set(qs) == {"Do you think the economy is doing well?",
                       "Is religion important in your life?",
                       "How much do you trust the national government?",
                       "Where would you place yourself on this scale?",
                       "Do you favor or oppose the new trade deal?",
                       "Do you agree that work is a duty towards society?",
                       "Is climate change a major threat?"}
    assert ("skipped 3 bad row(s) (duplicate_options 1, empty_option 1, malformed 1)"
            in caplog.text and "tie" in caplog.text)
    econ = {(c.persona_id, c.option_key): c for c in qs["Do you think the economy is doing well?"]
            if c.meta["row"] == 1}
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
    for text, claims in qs.items():
        # row 18 asks row 1's question with other options: its own id (row 14, an exact
        # repeat of row 1, is skipped instead of getting a second id)
        assert len({c.question_id for c in claims}) == (2 if "economy" in text else 1)
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
    # count_nonsubstantive=True drops the 4-option rows 3, 11 (5 options), 12, 13
    assert got == {(False, "drop"): 8, (False, "first"): 9, (True, "drop"): 4, (True, "first"): 5}


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


# -- real-row quirks (datasets.md), one fixture row each ---------------------------------------

@pytest.mark.parametrize("option", [
    "Other (VOL)", "Both (VOL)", "Depends on the situation (VOL)", "Missing; Not available",
    "Other missing; Multiple answers Mail (EVS)", "No answer", "Don't know", "DK/Refused"])
def test_real_row_nonsubstantive_forms(option):
    assert is_nonsubstantive(option)


def test_quirk_rows_of_the_fixture():
    cs = load_gqa(make_cfg())
    qs = by_question(cs)
    scale = [c for c in qs["Where would you place yourself on this scale?"]
             if c.persona_id == "Japan"]
    assert [c.meta["options"] for c in scale][0] == ["1", "2"]  # numbers, not '1.0'
    assert scale[1].claim.endswith("as: '2'") and scale[1].gold is True
    trade = qs["Do you favor or oppose the new trade deal?"]
    assert {c.meta["options"][c.meta["option_index"]] for c in trade} == {"Favor", "Oppose"}
    duty = qs["Do you agree that work is a duty towards society?"]
    assert trade[0].meta["distribution"] == pytest.approx([0.5 / 0.9, 0.4 / 0.9])
    assert {c.meta["options"][c.meta["option_index"]] for c in duty} == {"Agree", "Disagree"}
    # every skip is in the description with its reason
    d = cs.description
    for part in ("skipped 1 empty-question row(s)", "1 duplicate row(s)",
                 "1 row(s) with numeric options", "1 country entr(ies) whose shares do not sum",
                 "duplicate_options 1", "empty_option 1", "malformed 1"):
        assert part in d, (part, d)
    assert "Should the state own the railways?" not in qs  # France dropped, not renormalised


@pytest.mark.parametrize("options,shares,match", [
    ("['Yes', 'Yes']", [0.6, 0.4], "lists an option twice"),
    ("['', ' ']", [0.6, 0.4], "empty option"),
    ("['Yes', None]", [0.6, 0.4], "strings or numbers"),
    ("['Yes', 'No']", [0.7, 0.7], r"sums to 1\.400; expected shares summing to 1"),
])
def test_degenerate_rows_strict_error_or_counted_skip(tmp_path, options, shares, match):
    sel = "defaultdict(<class 'list'>, {%s})" % ", ".join(f"'{c}': {shares}" for c in COUNTRIES)
    ok = "defaultdict(<class 'list'>, {%s})" % ", ".join(f"'{c}': [0.6, 0.4]" for c in COUNTRIES)
    path = _write(tmp_path, [{"question": "Bad?", "options": options, "selections": sel,
                              "source": "GAS"},
                             {"question": "Good?", "options": "['Yes', 'No']", "selections": ok,
                              "source": "GAS"}])
    cfg = make_cfg(path)
    cfg.skip_bad_rows = False
    with pytest.raises(DataFormatError, match=r"data row 1 .*" + match):
        load_gqa(cfg)
    cfg.skip_bad_rows = True
    cs = load_gqa(cfg)
    assert {c.question for c in cs.claims} == {"Good?"}


def test_default_config_skips_rather_than_aborts():
    from hydra import compose, initialize_config_dir

    from plural_icm.config.schema import register_configs

    register_configs()
    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose("config", overrides=["dataset=gqa", f"dataset.path={FIXTURE}",
                                           "dataset.options.download=false"])
    assert cfg.dataset.skip_bad_rows is True
    cs = load_claimset(cfg.dataset)
    assert "skipped 3 bad row(s)" in cs.description
