"""Registry dispatch, the shipped dataset YAMLs, statistics and source resolution."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data.records import Claim, ClaimSet, Persona
from plural_icm.data.registry import load_claimset
from plural_icm.data.sources import data_dir_path
from plural_icm.data.stats import data_stats_report, dataset_stats, format_stats

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "datasets"


def yaml_cfg(name: str, **overrides):
    raw = OmegaConf.load(ROOT / "conf" / "dataset" / f"{name}.yaml")
    raw.pop("defaults", None)
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), raw, overrides)
    return cfg


def _claim(persona, q, j, gold):
    return Claim(item_id=f"{persona}/{q}/{j}", persona_id=persona, group_id=f"{persona}/{q}",
                 question_id=q, option_key=str(j), question=q, claim=f"option {j}", gold=gold)


def small_set(with_folds=False):
    claims = [_claim(p, f"q{i}", j, j == (i % 2)) for p in ("A", "B") for i in range(8)
              for j in range(2)]
    cs = ClaimSet(name="demo", personas={"A": Persona("A", "a"), "B": Persona("B", "b")},
                  claims=claims)
    if with_folds:
        cs.folds = {f"q{i}": i % 2 for i in range(8)}
    return cs


@pytest.fixture
def fake_demo(monkeypatch):
    module = types.ModuleType("plural_icm.data.demo")
    state = {"folds": False}

    def load_demo(cfg, data_dir=None):  # the one loader signature
        state["called"] = (cfg.n_folds, cfg.split_seed, data_dir)
        return small_set(state["folds"])

    @dataclasses.dataclass
    class DemoOptions:
        pass

    module.load_demo = load_demo
    module.DemoOptions = DemoOptions
    monkeypatch.setitem(sys.modules, "plural_icm.data.demo", module)
    # the loader as the fake module would declare itself (register_loader), for this test only
    from plural_icm.data import registry
    monkeypatch.setitem(registry._REGISTERED, "demo",
                        registry.LoaderSpec(load_demo, DemoOptions, kfold=True))
    return state


def test_demo_dispatch_assigns_or_keeps_folds(fake_demo):
    cfg = OmegaConf.structured(DatasetConfig(name="demo", loader="demo", n_folds=4,
                                             split_seed=7))
    cs = load_claimset(cfg, "/data")
    assert fake_demo["called"] == (4, 7, "/data")
    assert sorted(set(cs.folds.values())) == [0, 1, 2, 3]  # assigned by the registry
    fake_demo["folds"] = True  # a loader with its own folds keeps them
    assert load_claimset(cfg).folds == {f"q{i}": i % 2 for i in range(8)}


def test_options_are_typed_and_validated_per_loader():
    from plural_icm.data.registry import LOADERS, validated_options

    gqa = validated_options(yaml_cfg("gqa"))
    assert gqa.ties == "drop" and gqa.max_options == 3 and len(gqa.countries) == 13
    assert validated_options(yaml_cfg("gqa", options={"max_options": 4})).max_options == 4
    with pytest.raises(ValueError, match=r"dataset\.options\.max_option is not an option of "
                                         r"loader 'gqa'.*valid options: count_nonsubstantive"):
        validated_options(yaml_cfg("gqa", options={"max_option": 4}))
    with pytest.raises(ValueError, match=r"dataset\.options\.max_options='many' \(loader 'gqa'\) is not accepted; "
                                         r"expected an integer"):
        validated_options(yaml_cfg("gqa", options={"max_options": "many"}))
    with pytest.raises(ValueError, match="loader 'demo'.*valid options: none"):
        validated_options(yaml_cfg("demo", options={"x": 1}))
    for name in ("gqa", "oqa", "pt", "ot", "demo"):  # every shipped YAML fits its loader's schema
        assert validated_options(yaml_cfg(name)) is not None
    assert set(LOADERS) >= {"gqa", "oqa", "pt", "ot", "demo"}


def test_datasets_declare_their_score_metric():
    assert str(yaml_cfg("ot").score_metric.value) == "representation_score"
    for name in ("gqa", "oqa", "pt", "demo"):
        assert yaml_cfg(name).score_metric.value == "claim_accuracy"


def test_unknown_loader():
    with pytest.raises(ValueError, match=r"dataset\.loader='nope' is unknown.*'gqa'"):
        load_claimset(OmegaConf.structured(DatasetConfig(name="x", loader="nope")))


def test_stats_per_persona_and_fold():
    cs = small_set(with_folds=True)
    df = dataset_stats(cs)
    row = df[(df.persona == "A") & (df.fold == "0")].iloc[0]
    assert (row.questions, row.groups, row.claims) == (4, 4, 8)
    assert row.true_fraction == pytest.approx(0.5)
    assert row.first_option_true == pytest.approx(1.0)  # even questions: option 0 True
    assert df[(df.persona == "A") & (df.fold == "1")].first_option_true.iloc[0] == 0.0
    total = df[df.persona == "TOTAL"].iloc[0]
    assert (total.questions, total.claims) == (8, 32)
    cs.claims = [c for c in cs.claims if not (c.persona_id == "B" and c.gold)]
    df = dataset_stats(cs)
    assert df[(df.persona == "B") & (df.fold == "all")].true_fraction.iloc[0] == 0.0
    text = format_stats(cs)
    assert text.startswith("dataset demo: 2 personas") and "true_fraction" in text


@pytest.mark.parametrize("name,path", [("gqa", FIXTURES / "gqa" / "global_opinions.csv"),
                                       ("oqa", FIXTURES / "oqa"),
                                       ("pt", FIXTURES / "pt"),
                                       ("ot", FIXTURES / "ot"),
                                       ("gqa_claims", FIXTURES / "claims")])
def test_shipped_yaml_configs_load_the_fixtures(name, path):
    overrides = {"path": str(path), "skip_bad_rows": name in ("gqa", "gqa_claims")}
    if name == "pt":  # the fixture holds the test split only
        overrides["options"] = {"configs": ["BeaverTails"], "splits": ["test"]}
    cs = load_claimset(yaml_cfg(name, **overrides))
    assert cs.claims and set(cs.folds) == {c.question_id for c in cs.claims}
    assert len({c.item_id for c in cs.claims}) == len(cs.claims)


def test_data_stats_report_for_gqa_lists_both_settings():
    cfg = yaml_cfg("gqa", path=str(FIXTURES / "gqa"), skip_bad_rows=True)
    text = data_stats_report(cfg)
    assert "count_nonsubstantive" in text and "180" in text
    assert "Brazil" in text and "TOTAL" in text


def test_source_helpers(tmp_path):
    (tmp_path / "opinionqa").mkdir()
    assert data_dir_path(tmp_path, ["opinions_qa", "opinionqa"]) == tmp_path / "opinionqa"
    assert data_dir_path(None, ["opinionqa"]) is None


def test_data_dir_is_used_when_path_unset(tmp_path):
    (tmp_path / "opinionqa").symlink_to(FIXTURES / "oqa")
    cs = load_claimset(yaml_cfg("oqa", path=None), data_dir=str(tmp_path))
    assert {c.question_id for c in cs.claims} == {"GUNOWN_W26", "CITY_W26", "ROBOT_W27"}


def test_real_demo_module_if_present():
    pytest.importorskip("plural_icm.data.demo")
    cs = load_claimset(yaml_cfg("demo"))
    assert cs.claims and set(cs.folds) == {c.question_id for c in cs.claims}


def test_loaders_receive_frozen_typed_settings_built_at_one_boundary():
    from plural_icm.data.gqa import GQAOptions, Ties
    from plural_icm.data.registry import dataset_settings
    from plural_icm.data.settings import DatasetSettings

    # the typed record carries every key of the schema, nothing else
    assert [f.name for f in dataclasses.fields(DatasetSettings)] == \
        [f.name for f in dataclasses.fields(DatasetConfig)]
    ds = dataset_settings(yaml_cfg("gqa", personas=["Brazil"], options={"ties": "first"}))
    assert isinstance(ds.options, GQAOptions) and ds.options.ties is Ties.first
    assert ds.personas == ("Brazil",) and ds.options.max_options == 3  # the dataclass's default
    assert dataset_settings(ds) is ds  # typed settings pass through the boundary unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.n_folds = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.options.max_options = 4  # type: ignore[misc]
    # a plain DatasetConfig (e.g. from OmegaConf.to_object) converts the same way
    typed = dataset_settings(DatasetConfig(name="gqa", loader="gqa", personas=["Brazil"],
                                           options={"ties": "first"}))
    assert typed.options == ds.options and typed.personas == ds.personas


def test_enumerated_options_are_refused_by_the_registry_naming_key_value_and_choices():
    from plural_icm.data.registry import options_of

    with pytest.raises(ValueError, match=r"dataset\.options\.counts='some' \(loader 'oqa'\) is not "
                                         r"accepted; expected auto, weighted or unweighted"):
        options_of("oqa", {"counts": "some"})
    with pytest.raises(ValueError, match=r"dataset\.options\.share_sum_tolerance=1\.5 is not "
                                         r"accepted; expected a number in \[0, 1\)"):
        options_of("gqa", {"share_sum_tolerance": 1.5})
