"""W&B run per job: offline files hold config/summary/trajectory; a run starts on first use;
one offline directory per run id; disabled writes nothing; failures are recorded and re-raised;
W&B errors never fail the experiment. (Cells, searches and artifacts end to end:
test_tracking_jobs.py.)"""

from __future__ import annotations

import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from plural_icm.tracking import wandb_run
from plural_icm.tracking.wandb_run import (job_run, deterministic_run_id, group_name,
                                           scrub_secrets)
from settings_support import typed_settings
from wandb_offline import find_offline_runs, read_offline_run, search_rows

pytest.importorskip("wandb")


@pytest.fixture(autouse=True)
def _clean_state(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_run.reset_process_state()
    yield
    wandb_run.reset_process_state()


def make_cfg(tmp_path, **logger):
    base = {"name": "wandb", "mode": "offline", "project": "plural_icm_test", "entity": None,
            "group": None, "dir": str(tmp_path / "wb")}
    base.update(logger)
    return OmegaConf.create({
        "model": {"name": "smollm2", "api_key_env": "OPENAI_API_KEY"},
        "dataset": {"name": "demo", "n_folds": "${fold_count}"},
        "fold_count": 2,
        "inference": {"max_new_tokens": 200, "n_examples": None},
        "condition": {"name": "icm"},
        "fold": 1, "seed": 0, "run_tag": "main",
        "auth": {"hf_token": "abc", "db_password": "x", "ok": 1},
        "paths": {"output_dir": str(tmp_path / "out")},
        "logger": base,
    })


TAGS = {"model": "smollm2", "dataset": "demo", "condition": "icm", "fold": 1}


def test_scrub_secrets_nested():
    d = {"api_key": 1, "a": {"Token": 2, "b": [{"password_x": 3, "c": 4}]}, "keep": 5}
    assert scrub_secrets(d) == {"a": {"b": [{"c": 4}]}, "keep": 5}


def test_deterministic_id_stable_and_distinct():
    assert deterministic_run_id("a", {"x": 1}) == deterministic_run_id("a", {"x": 1})
    assert deterministic_run_id("a", 1) != deterministic_run_id("a", 2)


def test_offline_run_records_config_summary_trajectory(tmp_path):
    cfg = make_cfg(tmp_path)
    with job_run(cfg, job_type="cell", name="smollm2/demo/icm/fold1", tags=TAGS,
                  hydra_choices={"model": "smollm2", "experiment": None}) as wb:
        assert wb.enabled
        for i in range(1, 6):
            wb.log_search_row("Brazil", {"iteration": i, "U": float(i), "accepted": i % 2 == 0})
        wb.log_trajectory("New York/US", [{"iteration": i, "U": -float(i)} for i in range(3)])
        wb.log_metrics({"overall": {"accuracy": 0.75, "ece": None},
                        "per_persona": {"Brazil": {"accuracy": 0.5}}})
        wb.log_table("predictions", pd.DataFrame({"item_id": ["a", "b"], "p_true": [0.1, 0.9]}))
        wb.log_config({"extra": {"note": "x", "my_token": "hidden"}})
        run_id = wb.run_id
    runs = find_offline_runs(tmp_path / "wb")
    assert len(runs) == 1
    rec = read_offline_run(runs[0])
    assert rec["exit_code"] == 0
    assert rec["run"]["id"] == run_id
    assert rec["run"]["job_type"] == "cell"
    assert rec["run"]["name"] == "smollm2/demo/icm/fold1"
    assert rec["run"]["group"] == "grid-main"  # no logger.group, no experiment: grid-<run_tag>
    assert set(rec["run"]["tags"]) >= {"model:smollm2", "dataset:demo", "condition:icm", "fold:1"}
    cfg_logged = rec["config"]
    assert cfg_logged["dataset"]["n_folds"] == 2           # resolved
    assert cfg_logged["hydra_choices"]["model"] == "smollm2"
    assert cfg_logged["cell"]["condition"] == "icm"
    # the NAME of the variable holding the key is no secret (plural_icm.config.secrets)
    assert cfg_logged["model"]["api_key_env"] == "OPENAI_API_KEY"
    assert cfg_logged["auth"] == {"ok": 1}
    assert cfg_logged["extra"] == {"note": "x"}
    s = rec["summary"]
    assert s["overall/accuracy"] == 0.75
    assert s["per_persona/Brazil/accuracy"] == 0.5
    assert s["status"] == "finished"
    # trajectories: one step metric for every search of the run
    globs = {m["glob_name"]: m["step_metric"] for m in rec["metrics"] if m["glob_name"]}
    assert globs == {"search/*": "search/iteration"}
    assert search_rows(rec, "Brazil") == [(i, float(i)) for i in range(1, 6)]
    assert search_rows(rec, "New_York_US") == [(0, 0.0), (1, -1.0), (2, -2.0)]
    tables = [h for h in rec["history"] if "predictions/nrows" in h]
    assert tables and tables[0]["predictions/nrows"] == 2


def test_max_new_tokens_is_in_the_logged_config_secrets_are_not(tmp_path):
    cfg = make_cfg(tmp_path)
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
        wb.log_metrics({"a": 1})
    logged = read_offline_run(find_offline_runs(tmp_path / "wb")[0])["config"]
    assert logged["inference"]["max_new_tokens"] == 200
    text = repr(logged)
    assert "hf_token" not in text and "abc" not in text and "db_password" not in text
    # the *name* of the variable that holds the key is no secret (is_secret_key: keys ending in _env)
    assert logged["model"]["api_key_env"] == "OPENAI_API_KEY"


def test_group_is_the_sweep():
    cfg = OmegaConf.create({"run_tag": "v2", "logger": {"group": None}})
    assert group_name(cfg, {"experiment": "collaborative"}) == "collaborative-v2"
    assert group_name(cfg, {}) == "grid-v2"
    assert group_name(OmegaConf.create({"run_tag": "v2", "logger": {"group": "mine"}}), {}) == "mine"


def test_a_run_that_logs_nothing_is_never_started(tmp_path):
    """A skipped cell logs nothing: no W&B run, no offline directory."""
    cfg = make_cfg(tmp_path)
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
        assert not wb.started
    assert not wb.started
    assert find_offline_runs(tmp_path / "wb") == []


def test_a_new_attempt_supersedes_earlier_offline_attempts_of_its_id(tmp_path):
    """Offline W&B ignores resume: every attempt writes offline-run-<time>-<id>. The newest stays,
    earlier ones move to wandb/superseded/, so `wandb sync wandb/offline-run-*` sees one per id."""
    cfg = make_cfg(tmp_path)
    for attempt in (1, 2):
        with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
            wb.log_metrics({"attempt": attempt})
            assert wb.superseded_earlier == (attempt == 2)
        import time
        time.sleep(1.1)  # offline directory names carry the start time in seconds
    runs = find_offline_runs(tmp_path / "wb")
    assert len(runs) == 1
    assert read_offline_run(runs[0])["summary"]["attempt"] == 2
    old = list((tmp_path / "wb" / "wandb" / "superseded").glob("offline-run-*"))
    assert len(old) == 1 and old[0].name.endswith(wb.run_id)
    assert read_offline_run(old[0])["summary"]["attempt"] == 1


def test_same_cell_same_id_resume(tmp_path):
    cfg = make_cfg(tmp_path, group="sweep1")
    ids = []
    for _ in range(2):
        with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
            wb.log_metrics({"x": 1})
            ids.append(wb.run_id)
    assert ids[0] == ids[1]
    rec = read_offline_run(find_offline_runs(tmp_path / "wb")[-1])
    assert rec["run"]["group"] == "sweep1"


def test_failure_marked_and_reraised(tmp_path):
    cfg = make_cfg(tmp_path)
    with pytest.raises(ZeroDivisionError):
        with job_run(cfg, job_type="cell", name="bad", tags=TAGS, hydra_choices={}):
            1 / 0
    rec = read_offline_run(find_offline_runs(tmp_path / "wb")[0])
    assert rec["exit_code"] == 1
    assert rec["summary"]["status"] == "failed"
    assert rec["summary"]["error_type"] == "ZeroDivisionError"
    assert "division by zero" in rec["summary"]["error"]


@pytest.mark.parametrize("logger", [{"name": "none"}, {"mode": "disabled"}])
def test_disabled_writes_nothing(tmp_path, logger):
    cfg = make_cfg(tmp_path, **logger)
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
        assert not wb.enabled
        wb.log_metrics({"a": 1})
        wb.log_trajectory("p", [{"iteration": 0, "U": 1}])
        wb.log_table("t", pd.DataFrame({"a": [1]}))
    assert not (tmp_path / "wb").exists()


def test_disabled_failure_still_reraises(tmp_path):
    cfg = make_cfg(tmp_path, name="none")
    with pytest.raises(KeyError):
        with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}):
            raise KeyError("x")


def test_wandb_init_error_never_fails_experiment(tmp_path, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise wandb.errors.CommError("service timed out")

    monkeypatch.setattr(wandb, "init", boom)
    cfg = make_cfg(tmp_path)
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
        wb.log_metrics({"a": 1})  # the run starts here, and fails to
        assert not wb.enabled
        result = 42
    assert result == 42
    # later cells of the same process skip W&B without another timeout
    with job_run(cfg, job_type="cell", name="d", tags=TAGS, hydra_choices={}) as wb2:
        assert not wb2.enabled  # without trying again


def test_wandb_log_error_never_fails_experiment(tmp_path):
    cfg = make_cfg(tmp_path)
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}) as wb:
        assert wb.start()

        def broken(*a, **k):
            raise RuntimeError("socket closed")
        wb._run.log = broken
        wb.log_trajectory("p", [{"iteration": 0, "U": 1.0}])  # swallowed
        assert not wb.enabled
    rec = read_offline_run(find_offline_runs(tmp_path / "wb")[0])
    assert rec["exit_code"] == 0  # still finished


def test_disabled_mode_does_not_import_wandb(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    cfg = make_cfg(tmp_path, name="none")
    with job_run(cfg, job_type="cell", name="c", tags=TAGS, hydra_choices={}):
        pass
    assert "wandb" not in sys.modules


def test_report_run_logs_tables_figures_and_artifact(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from plural_icm.tracking.results import log_report

    rep = tmp_path / "out" / "report"
    rep.mkdir(parents=True)
    pd.DataFrame({"condition": ["icm", "gold"], "ours": [0.7, 0.8], "paper": [0.72, 0.81]}).to_csv(
        rep / "headline.csv", index=False)
    (rep / "empty.csv").write_text("")  # a table with nothing in it yet: skipped, not an error
    plt.plot([0, 1], [0, 1])
    plt.savefig(rep / "fig2_dataset_condition.png")
    plt.close()
    (rep / "report.md").write_text("# report\n")
    written = [rep / "headline.csv", rep / "empty.csv", rep / "fig2_dataset_condition.png",
               rep / "report.md"]
    wb = log_report(written, outputs=tmp_path / "out", run_tag="main")
    (rec,) = [read_offline_run(d) for d in find_offline_runs(tmp_path / "out")]
    assert rec["exit_code"] == 0 and wb.started
    assert (rec["run"]["job_type"], rec["run"]["group"], rec["run"]["name"]) == \
        ("report", "grid-main", "report/main")
    assert rec["summary"]["report/headline/nrows"] == 2
    assert "figures/fig2_dataset_condition/_type" in rec["summary"]
    (art,) = [a for a in rec["artifacts"] if a["type"] == "report"]
    assert art["name"] == "report-grid-main"
    assert art["files"] == ["empty.csv", "fig2_dataset_condition.png", "headline.csv", "report.md"]


# -- the metric keys the docs name ------------------------------------------------------------

def _doc_metric_keys() -> dict[str, str]:
    """Every W&B metric key README.md and docs/*.md name in backticks (``overall/...``,
    ``per_persona/...``, ``search/...``, ``searches/...``), as a regex -> the file naming it.
    ``{a,b}`` lists alternatives; ``<id>``, ``<persona>`` and ``*`` stand for one path part;
    a key ending in ``...`` is a prefix."""
    import itertools
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out: dict[str, str] = {}
    for f in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for key in re.findall(r"`((?:overall|per_persona|searches|search)/[^`\s]*)`",
                              f.read_text(encoding="utf-8")):
            parts = re.split(r"(\{[^}]*\})", key)
            choices = [p[1:-1].split(",") if p.startswith("{") else [p] for p in parts]
            for combo in itertools.product(*choices):
                k = "".join(combo)
                pattern = re.escape(k.removesuffix("...")).replace(r"\*", "*")
                pattern = re.sub(r"<[^>]+>|\*", "[^/]+", pattern)
                out["^" + pattern + ("" if k.endswith("...") else "$")] = f.name
    return out


def test_every_metric_key_the_docs_name_is_one_a_cell_writes(tiny_cfg):
    """A dashboard built from the README charts keys that exist: each key README.md and docs/
    name is among the keys a cell logs (its metrics.json flattened with ``/``), the per-iteration
    rows of its searches (``search/<label>/<key>``, step ``search/iteration``) or their final
    summary (``searches/<label>/<key>``)."""
    import re
    from pathlib import Path

    from plural_icm.pipeline.cell import cell_path, run_cell
    from plural_icm.search.records import SearchSummary, read_trajectory
    from plural_icm.tracking.searches import SEARCH_SUMMARY_KEYS
    from plural_icm.tracking.wandb_run import flatten

    cfg = tiny_cfg(["condition=icm"])
    metrics = run_cell(typed_settings(cfg))
    assert (cell_path(cfg) / "metrics.json").is_file()
    logged = set(flatten(metrics))
    searches = [p.parent for p in sorted(Path(cfg.paths.searches_dir).rglob("summary.json"))]
    assert searches, "the icm cell ran no search"
    for d in searches:
        label = SearchSummary.read(d).persona
        logged |= {f"search/{label}/{k}" for row in read_trajectory(d) for k in row
                   if k != "iteration"} | {"search/iteration"}
        logged |= {f"searches/{label}/{k}" for k in SEARCH_SUMMARY_KEYS + ("hash",)}
    named = _doc_metric_keys()
    assert any(p.startswith("^overall/") for p in named)  # the parser finds the README's keys
    missing = [f"{p} ({where})" for p, where in named.items()
               if not any(re.match(p, k) for k in logged)]
    assert not missing, f"keys the docs name that no cell writes: {missing}"
