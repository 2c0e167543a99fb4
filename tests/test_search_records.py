"""The typed records of a search directory: what the store writes is what every reader reads,
and a file of the wrong shape is refused with an error naming it (plural_icm/search/records.py)."""

from __future__ import annotations

import json
import re

import pytest

from plural_icm.layout import RecordError
from plural_icm.search.records import (LABELS, SEARCH_SUMMARY, SPEC, LabelRow, SearchRecordError,
                                       SearchSpec, SearchSummary, read_checkpoint, read_labels,
                                       write_labels)


def _summary(**kw) -> SearchSummary:
    return SearchSummary(**({"U": 3.5, "P": -1.25, "I": 0, "iterations": 8, "accepted": 3, "seed": 1000,
                             "wall_time_s": 0.5, "label_accuracy": 0.75, "n_claims": 12,
                             "n_predicted_unlabelled": 0, "persona": "p", "fold": 0, "model": "tiny",
                             "dataset": "demo", "hash": "abc", "search_unit": "training_folds",
                             "part": None, "seed_labels": "random"} | kw))


def test_summary_round_trip_keeps_the_file_shape(tmp_path):
    s = _summary()
    s.write(tmp_path)
    on_disk = json.loads((tmp_path / SEARCH_SUMMARY).read_text())
    # optional keys absent when unset (a search that reached every claim has no "searched")
    assert "searched" not in on_disk and "warning" not in on_disk and "parts" not in on_disk
    assert list(on_disk)[:3] == ["U", "P", "I"] and on_disk["part"] is None
    back = SearchSummary.read(tmp_path)
    assert back == s and back["U"] == 3.5 and back.get("warning") is None


@pytest.mark.parametrize("change, error", [
    ({"U": float("nan")}, "U = nan is not a finite number"),
    ({"I": "3"}, "I = '3' is not a int"),
    ({"extra": 1}, "unexpected keys ['extra']"),
    ({"U": None}, "U and I must be numbers"),
])
def test_a_damaged_summary_is_refused_naming_the_file(tmp_path, change, error):
    d = json.loads(json.dumps(_summary().as_dict()))
    d.update(change)
    (tmp_path / SEARCH_SUMMARY).write_text(json.dumps(d))
    with pytest.raises(SearchRecordError, match=rf"{SEARCH_SUMMARY}: .*{re.escape(error)}"):
        SearchSummary.read(tmp_path)
    assert issubclass(SearchRecordError, RecordError) and issubclass(SearchRecordError, ValueError)


def test_labels_round_trip_and_a_bad_row_names_its_line(tmp_path):
    rows = [LabelRow("a", True, 0.9, True), LabelRow("b", False, 0.6, None)]
    write_labels(tmp_path, rows)
    assert read_labels(tmp_path) == rows
    (tmp_path / LABELS).write_text('{"item_id": "a", "label": true, "confidence": 0.9, "gold": true}\n'
                                   '{"item_id": "b", "label": "yes", "confidence": 0.6, "gold": null}\n')
    with pytest.raises(SearchRecordError, match=rf"{LABELS}:2: label = 'yes'"):
        read_labels(tmp_path)


def test_spec_round_trip(tmp_path):
    spec = SearchSpec(model={"backend": "hf"}, claims=[["a", "g", "q?", "c"]], rule="exactly_one",
                      params={"alpha": 50.0}, seed=0, template="t", labels=[" True", " False"],
                      prompt_encoding="segments", fixed={}, search_unit="training_folds", part=None)
    spec.write(tmp_path)
    assert SearchSpec.read(tmp_path) == spec
    (tmp_path / SPEC).write_text(json.dumps(spec.as_dict() | {"seed": "0"}))
    with pytest.raises(SearchRecordError, match="seed = '0'"):
        SearchSpec.read(tmp_path)


def test_checkpoint_reader(tmp_path):
    ck = tmp_path / "checkpoint.json"
    assert read_checkpoint(ck) is None  # none yet
    ck.write_text('{"rng": ')
    with pytest.raises(SearchRecordError, match="not readable JSON"):
        read_checkpoint(ck)
    ck.write_text(json.dumps({"labels": {}, "iteration": 3}))
    with pytest.raises(SearchRecordError, match="key 'rng' is missing"):
        read_checkpoint(ck)
