"""ICM claim files (`loader: claims`, `dataset=gqa_claims`): parsing, degenerate groups, folds,
the authors' copy of the paper's GQA items (data tier), and a cell on it with the packaged model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from plural_icm.config.schema import DatasetConfig, register_configs
from plural_icm.data import claims
from plural_icm.data.records import ConsistencyRule
from plural_icm.data.registry import dataset_settings, load_claimset
from plural_icm.data.sources import DataFormatError
from plural_icm.data.stats import data_stats_report


def load_claims(cfg, data_dir=None):
    """The loader on the typed settings the registry's one boundary builds from ``cfg``."""
    return claims.load_claims(dataset_settings(cfg), data_dir)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "datasets" / "claims"
SHARED = Path(os.environ.get("PLURAL_ICM_SHARED_DATA") or ROOT.parent / "shared" / "data")
PAPER = SHARED / "gqa_paper_claims"
register_configs()


def make_cfg(path=FIXTURE, skip=True, **options):
    return OmegaConf.structured(DatasetConfig(name="claims", loader="claims", path=str(path),
                                              skip_bad_rows=skip, options=options))


def test_fixture_claims_groups_and_counted_skips():
    cs = load_claims(make_cfg())
    assert cs.rule is ConsistencyRule.EXACTLY_ONE
    assert set(cs.personas) == {"Atlantis", "Utopia"}
    assert len(cs.claims) == 2 * 8 * 2
    for group in cs.groups().values():
        assert len(group) == 2 and sum(c.gold for c in group) == 1
    c = next(c for c in cs.claims if c.persona_id == "Utopia" and c.question_id == "2"
             and c.gold)
    assert c.claim == "People from Utopia would answer this question as: 'Yes'"
    assert c.question == "Fixture question 2?" and c.meta["options"] == ["Yes", "No"]
    d = cs.description
    for part in ("duplicate_claims 1", "not_exactly_one_true 1", "single_claim_group 1",
                 "skipped 2 bad row(s) (malformed 2)"):
        assert part in d, (part, d)


def test_bad_row_is_an_error_naming_file_and_line_when_strict():
    with pytest.raises(DataFormatError, match=r"claims_atlantis\.jsonl: line \d+: label=2"):
        load_claims(make_cfg(skip=False))


def test_json_list_files_and_rule_none(tmp_path):
    rows = [{"question": "Q?", "choice": f"c{j}", "label": j == 0, "consistency_id": 1,
             "persona": "P"} for j in range(3)] + [
            {"question": "R?", "choice": "r", "label": True, "consistency_id": 2,
             "persona": "P"}]
    (tmp_path / "c.json").write_text(json.dumps(rows))
    cs = load_claims(make_cfg(tmp_path))
    assert len(cs.claims) == 3 and "single_claim_group 1" in cs.description
    free = load_claims(make_cfg(tmp_path, rule="none"))
    assert free.rule is ConsistencyRule.NONE and len(free.claims) == 4


def test_cv_folds_by_question_text_and_halves():
    cs = load_claimset(make_cfg())
    by_text = {}
    for c in cs.claims:
        by_text.setdefault(c.question, set()).add(cs.folds[c.question_id])
    assert all(len(f) == 1 for f in by_text.values()) and set(cs.folds.values()) == {0, 1, 2, 3}
    halves = load_claimset(make_cfg(folds="halves"))
    for c in halves.claims:
        half = "test" if halves.folds[c.question_id] == 0 else "train"
        assert c.meta["file"].startswith(half + "/")
    train, test = halves.split(0, "Atlantis")
    assert {c.question for c in test} == {f"Fixture question {q}?" for q in range(4, 8)}
    assert {c.question for c in train} == {f"Fixture question {q}?" for q in range(4)}


def _require_paper_copy():
    if not PAPER.is_dir():
        pytest.skip(f"no research copy at {PAPER}")


@pytest.mark.data
def test_paper_gqa_claims_counts_by_default_path(tmp_path):
    """`dataset=gqa_claims` reads ../shared/data/gqa_paper_claims from the repository root."""
    _require_paper_copy()
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "gqa_paper_claims").symlink_to(PAPER)
    if os.environ.get("PLURAL_ICM_GQA_CLAIMS"):
        pytest.skip("PLURAL_ICM_GQA_CLAIMS is set: the default path is not used")
    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=["dataset=gqa_claims", "stage=data_stats",
                                           f"paths.root_dir={root}"])
    assert Path(cfg.dataset.path) == root / ".." / "shared" / "data" / "gqa_paper_claims"
    cs = load_claimset(cfg.dataset)
    assert len(cs.personas) == 13 and len(cs.claims) == 1336
    assert len({c.question for c in cs.claims}) == 56
    per_country = Counter(c.persona_id for c in cs.claims)
    assert per_country["Britain"] == 112 and per_country["Brazil"] == 64
    assert per_country["Indonesia"] == 92 and per_country["Nigeria"] == 60
    text = data_stats_report(cfg.dataset)
    assert "1336 claims" in text and "56 distinct question texts" in text
    halves = load_claimset(OmegaConf.merge(cfg.dataset, {"options": {"folds": "halves"}}))
    train, test = halves.split(0, "Britain")
    assert len(train) == len(test) == 56


@pytest.mark.data
@pytest.mark.slow
def test_cell_on_paper_gqa_claims_with_packaged_model(tmp_path):
    _require_paper_copy()
    env = dict(os.environ, PLURAL_ICM_OUTPUT=str(tmp_path / "out"), HYDRA_FULL_ERROR="1")
    args = ["dataset=gqa_claims", f"dataset.path={PAPER}", "dataset.personas=[Britain]",
            "dataset.max_search_claims=8", "inference.n_examples=8", "logger=none",
            "icm.max_iters=4", "icm.patience=2", "icm.num_seed=2"]
    r = subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    cell = (tmp_path / "out" / "results" / "main" / "smollm2" / "gqa_claims" / "icm" / "n8" /
            "fold0" / "seed0")
    assert (cell / "COMPLETE.json").is_file(), sorted(p.name for p in cell.parent.glob("*"))
    metrics = json.loads((cell / "metrics.json").read_text())
    assert set(metrics["per_persona"]) == {"Britain"}
    assert metrics["overall"]["n_questions"] == 14  # Britain's fold 0: 14 of its 56 questions
    print(r.stdout[-2500:])
