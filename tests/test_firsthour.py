"""A new user's first hour (issue #29): the summary says what a score means (predicted-True rate,
majority baseline, degenerate predictions), Hydra offers no choice that fails, typos get a
suggestion, an error before any work leaves no W&B run, a sweep ends with an overview, the report
refuses an empty folder and renders its Markdown, the search's time left follows the phase, and
the prefix cache's budget follows the model, the machine and the searches."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from plural_icm.metrics.baseline import degenerate_message, prediction_balance

ROOT = Path(__file__).resolve().parents[1]


def preds(persona: str, golds: list[bool], p_true: list[float]) -> list[dict]:
    return [{"persona_id": persona, "gold": g, "p_true": p, "pred": p > 0.5}
            for g, p in zip(golds, p_true)]


# -- the summary ---------------------------------------------------------------------------------

def test_balance_names_the_constant_classifier():
    """All predictions False on one-True-per-question data: 0.5 accuracy is the majority
    baseline, and the note says the model does not separate the claims."""
    df = pd.DataFrame(preds("a", [True, False] * 4, [0.23, 0.29] * 4)
                      + preds("b", [True, False, False, False], [0.9, 0.1, 0.2, 0.7]))
    b = prediction_balance(df)
    assert b["a"]["predicted_true_rate"] == 0.0 and b["a"]["majority_baseline"] == 0.5
    assert b["a"]["degenerate"] and not b["b"]["degenerate"] and not b["ALL"]["degenerate"]
    assert b["b"]["predicted_true_rate"] == 0.5 and b["b"]["majority_baseline"] == 0.75
    msg = degenerate_message("persona a", b["a"])
    assert "all 8 predictions are False" in msg and "0.23-0.29" in msg and "0.500" in msg
    assert degenerate_message("persona b", b["b"]) is None


def test_summary_table_puts_rate_and_baseline_beside_the_score(tmp_path):
    from plural_icm.pipeline.summary import summary_notes, summary_table

    df = pd.DataFrame(preds("a", [True, False] * 3, [0.2] * 6))
    balance = prediction_balance(df)
    metrics = {"overall": {"claim_accuracy": 0.5, "claim_accuracy_se": 0.2, "n_claims": 6,
                           "icm_label_accuracy": 0.42},
               "per_persona": {"a": {"claim_accuracy": 0.5, "claim_accuracy_se": 0.2, "n_claims": 6,
                                     "icm_label_accuracy": 0.42, "icm_unreached_claims": 2}}}
    table = summary_table(metrics, balance)
    cols = list(table.columns)
    assert cols[:4] == ["claim_acc", "±se", "pred_True", "majority"]
    assert "icm_label_acc" in cols
    assert table.loc["ALL", "pred_True"] == "0.000" and table.loc["ALL", "majority"] == "0.500"
    assert table.loc["a", "n_claims"] == "6"  # a count prints as an integer
    notes = summary_notes(metrics, balance)
    assert any("all 6 predictions are False" in n for n in notes)
    assert any("never reached 2 of its claims" in n for n in notes)


# -- Hydra choices and typos ---------------------------------------------------------------------

def test_schemas_are_not_offered_as_choices():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from plural_icm.config.schema import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for group in ("model", "dataset", "condition", "icm", "inference", "logger"):
            options = loader.get_group_options(group)
            assert options and not [o for o in options if o.endswith("_schema")], (group, options)


@pytest.mark.parametrize("override, expected", [
    ("model=llama7b", "did you mean llama70b or llama8b?"),
    ("model=smollm2,gemma70m", "did you mean gemma270m?"),
    ("+experiment=colaborative", "did you mean collaborative or paper_collaborative?"),
    ("icm.alpah=1", "did you mean icm.alpha?"),
    ("icm.max_iter=3", "did you mean icm.max_iters?"),
])
def test_typos_get_a_suggestion(override, expected):
    from plural_icm.config.guard import command_line_error

    msg = command_line_error([override])
    assert msg is not None and expected in msg, msg


@pytest.mark.parametrize("override", ["model=gemma270m", "icm=paper", "fold=2", "icm.alpha=3",
                                      "dataset.options.x=1", "model.vllm.block_size=16",
                                      "hydra/launcher=local", "experiment=paper", "~logger"])
def test_valid_overrides_pass(override):
    from plural_icm.config.guard import command_line_error

    assert command_line_error([override]) is None


# -- W&B: an error before any work leaves no run -------------------------------------------------

def test_user_error_before_any_work_leaves_no_wandb_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    from plural_icm.errors import ConfigError
    from plural_icm.tracking import wandb_run

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    wandb_run.reset_process_state()
    cfg = OmegaConf.create({"model": {"name": "m"}, "dataset": {"name": "demo"}, "fold": 7,
                            "seed": 0, "run_tag": "main", "paths": {"output_dir": str(tmp_path)},
                            "logger": {"name": "wandb", "mode": "offline", "dir": str(tmp_path / "wb")}})
    with pytest.raises(ConfigError):
        with wandb_run.job_run(cfg, job_type="cell", name="c", tags={}, hydra_choices={}):
            raise ConfigError("fold=7 is out of range")
    assert not list((tmp_path / "wb").rglob("offline-run-*"))
    wandb_run.reset_process_state()


# -- the sweep overview --------------------------------------------------------------------------

def write_cell(d: Path, finished: float, p_true: list[float]) -> Path:
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"overall": {"claim_accuracy": 0.5,
                                                            "claim_accuracy_se": 0.1}}))
    (d / "predictions.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in preds("a", [True, False] * (len(p_true) // 2), p_true)))
    (d / "COMPLETE.json").write_text(json.dumps({"finished": finished}))
    return d


def test_overview_counts_outcomes_and_tables_scores(tmp_path):
    from plural_icm.pipeline.overview import SweepJob, format_overview, skipped_before

    launched = time.time()
    old = write_cell(tmp_path / "old", launched - 100, [0.2, 0.3, 0.2, 0.3])
    new = write_cell(tmp_path / "new", launched + 5, [0.9, 0.1, 0.8, 0.6])
    assert skipped_before(old, launched) and not skipped_before(new, launched)
    text = format_overview([SweepJob("m/demo/icm/nall/fold0/seed0", "skipped", cell_dir=old),
                            SweepJob("m/demo/gold/nall/fold0/seed0", "done", cell_dir=new),
                            SweepJob("m/demo/icm/nall/fold7/seed0", "failed",
                                     "ConfigError: fold=7 is out of range"),
                            # refused to overwrite the results of other settings in its folder
                            SweepJob("m/demo/icm/nall/fold0/seed0", "failed",
                                     "ResultsConflictError: holds results of different settings",
                                     cell_dir=old)])
    head, header, *rows = text.splitlines()
    assert head == "sweep overview: 1 done, 1 skipped, 2 failed"
    assert "claim_acc" in header and "pred_True" in header and "majority" in header
    assert "fold=7 is out of range" in rows[0] and rows[0].lstrip().startswith("failed")
    assert "degenerate" in text  # the old cell predicts False everywhere
    assert "0.750" in text       # the new one's predicted-True rate
    conflict = next(r for r in rows if "ResultsConflictError" in r)
    assert "0.500" not in conflict and "0.250" not in conflict  # not the other settings' scores


# -- the report ----------------------------------------------------------------------------------

def test_report_refuses_a_folder_without_cells(tmp_path, capsys):
    from analysis.report import main

    (tmp_path / "something").mkdir()
    assert main([str(tmp_path)]) == 2
    assert "holds no result cells" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_report_html_is_rendered_markdown():
    from analysis.report import _html

    page = _html("# T\n\n**bold** and `code` and _it_\n\n| a | n |\n|---|---|\n| x | 1 |\n")
    assert "<strong>bold</strong>" in page and "<code>code</code>" in page and "<em>it</em>" in page
    assert "<table>" in page and "<td>x</td>" in page and "**" not in page


def test_counts_print_as_integers():
    from analysis.tables import to_markdown

    md = to_markdown(pd.DataFrame({"n_claims": [12.0], "iterations": [25.0], "n_examples": [37.5],
                                   "score": [0.5]}))
    row = md.splitlines()[2]
    assert "| 12 | 25 | 37.5 | 0.50 |" == row


# -- progress: the time left follows the phase ---------------------------------------------------

def test_search_eta_weights_iterations_by_their_cost(monkeypatch):
    """Iterations that cost n (labelled claims): 10 iterations took 10 s while the labelled
    count grew 2 -> 12; the 30 left at 12 labelled cost ~3.3x more each than the mean so far, so
    the time left is far above 30 s (the iteration-rate estimate) and near 30 x 12 / (sum 3..12)
    x 10 s."""
    from plural_icm.search import progress as P

    now = [0.0]
    monkeypatch.setattr(P.time, "perf_counter", lambda: now[0])
    claims = list(range(12))
    task = SimpleNamespace(hash=lambda: "h", claims=claims, persona="p",
                           params=SimpleNamespace(max_iters=40, patience=None, cost_mode="fast"),
                           directory=lambda d: Path(d) / "none")
    prog = P.SearchProgress([task], "/nonexistent", enabled=False)
    for i in range(11):  # first row starts the clock, then 10 iterations of 1 s
        now[0] = float(i)
        prog(task, {"U": 0.0, "n_labelled": 2 + i, "accepted": True})
    assert prog.done == 11 and prog.total == 40
    work_done = sum(range(3, 13))  # iterations 2..11 (the first only starts the clock)
    expected = 29 * 12 / work_done * 10
    assert prog.eta_s == pytest.approx(expected, rel=0.01)
    assert prog.eta_s > 29 * 1.0 * 1.5  # well above the plain iterations-per-second estimate


def test_work_left_grows_to_the_claim_count():
    from plural_icm.search.progress import work_left

    assert work_left(10, 12, 1.0, 4) == 11 + 12 + 12 + 12
    assert work_left(10, 12, 1.0, 2, engine="reference") == 121 + 144


# -- the prefix cache's budget -------------------------------------------------------------------

def fake_backend(cap_gb=4.0, layers=30, kv_heads=3, head_dim=64):
    cfg = SimpleNamespace(num_attention_heads=9, num_key_value_heads=kv_heads, head_dim=head_dim,
                          num_hidden_layers=layers, hidden_size=576)
    cfg.get_text_config = lambda decoder=True: cfg
    import torch

    return SimpleNamespace(model=SimpleNamespace(config=cfg), torch_dtype=torch.float32,
                           kv_cache=SimpleNamespace(max_bytes=int(cap_gb * 2**30)),
                           prefix_cache_gb=cap_gb, prefix_cache=True, device="cpu", tokenizer=None)


def search_task(n, max_iters=3000):
    claim = SimpleNamespace(question="Q" * 40, claim="C" * 80)
    return SimpleNamespace(claims=[claim] * n, template="Question: {question}\nClaim: {claim}",
                           params=SimpleNamespace(cost_mode="fast", max_iters=max_iters))


def test_prefix_cache_budget_follows_the_searches(monkeypatch):
    """The budget is what the searches at once reuse: EVALUATIONS_KEPT full evaluations of each
    under its context order (not every position they could ever compute, issue #29: 20.8 GiB for
    the demo), never more than they compute."""
    from plural_icm.pipeline import memory
    from plural_icm.search.cost import full_evaluation_tokens, search_tokens

    monkeypatch.setattr(memory, "available_bytes", lambda device: (64 * 2**30, "available RAM"))
    per_pos = 2 * 30 * 3 * 64 * 4
    be = fake_backend()
    assert memory.kv_bytes_per_position(be) == per_pos  # SmolLM2-135M in fp32: 45 KiB
    L = memory.tokens_per_claim([search_task(12)])
    k = memory.EVALUATIONS_KEPT
    # the demo's shape: three 12-claim searches of 40 iterations, run at once
    line = memory.size_prefix_cache(be, [search_task(12, max_iters=40)] * 3)
    one = full_evaluation_tokens(12, L, "fast")
    assert be.kv_cache.max_bytes == pytest.approx(3 * k * one * per_pos, abs=3 * per_pos)
    assert be.kv_cache.max_bytes < 3 * search_tokens(12, L, 40) * per_pos / 10  # far below the old bound
    assert line.startswith(f"prefix cache budget {be.kv_cache.max_bytes / 2**30:.2f} GiB = what 3 "
                           f"search(es) at once reuse ({k:g} full evaluations of each")
    # twice the searches at once: twice the budget
    two = fake_backend()
    memory.size_prefix_cache(two, [search_task(12, max_iters=40)] * 6)
    assert two.kv_cache.max_bytes == pytest.approx(2 * be.kv_cache.max_bytes, abs=6 * per_pos)
    # a search of 1 iteration computes less than k evaluations: it is held whole, no more
    short = fake_backend()
    memory.size_prefix_cache(short, [search_task(12, max_iters=1)])
    assert short.kv_cache.max_bytes == pytest.approx(search_tokens(12, L, 1) * per_pos, abs=per_pos)
    big = fake_backend()
    memory.size_prefix_cache(big, [search_task(340)] * 13)
    assert big.kv_cache.max_bytes == 4 * 2**30  # the cap binds for the paper's sizes


def test_first_eviction_is_information_when_sized_to_the_searches(monkeypatch, caplog):
    """Sized to what the searches reuse, the LRU evicts dead segments by design: its first eviction
    is logged as information, not as a warning to raise model.prefix_cache_gb (which would not
    change the budget); with the cap binding it stays a warning."""
    import logging

    import torch

    from plural_icm.backends.prefix_cache import SegmentKVCache
    from plural_icm.pipeline import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (64 * 2**30, "available RAM"))
    for n_claims, level in ((12, logging.INFO), (340, logging.WARNING)):
        be = fake_backend()
        be.kv_cache = SegmentKVCache(max_bytes=None)
        memory.size_prefix_cache(be, [search_task(n_claims)] * 3)
        assert (be.kv_cache.sized_by is not None) == (n_claims == 12)
        be.kv_cache.max_bytes = 2 * 256  # room for two of the four entries below (256 bytes each)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="plural_icm.backends.prefix_cache"):
            for i in range(4):
                be.kv_cache.put(bytes([i]), 4, [(torch.zeros(1, 1, 4, 8), torch.zeros(1, 1, 4, 8))])
        (rec,) = [r for r in caplog.records if "prefix cache" in r.getMessage()]
        assert rec.levelno == level and be.kv_cache.evictions == 2


def test_prefix_cache_is_emptied_after_the_searches_with_a_line(tiny_model_dir, tmp_path):
    from plural_icm.backends.hf import HFBackend
    from plural_icm.pipeline import memory

    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=2)
    ids = be.tokenizer.encode("the a of to in and is it", add_special_tokens=False)
    be.label_logprobs([(tuple(be.bos()), tuple(ids)), (tuple(be.bos()), tuple(ids[:3]))], ["the", "a"])
    held = be.kv_cache.bytes
    assert held > 0
    line = memory.release_prefix_cache(be)
    assert be.kv_cache.bytes == 0 and len(be.kv_cache) == 0
    assert line.startswith(f"prefix cache after the searches: peak {held / 2**30:.2f} GiB of 4.00 GiB")
    assert (f"0 segments evicted, 0 positions recomputed after eviction of "
            f"{be.stats.prompt_tokens_computed:,} computed") in line


def test_prefix_cache_budget_follows_the_machine(monkeypatch):
    from plural_icm.pipeline import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: (2 * 2**30, "available RAM"))
    be = fake_backend()
    line = memory.size_prefix_cache(be, [search_task(340)] * 13)
    assert be.kv_cache.max_bytes == int(0.25 * 2 * 2**30)
    assert "GiB = 25% of 2.0 GiB available RAM" in line


def test_unbounded_prefix_cache_is_left_alone():
    from plural_icm.pipeline import memory

    be = fake_backend()
    be.prefix_cache_gb = None
    be.kv_cache.max_bytes = None
    assert memory.size_prefix_cache(be, [search_task(12)]) is None and be.kv_cache.max_bytes is None


# -- the prompt a prediction was scored with -----------------------------------------------------

def test_show_prompt_is_the_scored_prompt(tmp_path, tiny_model_dir, compose_config):
    """The rebuilt text encodes to exactly the tokens the cell's PromptBuilder scores."""
    from omegaconf import OmegaConf

    from plural_icm.backends.base import flatten
    from plural_icm.backends.canonical import encode_text
    from plural_icm.backends.loading import load_tokenizer, resolve_model
    from plural_icm.data.registry import load_claimset
    from plural_icm.inference.predict import PromptBuilder
    from plural_icm.inference.show_prompt import _TokenizerOnly, cell_prompt

    cfg = compose_config([f"model.base={tiny_model_dir}", f"model.instruct={tiny_model_dir}",
                          "model.name=tiny", "condition=gold", "logger=none"])
    cell = tmp_path / "cell"
    cell.mkdir()
    (cell / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    claimset = load_claimset(cfg.dataset, None)
    train, test = claimset.split(0, "progressive")
    examples = [(c, bool(c.gold)) for c in train[:4]]
    (cell / "examples.jsonl").write_text("".join(json.dumps(
        {"persona_id": "progressive", "item_id": c.item_id, "label": y, "gold": c.gold}) + "\n"
        for c, y in examples))
    item, text, labels, bos = cell_prompt(cell, test[1].item_id)
    assert item == test[1].item_id and examples[0][0].claim in text and test[1].claim in text
    tok = load_tokenizer(resolve_model(str(tiny_model_dir)))
    backend = _TokenizerOnly(tok)
    (scored,) = PromptBuilder(backend, cfg.inference).prompts(claimset.personas["progressive"],
                                                              examples, [test[1]])
    assert flatten(scored) == list(backend.bos()) + encode_text(tok, text)


def test_choices_from_an_added_search_path_or_config_dir_are_valid_choices():
    """A sweep that adds a config folder (``hydra.searchpath=[file://...]``, ``--config-dir``)
    may choose that folder's YAML files; a typo among them still gets the closest one."""
    from plural_icm.config.guard import command_line_error

    fixture = Path(__file__).parent / "fixtures" / "conf"
    search = f"hydra.searchpath=[file://{fixture}]"
    assert command_line_error(["-m", search, "model=tiny_a,tiny_b"]) is None
    assert command_line_error(["--config-dir", str(fixture), "model=tiny_a"]) is None
    msg = command_line_error(["-m", search, "model=tiny_c"])
    assert msg and "tiny_a" in msg and "did you mean" in msg
    assert "tiny_a" in (command_line_error(["model=tiny_a"]) or "")  # not without the folder
    assert command_line_error(["hydra.searchpath=[pkg://elsewhere.conf]", "model=tiny_a"]) is None


def test_reuse_distance_is_the_lru_budget_that_keeps_a_hit():
    """bench.reuse: a hit's distance is the bytes touched since its segment's last touch, its own
    included; an LRU of that many bytes still holds it, one byte less does not."""
    from plural_icm.backends.prefix_cache import SegmentKVCache
    from plural_icm.bench.reuse import Distances

    d = Distances(capacity=64)
    for key, size in ((b"a", 1), (b"b", 2), (b"c", 4)):
        d.touch(key, size, hit=False)
    d.touch(b"a", 1, hit=True)  # b, c and a itself since a's last touch
    d.touch(b"a", 1, hit=True)  # nothing else since
    d.touch(b"b", 2, hit=True)  # c, a, b
    assert [h for h, _ in d.hits] == [7, 1, 7]

    class Entry:  # kv_nbytes of a one-layer entry of `size` bytes
        def __init__(self, size):
            self.size = size

        def element_size(self):
            return 1

        def numel(self):
            return self.size

    for budget, kept in ((7, True), (6, False)):
        lru = SegmentKVCache(max_bytes=budget)
        for key, size in ((b"a", 1), (b"b", 2), (b"c", 4)):
            lru.put(key, size, [(Entry(size), Entry(0))])
        assert (lru.get(b"a") is not None) is kept
