"""OvertonBench loader: columns, personas, per-group labels, the 30/70 split, bad input."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data import ot
from plural_icm.data.ot import search_test_split
from plural_icm.data.records import ConsistencyRule
from plural_icm.data.registry import dataset_settings, load_claimset
from plural_icm.data.sources import DataFormatError


def load_ot(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return ot.load_ot(dataset_settings(cfg), data_dir)

FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "ot"


def make_cfg(path=FIXTURE, **options):
    opts = {"search_fraction": 0.3, "rating_threshold": 4.0, "download": False}
    opts.update(options)
    return OmegaConf.structured(DatasetConfig(
        name="ot", loader="ot", path=None if path is None else str(path), n_folds=1,
        options=opts))


def test_items_labels_and_wording(caplog):
    cs = load_ot(make_cfg())
    assert cs.rule is ConsistencyRule.NONE
    assert {c.persona_id for c in cs.claims} == {"Democrat", "Republican", "Independent"}
    assert "'Other': 20" in caplog.text and "'<missing>': 20" in caplog.text  # left out, logged
    assert len(cs.claims) == 10 * 2 * 3 and len(cs.groups()) == len(cs.claims)
    gold = {(c.persona_id, c.meta["model"]): set() for c in cs.claims}
    for c in cs.claims:
        gold[(c.persona_id, c.meta["model"])].add(c.gold)
    assert gold == {("Democrat", "gpt-x"): {True}, ("Democrat", "llama-y"): {False},
                    ("Republican", "gpt-x"): {False}, ("Republican", "llama-y"): {True},
                    ("Independent", "gpt-x"): {True}, ("Independent", "llama-y"): {True}}
    c = [c for c in cs.claims if c.persona_id == "Republican" and c.meta["model"] == "llama-y"
         and c.question == "Question 3?"][0]
    assert c.meta["mean_rating"] == pytest.approx(4.5) and c.meta["n_ratings"] == 2
    assert c.claim == ("The majority of Republicans would answer this question as: "
                       "'Answer of llama-y to 3.'")
    # a higher threshold flips the Independents' 4.0 means
    strict = load_ot(make_cfg(rating_threshold=4.5))
    assert not any(c.gold for c in strict.claims if c.persona_id == "Independent")


def test_search_test_split_30_70_seeded_whole_questions():
    cs = load_claimset(make_cfg())
    assert sorted(cs.folds.values()).count(-1) == 3 and len(cs.folds) == 10
    search, test = cs.split(0)
    assert {cs.folds[c.question_id] for c in search} == {-1}  # "search set only"
    assert {cs.folds[c.question_id] for c in test} == {0}
    assert len(search) == 3 * 6 and len(test) == 7 * 6
    assert load_claimset(make_cfg()).folds == cs.folds
    with pytest.raises(ValueError, match=r"fold=1 is out of range.*valid folds are 0\.\.0"):
        cs.split(1)  # a 30/70 split has one valid fold: fold=1 never swaps search and test


def test_split_is_stratified_by_persona_set():
    base = load_ot(make_cfg()).claims
    # make questions 0-4 Democrat-only by dropping the others' claims on them
    claims = [c for c in base if not (c.question_id in {f"ot-{i}" for i in range(5)}
                                      and c.persona_id != "Democrat")]
    folds = search_test_split(claims, 0.4, seed=0)
    dem_only = [folds[f"ot-{i}"] for i in range(5)]
    rest = [folds[f"ot-{i}"] for i in range(5, 10)]
    assert dem_only.count(-1) == 2 and rest.count(-1) == 2
    seeds = {tuple(sorted(search_test_split(claims, 0.4, seed=s).items())) for s in range(5)}
    assert len(seeds) > 1  # the seed changes which questions are searched


def test_bad_input(tmp_path):
    df = pd.read_parquet(FIXTURE / "full-00000-of-00001.parquet")
    path = tmp_path / "full.parquet"
    df.drop(columns=["U.s. political affiliation"]).to_parquet(path)
    with pytest.raises(DataFormatError, match=r"full\.parquet: missing column\(s\) "
                                              r"\['U\.s\. political affiliation'\]"):
        load_ot(make_cfg(path))
    bad = df.copy()
    bad["representation_rating"] = bad["representation_rating"].astype(object)
    bad.loc[0, "representation_rating"] = "great"
    path = tmp_path / "full.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(DataFormatError, match=r"full\.csv: row 0: representation_rating must "
                                              r"be a number"):
        load_ot(make_cfg(path))
    cfg = make_cfg(path)
    cfg.skip_bad_rows = True
    assert len(load_ot(cfg).claims) == 60
    csv = tmp_path / "good" / "full.csv"
    csv.parent.mkdir()
    df.to_csv(csv, index=False)
    assert load_ot(make_cfg(csv)).claims == load_ot(make_cfg()).claims


def test_missing_path_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*elinorpd/overtonbench"):
        load_ot(make_cfg(tmp_path / "absent.parquet"))
    with pytest.raises(FileNotFoundError, match=r"(?s)downloads are off.*PLURAL_ICM_OT"):
        load_ot(make_cfg(None))
    with pytest.raises(FileNotFoundError, match="no parquet/csv file for split 'prism'"):
        load_ot(make_cfg(split="prism"))
