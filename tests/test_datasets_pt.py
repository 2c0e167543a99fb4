"""Persona-Tailoring loader: formats, keyword clustering, pair claims in both orders, real copy."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig
from plural_icm.data import pt
from plural_icm.data.pt import persona_type
from plural_icm.data.registry import dataset_settings, load_claimset
from plural_icm.data.sources import DataFormatError
from plural_icm.data.stats import dataset_stats, format_stats


def load_pt(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return pt.load_pt(dataset_settings(cfg), data_dir)


def cluster_sizes(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return pt.cluster_sizes(dataset_settings(cfg), data_dir)

FIXTURE = Path(__file__).parent / "fixtures" / "datasets" / "pt"
SHARED = Path(os.environ.get("PLURAL_ICM_SHARED_DATA")
              or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def make_cfg(path=FIXTURE, **options):
    opts = {"configs": ["BeaverTails"], "splits": ["test"], "persona_field": "gold",
            "download": False}
    opts.update(options)
    return OmegaConf.structured(DatasetConfig(
        name="pt", loader="pt", path=None if path is None else str(path),
        personas=["DCF", "DEC", "DMS", "DSN"], options=opts))


@pytest.mark.parametrize("text,expected", [
    ("The user prefers direct, concise answers.", ("DCF", "ok")),
    ("The user wants answers delivered concisely and to the point.", ("DCF", "ok")),
    ("The user prefers step-by-step instructions.", ("DMS", "ok")),
    ("The user is anxious and prefers empathetic, gentle support.", ("DEC", "ok")),
    ("The user wants in-depth, nuanced answers with historical context.", ("DSN", "ok")),
    # positive DCF but more DCF negatives -> DCF ineligible; DSN wins
    ("The user prefers concise answers but wants nuanced context and background.",
     ("DSN", "ok")),
    ("The user prefers brief instructions.", (None, "ambiguous")),
    ("The user is a thoughtful gift-giver.", (None, "no_match")),
    ("The user is indirect.", (None, "no_match")),  # whole words only
    # hyphenation and inflection (datasets.md): "to-the-point" is "to the point",
    # "acknowledges"/"acknowledging" are "acknowledge", "steps" is "step"
    ("The user likes to-the-point replies.", ("DCF", "ok")),
    ("The user wants a reply that acknowledges emotions.", ("DEC", "ok")),
    ("The user values acknowledging emotions first.", ("DEC", "ok")),
    ("The user wants clear steps.", ("DMS", "ok")),
    # "step by step" and "step-by-step" are one phrase, counted once: it ties with "briefly"
    ("The user likes step-by-step help but briefly.", (None, "ambiguous")),
])
def test_persona_type(text, expected):
    assert persona_type(text) == expected


@pytest.mark.parametrize("fmt", ["arrow", "parquet", "jsonl"])
def test_formats_give_identical_claims(fmt):
    ref = load_pt(make_cfg(format="jsonl")).claims
    root = FIXTURE / "parquet" if fmt == "parquet" else FIXTURE
    assert load_pt(make_cfg(root, format=fmt)).claims == ref


def test_groups_orders_labels_and_wording(caplog):
    cs = load_pt(make_cfg(persona_text="instance"))
    assert "skipped 1 row(s) with an empty" in caplog.text
    assert "1 no keyword match, 1 ambiguous" in caplog.text
    groups = cs.groups()
    assert len(groups) == 6 and len(cs.claims) == 12
    kinds = {(g.split("/")[3], g.split("/")[4], g.split("/")[5]) for g in groups}
    assert kinds == {("0", "DCF", "chosen"), ("0", "DSN", "rejected"), ("1", "DEC", "chosen"),
                     ("1", "DMS", "rejected"), ("2", "DSN", "rejected"), ("3", "DCF", "rejected")}
    text = (FIXTURE / "jsonl/BeaverTails/test.jsonl").read_text()
    rows = [json.loads(line) for line in text.splitlines()]
    for gid, group in groups.items():
        assert sorted(c.option_key for c in group) == ["AB", "BA"]
        assert sum(c.gold for c in group) == 1
        assert len({c.question_id for c in group}) == 1
        true = [c for c in group if c.gold][0]
        row = rows[true.meta["row"]]
        side = true.meta["persona_side"]
        wanted = row["chosen"] if side == "chosen" else row["rejected"]
        # the True claim says "Choice 1 > Choice 2" with the preferred response as Choice 1
        assert true.claim == "Choice 1 > Choice 2."
        assert true.question.split("\nChoice 1: ")[1].split("\nChoice 2: ")[0] == wanted
        assert true.question.startswith(row["prompt"] + "\nHuman Response Preference: "
                                        + row[f"{side}_persona_gold"] + "\n")
    # both personas of a pair share the question id (a pair lands in one fold)
    assert len({c.question_id for c in cs.claims if c.meta["row"] == 0}) == 1
    assert cs.personas["DCF"].description == "Direct, Concise, Fact-first"


def test_response_order_does_not_follow_the_label():
    # A is chosen for some pairs and rejected for others (seeded hash of the pair id)
    cs = load_pt(make_cfg())
    chosen_is = {c.meta["pair"]: c.meta["chosen_is"] for c in cs.claims}
    seeds = {s: {c.meta["pair"]: c.meta["chosen_is"] for c in load_pt(
        OmegaConf.merge(make_cfg(), {"split_seed": s})).claims} for s in range(6)}
    assert len({v for d in seeds.values() for v in d.values()}) == 2
    assert load_pt(make_cfg()).claims == cs.claims and chosen_is


def test_retr_field_and_type_text():
    cs = load_pt(make_cfg(persona_field="retr"))
    assert {g.split("/", 4)[4] for g in cs.groups()} == {"DMS/chosen", "DEC/rejected",
                                                          "DCF/chosen", "DSN/rejected"}
    typed = load_pt(make_cfg())  # the default: the type as the paper's Table 5 shows it
    dcf = [c for c in typed.claims if c.persona_id == "DCF"]
    assert dcf and all("\nHuman Response Preference: Direct, Concise, Fact-first\nChoice 1: "
                       in c.question for c in dcf)


def test_bad_input(tmp_path):
    root = tmp_path / "pt"
    shutil.copytree(FIXTURE / "jsonl", root / "jsonl")
    f = root / "jsonl/BeaverTails/test.jsonl"
    f.write_text(f.read_text() + "{not json\n")
    with pytest.raises(DataFormatError, match=r"test\.jsonl: line 6: expected a JSON object"):
        load_pt(make_cfg(root))
    cfg = make_cfg(root)
    cfg.skip_bad_rows = True
    assert len(load_pt(cfg).claims) == 12
    lines = f.read_text().splitlines()[:5]
    f.write_text("\n".join(json.dumps({k: v for k, v in json.loads(l).items() if k != "rejected"})
                           for l in lines) + "\n")
    with pytest.raises(DataFormatError, match=r"missing column\(s\) \['rejected'\]"):
        load_pt(make_cfg(root))


def test_missing_inputs_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"(?s)no Mnemonic/test.*options\.configs"):
        load_pt(make_cfg(configs=["Mnemonic"]))
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*huggingface-cli download"):
        load_pt(make_cfg(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"(?s)downloads are off.*PLURAL_ICM_PT"):
        load_pt(make_cfg(None))
    with pytest.raises(ValueError, match="persona_field"):
        load_pt(make_cfg(persona_field="silver"))


def test_registry_folds_keep_pairs_whole():
    cs = load_claimset(make_cfg())
    assert set(cs.folds) == {c.question_id for c in cs.claims}
    assert len(set(cs.folds.values())) > 1
    for fold in range(max(cs.folds.values()) + 1):
        train, test = cs.split(fold)
        assert not {c.group_id for c in train} & {c.group_id for c in test}
    cfg = make_cfg()
    cfg.personas = ["DSN"]
    assert {c.persona_id for c in load_claimset(cfg).claims} == {"DSN"}


@pytest.fixture
def shared_pt():
    path = SHARED / "persona_tailoring"
    if not path.exists():
        pytest.skip(f"research copy absent: {path}")
    return path


@pytest.mark.data
def test_real_copy(shared_pt):
    cfg = make_cfg(shared_pt, configs=["BeaverTails", "Anthropic HHH", "Mnemonic"])
    cs = load_claimset(cfg)
    assert set(cs.personas) == {"DCF", "DEC", "DMS", "DSN"}
    assert {c.persona_id for c in cs.claims} == {"DCF", "DEC", "DMS", "DSN"}
    assert all(c.meta["config"] != "Mnemonic" for c in cs.claims)  # Mnemonic/test is empty
    for group in cs.groups().values():
        assert len(group) == 2 and sum(c.gold for c in group) == 1
    stats = dataset_stats(cs)
    assert stats[stats.persona == "TOTAL"]["true_fraction"].iloc[0] == pytest.approx(0.5)
    assert "DCF" in format_stats(cs)
    jsonl = load_pt(make_cfg(shared_pt, configs=["BeaverTails"], format="jsonl"))
    arrow = load_pt(make_cfg(shared_pt, configs=["BeaverTails"], format="arrow"))
    assert jsonl.claims == arrow.claims


def _one_row(tmp_path, **row):
    base = {"prompt": "P?", "chosen": "Short.", "rejected": "Also short.",
            "chosen_persona_gold": "The user prefers direct answers.",
            "rejected_persona_gold": "The user prefers in-depth, nuanced answers.",
            "chosen_persona_retr": "", "rejected_persona_retr": ""}
    f = tmp_path / "jsonl" / "BeaverTails" / "test.jsonl"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({**base, **row}) + "\n")
    return tmp_path


def test_same_type_on_both_sides_is_dropped_and_counted(tmp_path):
    root = _one_row(tmp_path, rejected_persona_gold="The user prefers brief, concise answers.")
    for text in ("type", "instance"):
        with pytest.raises(ValueError, match=r"produced no claims.*1 pairs with both personas "
                                             r"in one type dropped"):
            load_claimset(make_cfg(root, persona_text=text))


def test_equal_responses_are_skipped_and_counted(tmp_path):
    root = _one_row(tmp_path, rejected=" Short. ")
    with pytest.raises(ValueError, match=r"produced no claims.*1 with equal responses skipped"):
        load_claimset(make_cfg(root))


def test_question_without_human_prefix_and_splits_list(tmp_path):
    root = _one_row(tmp_path, prompt="Human: How do colours sell?")
    (root / "jsonl/BeaverTails/sft_train.jsonl").write_text(
        (root / "jsonl/BeaverTails/test.jsonl").read_text().replace("colours", "shapes"))
    cs = load_pt(make_cfg(root, splits=["sft_train", "test"]))
    questions = {c.question.split("\n")[0] for c in cs.claims}
    assert questions == {"How do colours sell?", "How do shapes sell?"}
    assert {c.meta["split"] for c in cs.claims} == {"sft_train", "test"}
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['train'\]"):
        load_pt(make_cfg(root, splits=["train"]))


def test_default_splits_is_sft_train():
    from plural_icm.data.pt import DEFAULT_SPLITS

    cfg = make_cfg()
    del cfg.options["splits"]
    with pytest.raises(FileNotFoundError, match="no BeaverTails/sft_train"):
        load_pt(cfg)  # the fixture holds only test: the default asked for sft_train
    assert DEFAULT_SPLITS == ["sft_train"]


@pytest.mark.data
def test_real_copy_clusters_and_table5_example(shared_pt):
    from plural_icm.data.stats import data_stats_report

    cfg = make_cfg(shared_pt, configs=["BeaverTails", "Anthropic HHH", "Mnemonic"],
                   splits=["sft_train"])
    cs = load_claimset(cfg)
    ex = [c for c in cs.claims if "influential colours are to consumers" in c.question]
    assert ex and all(c.question.startswith("I am trying to see how influential colours")
                      for c in ex)
    assert all("\nHuman Response Preference: " + cs.personas[c.persona_id].description + "\n"
               in c.question for c in ex)
    sizes = cluster_sizes(cfg).set_index("cluster")["total"]
    assert sizes.filter(like="same_type").iloc[0] > 0
    groups = {t: len({c.group_id for c in cs.claims if c.persona_id == t}) for t in cs.personas}
    for t, g in groups.items():
        assert sizes.filter(like=f"{t} (").iloc[0] == g  # one group per clustered sentence
    text = data_stats_report(cfg)
    assert "PT persona clusters" in text and "same_type (pairs dropped)" in text
    # the test split: pairs with both personas in one type are dropped and counted
    test = load_pt(make_cfg(shared_pt, configs=["BeaverTails", "Anthropic HHH", "Mnemonic"],
                            splits=["test"]))
    assert "pairs with both personas in one type dropped" in test.description


def test_old_split_key_is_an_error_naming_the_new_one():
    cfg = make_cfg()
    del cfg.options["splits"]
    cfg.options["split"] = "test"
    with pytest.raises(ValueError, match=r"options\.split is now dataset\.options\.splits"):
        load_pt(cfg)


def test_options_dataclasses_match_the_shipped_yaml():
    """Each loader's typed options (the registry validates dataset.options against them) know
    every key the shipped config sets."""
    import dataclasses

    from plural_icm.data.claims import ClaimsOptions
    from plural_icm.data.gqa import GQAOptions
    from plural_icm.data.pt import PTOptions

    root = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    for name, cls in (("pt", PTOptions), ("gqa", GQAOptions), ("gqa_claims", ClaimsOptions)):
        keys = set(OmegaConf.load(root / f"{name}.yaml").options)
        assert keys <= {f.name for f in dataclasses.fields(cls)}, (name, keys)
    assert PTOptions().splits == ["sft_train"] and PTOptions().persona_text == "type"
