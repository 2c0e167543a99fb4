"""OpinionQA loader: both release layouts, weighting, labels, wording, bad input, real copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data import oqa
from plural_icm.data.registry import dataset_settings, load_claimset
from plural_icm.data.sources import DataFormatError
from plural_icm.data.stats import dataset_stats


def load_oqa(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return oqa.load_oqa(dataset_settings(cfg), data_dir)

FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "oqa"
SHARED = Path(os.environ.get("PLURAL_ICM_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def make_cfg(path=FIXTURE, **options):
    return OmegaConf.structured(DatasetConfig(
        name="oqa", loader="oqa", path=None if path is None else str(path),
        personas=["Democrat", "Republican", "Independent"], options=options))


def gold_option(cs, persona, key):
    group = [c for c in cs.claims if c.persona_id == persona and c.question_id == key]
    return [c.meta["options"][c.meta["option_index"]] for c in group if c.gold]


@pytest.mark.parametrize("path", [FIXTURE, FIXTURE / "data", FIXTURE / "data" / "human_resp"])
def test_accepts_the_three_path_forms(path):
    assert len(load_oqa(make_cfg(path)).claims) == len(load_oqa(make_cfg()).claims)


def test_labels_options_and_wording():
    cs = load_oqa(make_cfg())
    assert set(cs.personas) == {"Democrat", "Republican", "Independent"}
    assert {c.question_id for c in cs.claims} == {"GUNOWN_W26", "CITY_W26", "ROBOT_W27"}
    assert gold_option(cs, "Democrat", "GUNOWN_W26") == ["No"]
    assert gold_option(cs, "Republican", "GUNOWN_W26") == ["Yes"]
    assert gold_option(cs, "Independent", "GUNOWN_W26") == []  # 50/50 tie dropped
    # options from info.csv (the JSON MC_options are comma-split), refusals left out
    city = [c for c in cs.claims if c.question_id == "CITY_W26" and c.persona_id == "Democrat"]
    assert city[0].meta["options"] == ["A city, with shops nearby", "A small town"]
    assert city[0].meta["distribution"] == pytest.approx([0.7, 0.3])
    assert gold_option(cs, "Republican", "CITY_W26") == ["A small town"]
    c = [c for c in cs.claims if c.item_id == "oqa/Independent/CITY_W26/0"][0]
    assert c.claim == ("The majority of independent (no party affiliation) respondents would "
                       "answer this question as: 'A city, with shops nearby'")
    assert c.question == "Would you rather live in" and c.gold is True
    assert "Republicans would answer" in gold_claim(cs, "Republican", "CITY_W26")
    for group in cs.groups().values():
        assert sum(c.gold for c in group) == 1


def gold_claim(cs, persona, key):
    return [c.claim for c in cs.claims if c.persona_id == persona and c.question_id == key
            and c.gold][0]


def test_responses_csv_is_weighted():
    cs = load_oqa(make_cfg())
    # 2 weighted Yes (w=2) vs 3 No (w=0.5): unweighted majority would be No
    assert gold_option(cs, "Democrat", "ROBOT_W27") == ["Yes"]
    robot = [c for c in cs.claims if c.item_id == "oqa/Democrat/ROBOT_W27/0"][0]
    assert robot.meta["distribution"] == pytest.approx([4 / 5.5, 1.5 / 5.5])
    assert robot.meta["weighted"] is True
    assert gold_option(cs, "Republican", "ROBOT_W27") == ["No"]  # Refused (w=5) ignored


def test_ties_first_option():
    cs = load_oqa(make_cfg(ties="first"))
    assert gold_option(cs, "Independent", "GUNOWN_W26") == ["Yes"]


def _copy(tmp_path):
    dst = tmp_path / "oqa"
    shutil.copytree(FIXTURE, dst)
    return dst / "data" / "human_resp"


def test_answer_outside_options_is_an_error(tmp_path):
    root = _copy(tmp_path)
    js = root / "American_Trends_Panel_W26" / "POLPARTY_data.json"
    data = json.loads(js.read_text())
    data["GUNOWN_W26"]["Democrat"]["Maybe"] = 3.0
    js.write_text(json.dumps(data))
    with pytest.raises(DataFormatError, match=r"GUNOWN_W26.*'Democrat'.*'Maybe'.*references"):
        load_oqa(make_cfg(root))
    cfg = make_cfg(root)
    cfg.skip_bad_rows = True
    assert gold_option(load_oqa(cfg), "Democrat", "GUNOWN_W26") == ["No"]


def test_unparseable_references_and_missing_columns(tmp_path):
    root = _copy(tmp_path)
    info = root / "American_Trends_Panel_W26" / "info.csv"
    df = pd.read_csv(info, index_col=0)
    df.loc[0, "references"] = "['Yes', 'No'"
    df.to_csv(info)
    with pytest.raises(DataFormatError, match=r"info\.csv: data row 1 \(key 'GUNOWN_W26'\).*"
                                              r"'references' is not a Python list literal"):
        load_oqa(make_cfg(root))
    df.drop(columns=["option_ordinal"]).to_csv(info)
    with pytest.raises(DataFormatError, match=r"info\.csv: missing column\(s\) "
                                              r"\['option_ordinal'\]"):
        load_oqa(make_cfg(root))


def test_responses_without_weight_column(tmp_path):
    root = _copy(tmp_path)
    resp = root / "American_Trends_Panel_W27" / "responses.csv"
    pd.read_csv(resp).drop(columns=["WEIGHT_W27"]).to_csv(resp, index=False)
    with pytest.raises(DataFormatError, match=r"responses\.csv: missing column\(s\) "
                                              r"\['WEIGHT_W27'\]"):
        load_oqa(make_cfg(root))


def test_unweighted_mode_needs_the_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"W27 has neither responses\.csv nor POLPARTY"):
        load_oqa(make_cfg(counts="unweighted"))


def test_missing_path_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*dataset\.path=.*CodaLab"):
        load_oqa(make_cfg(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"(?s)dataset\.path is unset.*PLURAL_ICM_OQA"):
        load_oqa(make_cfg(None))
    with pytest.raises(FileNotFoundError, match="no American_Trends_Panel_W"):
        load_oqa(make_cfg(tmp_path))


def test_folds_stratified_by_persona_and_deterministic():
    cs = load_claimset(make_cfg())
    assert cs.folds == load_claimset(make_cfg()).folds
    cfg = make_cfg()
    cfg.split_seed = 1
    assert set(load_claimset(cfg).folds) == set(cs.folds)
    train, test = cs.split(0)
    assert not {c.question_id for c in train} & {c.question_id for c in test}


@pytest.fixture
def shared_oqa():
    path = SHARED / "opinionqa"
    if not path.exists():
        pytest.skip(f"research copy absent: {path}")
    return path


@pytest.mark.data
def test_real_partial_copy(shared_oqa):
    cs = load_claimset(make_cfg(shared_oqa))
    questions = {c.question_id for c in cs.claims}
    assert len(questions) == 229  # binary questions with POLPARTY counts (notes: 229)
    for group in cs.groups().values():
        assert len(group) == 2 and sum(c.gold for c in group) == 1
    stats = dataset_stats(cs)
    per_fold = stats[(stats.persona == "Democrat") & (stats.fold != "all")]["questions"]
    assert per_fold.max() - per_fold.min() <= 1  # stratified: folds differ by at most one
    # the one known tie (SCI5_W34, Democrats 479/479) is dropped by default
    assert not [c for c in cs.claims if c.question_id == "SCI5_W34" and c.persona_id == "Democrat"]
