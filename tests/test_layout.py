"""The one home of the disk layout and the records: paths, the fingerprint, record round trips."""

from __future__ import annotations

import json

import pytest

from plural_icm.config.schema import NON_RESULT_KEYS
from plural_icm.layout import (CompleteRecord, PredictionRow, cell_dir, cell_path, fingerprint,
                               parse_cell_dir, parse_search_dir, search_dir)


def test_fingerprint_ignores_exactly_the_non_result_keys(compose_config, tmp_path):
    base = fingerprint(compose_config([]))
    # resources, logging, paths and batching never make a finished cell "different settings"
    for override in ("model.batch_size=3", "model.mem_gb=99", "model.tensor_parallel_size=4",
                     "icm.checkpoint_every=7", "logger=none", "progress=false",
                     f"paths.cache_dir={tmp_path}/c", "collaborative.k_per_fold=3"):
        assert fingerprint(compose_config([override])) == base, override
    for override in ("icm.alpha=3", "inference.n_examples=5", "model.dtype=float16", "seed=1"):
        assert fingerprint(compose_config([override])) != base, override
    assert all(k.split(".")[0] in {"paths", "logger", "progress", "force", "stage", "collaborative",
                                   "model", "icm", "dataset"} for k in NON_RESULT_KEYS)


def test_cell_paths_parse_back(compose_config):
    cfg = compose_config(["condition=gold", "fold=2", "seed=3", "inference.n_examples=10"])
    p = cell_path(cfg)
    root = p.parents[6]
    assert parse_cell_dir(root, p) == {"run_tag": "main", "model": "smollm2", "dataset": "demo",
                                       "condition": "gold", "n": "10", "fold": 2, "seed": 3}
    assert parse_cell_dir(root, cell_dir(root, "main", "m", "d", "c", None, 0, 0))["n"] == "all"
    assert parse_cell_dir(root, root / "main" / "m" / "d" / "c" / "nall" / "foldx" / "seed0") is None
    s = search_dir(root, "m", "d", 1, "P", "abc")
    assert parse_search_dir(root, s) == {"model": "m", "dataset": "d", "fold": 1, "persona": "P",
                                         "hash": "abc"}


def test_records_round_trip_and_refuse_unknown_keys(tmp_path):
    row = PredictionRow(persona_id="P", item_id="i", question_id="q", group_id="g", option_key="0",
                        option_index=0, gold=True, distribution=None, logp_true=-0.1,
                        logp_false=-2.0, p_true=0.8, pred=True)
    assert PredictionRow.from_dict(json.loads(json.dumps(row.as_dict()))) == row
    (tmp_path / "COMPLETE.json").write_text(json.dumps({"fingerprint": "f", "finished": 1.0,
                                                        "wall_time_s": 2.0, "extra": 1}))
    with pytest.raises(ValueError, match=r"COMPLETE.json: unexpected keys \['extra'\]"):
        CompleteRecord.read(tmp_path)


def test_an_unset_condition_key_leaves_the_fingerprint_as_before(compose_config):
    """condition.passes (bootstrap's) is None elsewhere and left out: older cells keep their hash."""
    from omegaconf import OmegaConf

    cfg = compose_config(["condition=icm"])
    assert cfg.condition.passes is None
    older = OmegaConf.to_container(cfg, resolve=True)
    del older["condition"]["passes"]
    assert fingerprint(OmegaConf.create(older)) == fingerprint(cfg)
    assert fingerprint(compose_config(["condition=bootstrap", "condition.passes=2"])) != \
        fingerprint(compose_config(["condition=bootstrap"]))


def test_generation_rows_round_trip_and_refuse_other_shapes(tmp_path):
    """generations.jsonl: one writer (the cell, through GenerationRow) and one reader
    (GenerationRow.read_rows), the file name beside the record."""
    import json

    from plural_icm.layout import GENERATIONS, GenerationRow, RecordError
    from plural_icm.utils.io import atomic_write_jsonl

    rows = [GenerationRow("A", "q1", "Q?", "an answer", "Rating: 4", 4, 3),
            GenerationRow("B", "q2", "Q2?", "", "no idea", None, 0, perturbation=1)]
    atomic_write_jsonl(tmp_path / GENERATIONS, [r.as_dict() for r in rows])
    assert GenerationRow.FILE == GENERATIONS == "generations.jsonl"
    assert GenerationRow.read_rows(tmp_path) == rows
    first = json.loads((tmp_path / GENERATIONS).read_text().splitlines()[0])
    assert list(first) == ["persona_id", "question_id", "question", "answer", "judge_reply", "score",
                           "n_steering_examples", "perturbation"]
    (tmp_path / GENERATIONS).write_text(json.dumps(first | {"rating": 5}) + "\n")
    with pytest.raises(RecordError, match=r"generations.jsonl:1: unexpected keys \['rating'\]"):
        GenerationRow.read_rows(tmp_path)
    (tmp_path / GENERATIONS).write_text("{not json\n")
    with pytest.raises(RecordError, match="generations.jsonl:1: not readable JSON"):
        GenerationRow.read_rows(tmp_path)


def test_a_condition_s_ignored_keys_leave_its_fingerprint_alone(compose_config):
    """Zero-shot reads neither the ICM settings nor the search cap: changing them is the same
    cell; a few-shot condition's examples depend on both, so its fingerprint moves."""
    from plural_icm.conditions.registry import get_condition
    from plural_icm.config.settings import typed
    from plural_icm.pipeline.existing_results import cell_fingerprint

    assert get_condition("zero_shot").ignores == ("icm", "dataset.max_search_claims")
    assert get_condition("zero_shot_base").ignores == get_condition("zero_shot").ignores
    zs = cell_fingerprint(typed(compose_config(["condition=zero_shot"])))
    for override in ("icm.alpha=3", "dataset.max_search_claims=5", "icm=fork"):
        assert cell_fingerprint(typed(compose_config(["condition=zero_shot", override]))) == zs, override
    assert cell_fingerprint(typed(compose_config(["condition=zero_shot", "seed=1"]))) != zs
    gold = cell_fingerprint(typed(compose_config(["condition=gold"])))
    assert cell_fingerprint(typed(compose_config(["condition=gold", "dataset.max_search_claims=5"]))) != gold
    # a condition without ignores fingerprints exactly as the composed config does
    cfg = compose_config(["condition=icm"])
    assert cell_fingerprint(typed(cfg)) == fingerprint(cfg)
    assert fingerprint(cfg, ("icm",)) != fingerprint(cfg)
