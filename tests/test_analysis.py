"""The analysis report on synthetic result trees in the pipeline's exact file formats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis import load, tables
from analysis.report import build_report, main
from plural_icm.layout import CollaborativeSummary, LabellingScore, PredictionRow, collaborative_dir

MODELS = ["llama70b", "smollm2"]
DATASETS = ["gqa", "oqa"]
CONDITIONS = ["zero_shot", "icm", "gold"]
PERSONAS = {"gqa": ["Brazil", "Britain"], "oqa": ["Democrat", "Republican"],
            "ot": ["Democrat", "Republican"]}
#: ICM label accuracy of the best-of-restarts search each icm cell used, per (persona, fold)
LABEL_ACC = {"Brazil": 0.80, "Britain": 0.90, "Democrat": 0.86, "Republican": 0.88}
COUNTRIES13 = ["Brazil", "Britain", "France", "Germany", "Indonesia", "Japan", "Jordan",
               "Lebanon", "Mexico", "Nigeria", "Pakistan", "Russia", "Turkey"]
N_Q = 10  # questions per persona and fold
MISSING = ("smollm2", "oqa", "gold", 1)

# number of correct questions (of N_Q) per persona, by condition and fold
K_CORRECT = {("zero_shot", 0): 6, ("zero_shot", 1): 5, ("icm", 0): 8, ("icm", 1): 9,
             ("gold", 0): 7, ("gold", 1): 8, ("zero_shot_base", 0): 0, ("zero_shot_base", 1): 0}


def _w(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _wl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def write_cell(root: Path, model, dataset, condition, fold, seed=0, n="all", complete=True,
               k=None):
    d = root / "results" / "main" / model / dataset / condition / f"n{n}" / f"fold{fold}" / f"seed{seed}"
    k = K_CORRECT[(condition, fold)] if k is None else k
    preds, per_persona = [], {}
    for p in PERSONAS[dataset]:
        for q in range(N_Q):
            correct = q < k
            for opt in (0, 1):
                gold = opt == 0
                pt = (0.8 if correct else 0.2) if opt == 0 else (0.2 if correct else 0.8)
                preds.append(PredictionRow(
                    model=model, dataset=dataset, condition=condition, fold=fold, seed=seed,
                    persona_id=p, item_id=f"{p}-f{fold}-q{q}-o{opt}", question_id=f"f{fold}q{q}",
                    group_id=f"{p}|f{fold}q{q}", option_key=str(opt), option_index=opt, gold=gold,
                    distribution=None, logp_true=math.log(pt), logp_false=math.log(1 - pt),
                    p_true=pt, pred=pt > 0.5).as_dict())
        per_persona[p] = {"accuracy": k / N_Q, "accuracy_se": 0.1, "n_questions": N_Q,
                          "claim_accuracy": k / N_Q, "ece": 0.2, "stable_fraction": 1.0,
                          "js_distance": None, "representation_score": None,
                          "icm_label_accuracy": (LABEL_ACC[p] + 0.02 * fold
                                                 if condition == "icm" else None),
                          "icm_mutual_predictability": None,
                          "n_examples": 0 if condition.startswith("zero_shot") else 40}
    overall = {"accuracy": k / N_Q, "accuracy_se": 0.08, "n_questions": N_Q * 2,
               "claim_accuracy": k / N_Q, "ece": 0.1 + 0.01 * fold, "stable_fraction": 1.0,
               "js_distance": None, "representation_score": None,
               "icm_label_accuracy": 0.85 if condition == "icm" else None,
               "icm_mutual_predictability": None}
    _w(d / "metrics.json", {"overall": overall, "per_persona": per_persona,
                            "meta": {"model": model, "dataset": dataset, "condition": condition,
                                     "fold": fold, "seed": seed,
                                     # the pipeline writes the setting: null for n = all
                                     "n_examples": None if n == "all" else int(n),
                                     "run_tag": "main", "wall_time_s": 1.0}})
    _wl(d / "predictions.jsonl", preds)
    _wl(d / "examples.jsonl", [{"persona_id": "Brazil", "item_id": "x", "label": True,
                                "gold": True}])
    (d / "config.yaml").write_text("model: {}\n")
    if complete:
        _w(d / "COMPLETE.json", {"wall_time_s": 1.0})
    return d


def make_tree(root: Path) -> Path:
    for m in MODELS:
        for ds in DATASETS:
            for c in CONDITIONS:
                for f in (0, 1):
                    if (m, ds, c, f) == MISSING:
                        # an unfinished cell: directory and metrics, no COMPLETE.json
                        write_cell(root, m, ds, c, f, complete=False)
                        continue
                    write_cell(root, m, ds, c, f)
    for f in (0, 1):
        # a true 0% (base zero-shot gets nothing right) and a sample-efficiency curve
        write_cell(root, "llama70b", "gqa", "zero_shot_base", f)
        for n, k in ((10, 6), (20, 7)):
            write_cell(root, "llama70b", "gqa", "icm", f, n=n, k=k)
    # searches for llama70b/gqa: 13 personas (trajectory legend); Britain also has a constrained
    # collaborative re-run at 100% that Table 4 must not average in
    for f in (0, 1):
        for p, acc in [(c, 0.80) for c in COUNTRIES13 if c != "Britain"] + [("Britain", 0.90),
                                                                             ("Britain", 1.0)]:
            sd = root / "searches" / "llama70b" / "gqa" / f"fold{f}" / p / (
                "fixed1" if acc == 1.0 else "abc123")
            _w(sd / "summary.json", {"U": 10.0, "P": -5.0, "I": 0, "iterations": 3,
                                     "accepted": 2, "wall_time_s": 1.0,
                                     "label_accuracy": acc + 0.02 * f, "n_claims": 20,
                                     "persona": p, "fold": f, "model": "llama70b",
                                     "dataset": "gqa"})
            _wl(sd / "trajectory.jsonl", [{"iteration": i, "U": float(i), "P": -float(i),
                                           "I": 0, "temperature": 1.0, "accepted": True,
                                           "n_labelled": i, "label_accuracy": 0.5}
                                          for i in range(3)])
            _wl(sd / "labels.jsonl", [{"item_id": "x", "label": True, "confidence": 0.9,
                                       "gold": True}])
            _w(sd / "COMPLETE.json", {})
    for fold, (acc, before_u) in enumerate([(0.60, 100.0), (0.80, 120.0)]):  # two of four folds
        before = LabellingScore(test_accuracy=0.65, label_accuracy=0.80, U=before_u,
                                mutual_predictability=2.0, inconsistencies=0)
        _w(collaborative_dir(root, "llama70b", "gqa", "Britain", "confidence", fold) / "summary.json",
           CollaborativeSummary(persona="Britain", method="confidence", fold=fold, k=1, asked=["q"],
                                before=before.as_dict(), test_accuracy=acc, label_accuracy=0.88,
                                U=120.0, mutual_predictability=2.4, inconsistencies=0).as_dict())
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = make_tree(tmp_path_factory.mktemp("outputs"))
    written = build_report(root)
    return root, root / "report", written


def test_load_cells_partial(report):
    root, _, _ = report
    cells = load.load_cells(root)
    assert len(cells) == 2 * 2 * 3 * 2 - 1 + 2 + 4  # + zero_shot_base, icm at n = 10, 20
    allc = load.load_cells(root, include_incomplete=True)
    assert len(allc) == 30 and (~allc.complete).sum() == 1
    # n = all: meta says null; the personas' counts give the examples used
    r = cells[(cells.condition == "icm") & (cells.n == "all")].iloc[0]
    assert r.n_examples == 40
    assert cells.representation_score.isna().all()  # null -> NaN, never 0


def test_files_written(report):
    _, out, written = report
    for name in ["report.md", "report.html", "headline.csv", "table6_per_fold.csv",
                 "table4_label_accuracy.csv", "table7_8_per_persona.csv", "table9_ece.csv",
                 "fig6_stability.csv", "table1_collaborative.csv", "significance.csv",
                 "fig1_percent_of_gold.png", "fig2_dataset_condition.png",
                 "fig3_improvement_over_zero_shot.png", "fig8_absolute_scores.png"]:
        assert (out / name).is_file(), name
        assert out / name in written


def test_headline_values_and_paper(report):
    _, out, _ = report
    h = pd.read_csv(out / "headline.csv")
    r = h[(h.model == "llama70b") & (h.dataset == "gqa") & (h.condition == "icm")].iloc[0]
    assert r.ours == pytest.approx(85.0)          # mean of 80 and 90
    assert r.se == pytest.approx(5.0)             # sd(80, 90) / sqrt(2)
    assert r.paper == pytest.approx(71.7)
    assert r["diff"] == pytest.approx(85.0 - 71.7)
    r = h[(h.model == "llama70b") & (h.dataset == "oqa") & (h.condition == "zero_shot")].iloc[0]
    assert r.ours == pytest.approx(55.0) and r.paper == pytest.approx(69.5)
    # the missing fold: mean over the one fold present, n_folds says so
    r = h[(h.model == "smollm2") & (h.dataset == "oqa") & (h.condition == "gold")].iloc[0]
    assert r.n_folds == 1 and r.ours == pytest.approx(70.0)


def test_per_fold_table_missing_and_paper(report):
    _, out, _ = report
    t = pd.read_csv(out / "table6_per_fold.csv")
    r = t[(t.model == "smollm2") & (t.dataset == "oqa") & (t.condition == "gold")].iloc[0]
    assert r.F1 == pytest.approx(70.0) and math.isnan(r.F2)
    r = t[(t.model == "llama70b") & (t.dataset == "gqa") & (t.condition == "icm")].iloc[0]
    assert (r.F1, r.F2, r.Avg) == pytest.approx((80.0, 90.0, 85.0))
    assert r.paper_F1 == pytest.approx(68.8) and r.paper_Avg == pytest.approx(71.7)
    r = t[(t.model == "llama70b") & (t.dataset == "oqa") & (t.condition == "icm")].iloc[0]
    assert math.isnan(r.paper_Avg)  # Table 6 is GQA only


def test_significance_on_claims_clustered_by_question(report):
    _, out, _ = report
    s = pd.read_csv(out / "significance.csv")
    r = s[(s.model == "llama70b") & (s.dataset == "gqa") & (s.A == "icm")
          & (s.B == "zero_shot")].iloc[0]
    # fold0: icm 8 vs zs 6 -> 2 icm-only questions per persona; fold1: 9 vs 5 -> 4; two personas:
    # 12 questions, each with both of its 2 claims right only under ICM (paired over claims,
    # clustered by question: 12 clusters differing by +2, an exact sign-flip p = 2 / 2^12)
    assert r.n_claims == 80 and r.n_questions == 40 and r.A_only == 24 and r.B_only == 0
    from scipy.stats import binomtest
    assert r.p_claims == pytest.approx(binomtest(12, 12, 0.5).pvalue)
    assert "clustered by question" in r.test
    h = pd.read_csv(out / "headline.csv")
    hz = h[(h.model == "llama70b") & (h.dataset == "gqa") & (h.condition == "zero_shot")].iloc[0]
    assert hz.p_icm_vs_this_claims == pytest.approx(r.p_claims)
    # the missing gold fold of smollm2/oqa: only fold 0 is paired
    r = s[(s.model == "smollm2") & (s.dataset == "oqa") & (s.A == "icm") & (s.B == "gold")].iloc[0]
    assert r.n_folds == 1 and r.n_questions == 20


def test_label_accuracy_ece_collab_tables(report):
    _, out, _ = report
    la = pd.read_csv(out / "table4_label_accuracy.csv")
    r = la[(la.persona == "Britain")].iloc[0]
    assert r.label_accuracy == pytest.approx(91.0) and r.paper == pytest.approx(83.5)
    assert r["diff"] == pytest.approx(7.5)
    e = pd.read_csv(out / "table9_ece.csv")
    r = e[(e.model == "llama70b") & (e.dataset == "gqa") & (e.condition == "icm")].iloc[0]
    assert r.ece == pytest.approx(0.105) and r.paper == pytest.approx(0.1549)
    c = pd.read_csv(out / "table1_collaborative.csv")
    assert len(c) == 1  # the folds of one persona and method are one row
    r = c.iloc[0]
    assert (r.k, r.n_folds) == (2, 2)
    assert r.test_accuracy == pytest.approx(0.70) and r.paper_test_accuracy == pytest.approx(0.76)
    assert r.diff_test_accuracy == pytest.approx(-0.06)
    assert r.before_U == pytest.approx(110.0) and r.paper_U == pytest.approx(125.14)


def test_report_markdown(report):
    _, out, _ = report
    md = (out / "report.md").read_text()
    assert "Llama-3.1-70B" in md
    assert "`smollm2/oqa/gold/fold1`" in md       # listed as missing
    assert "—" in md                               # missing shown as a dash
    assert "71.70" in md                           # paper number beside ours (GQA ICM)
    assert "69.50" in md                           # OQA zero-shot
    assert "fig1_percent_of_gold.png" in md
    ratio = pd.read_csv(out / "fig1_percent_of_gold.csv")
    r = ratio[(ratio.model == "llama70b") & (ratio.dataset == "gqa") & (ratio.condition == "icm")]
    assert r.ratio.iloc[0] == pytest.approx(85.0 / 75.0)


def test_demo_only_and_cli(tmp_path, capsys):
    for c in ("zero_shot", "icm"):
        write_cell(tmp_path, "smollm2", "gqa", c, 0)  # placeholder to reuse the writer
    # move to dataset "demo" (no paper numbers)
    src = tmp_path / "results" / "main" / "smollm2" / "gqa"
    src.rename(tmp_path / "results" / "main" / "smollm2" / "demo")
    assert main([str(tmp_path), "--out", str(tmp_path / "rep")]) == 0
    printed = capsys.readouterr().out
    assert "report.md" in printed and str(tmp_path / "rep") in printed
    h = pd.read_csv(tmp_path / "rep" / "headline.csv")
    assert set(h.dataset) == {"demo"} and h.paper.isna().all()
    assert (tmp_path / "rep" / "fig8_absolute_scores.png").is_file()


def test_empty_outputs(tmp_path):
    written = build_report(tmp_path)
    assert (tmp_path / "report" / "report.md").is_file()
    assert "No cells found" in (tmp_path / "report" / "report.md").read_text()
    assert written


def test_question_correctness_takes_the_majority_over_perturbations():
    """acc_matched cells hold one prediction set per perturbation (an item repeats); each question
    gets one verdict for the paired tests: the majority over the perturbations."""
    import pandas as pd
    from analysis.tables import question_correctness
    rows = []
    # q1: option 1 is gold; perturbations 0,1 pick option 1 (right), 2 picks option 0 (wrong)
    for pert, p1 in ((0, 0.9), (1, 0.8), (2, 0.1)):
        for opt, p in ((0, 1 - p1), (1, p1)):
            rows.append({"run_tag": "main", "model": "m", "dataset": "d", "condition": "acc_matched",
                         "n": "all", "fold": 0, "seed": 0, "persona_id": "P", "group_id": "q1",
                         "question_id": "q1", "option_key": str(opt), "option_index": opt,
                         "gold": opt == 1, "p_true": p, "perturbation": pert})
    # the same question in another condition, without perturbations (NaN after the concat)
    for opt, p in ((0, 0.7), (1, 0.2)):
        rows.append({"run_tag": "main", "model": "m", "dataset": "d", "condition": "icm", "n": "all",
                     "fold": 0, "seed": 0, "persona_id": "P", "group_id": "q1", "question_id": "q1",
                     "option_key": str(opt), "option_index": opt, "gold": opt == 1, "p_true": p})
    q = question_correctness(pd.DataFrame(rows)).set_index("condition")["correct"]
    assert len(q) == 2 and bool(q["acc_matched"]) is True and bool(q["icm"]) is False


def test_bootstrap_is_reported_beside_random_and_icm():
    assert tables.sort_conditions(["gold", "icm", "bootstrap", "random", "zero_shot"]) == \
        ["zero_shot", "random", "bootstrap", "icm", "gold"]
    from analysis.figures import COND_COLORS
    from analysis.paper_numbers import CONDITION_LABELS

    assert CONDITION_LABELS["bootstrap"] == "Few-shot bootstrap" and "bootstrap" in COND_COLORS


def test_score_is_the_metric_the_dataset_declared(tmp_path):
    """The cell's declared score_metric decides its score, whatever the dataset is called."""
    d = write_cell(tmp_path, "m", "gqa", "icm", 0)
    m = json.loads((d / "metrics.json").read_text())
    m["overall"]["representation_score"] = 4.25
    m["meta"]["score_metric"] = "representation_score"  # as run_cell writes it
    _w(d / "metrics.json", m)
    row = load.load_cells(tmp_path).iloc[0]
    assert row.score_metric == "representation_score" and row.score == 4.25
    del m["meta"]["score_metric"]  # an older cell: the declaration is read from its config.yaml
    _w(d / "metrics.json", m)
    (d / "config.yaml").write_text("dataset:\n  name: gqa\n  score_metric: representation_score\n")
    assert load.load_cells(tmp_path).iloc[0].score == 4.25
    (d / "config.yaml").write_text("model: {}\n")  # no declaration anywhere: accuracy
    row = load.load_cells(tmp_path).iloc[0]
    assert row.score_metric == "claim_accuracy" and row.score == m["overall"]["claim_accuracy"]



def test_a_new_datasets_declared_metric_sets_its_display_unit(tmp_path):
    """A dataset the analysis has never heard of, declaring a representation score: its tables
    show the score on its own 1-5 scale, not as a percent; a group whose cells declare two
    different metrics is an error naming them, not a mean of the two."""
    for fold in (0, 1):
        d = write_cell(tmp_path, "m", "gqa", "icm", fold)
        m = json.loads((d / "metrics.json").read_text())
        m["overall"]["representation_score"] = 4.0 + 0.5 * fold
        m["meta"]["score_metric"] = "representation_score"
        _w(d / "metrics.json", m)
    # the same cells under a new dataset name
    src = tmp_path / "results" / "main" / "m" / "gqa"
    src.rename(src.with_name("my_open_ended"))
    cells = load.load_cells(tmp_path)
    assert set(cells.dataset) == {"my_open_ended"}
    folds = tables.fold_scores(cells)
    means = tables.condition_means(folds)
    head = tables.headline_table(means, pd.DataFrame())
    row = head.iloc[0]
    assert row.unit == "score (1-5)" and row.ours == pytest.approx(4.25)
    per_fold = tables.per_fold_table(folds, pd.DataFrame())
    assert list(per_fold[["F1", "F2"]].iloc[0]) == pytest.approx([4.0, 4.5])
    # one fold re-declared as an accuracy: the group cannot be averaged
    mixed = cells.copy()
    mixed.loc[mixed.fold == 1, "score_metric"] = "claim_accuracy"
    with pytest.raises(ValueError, match=r"my_open_ended.*claim_accuracy.*representation_score"):
        tables.condition_means(tables.fold_scores(mixed.assign(fold=0)))


# -- the paper's metric ------------------------------------------------------------------------

# ../shared/data beside the checkout (a git worktree under wt/ sits one level deeper)
_REPO = Path(__file__).resolve().parents[1]
RELEASED = [r / "shared" / "data" / "paper_released" for r in (_REPO.parent, _REPO.parent.parent)]


def _released_dir() -> Path:
    for base in RELEASED:
        d = base / "opinionqa" / "zero_shot_chat"
        if d.is_dir():
            return d
    pytest.skip("the paper's released predictions (../shared/data/paper_released) are absent")


@pytest.mark.data
def test_parity_reproduces_the_papers_zero_shot_number(capsys):
    from analysis import parity

    assert parity.main([str(_released_dir())]) == 0
    out = capsys.readouterr().out
    mean_line = [ln for ln in out.splitlines() if ln.startswith("mean over 4 folds")]
    assert mean_line and "69.47%" in mean_line[0] and "paper: 69.50%" in mean_line[0]
    for fold_acc in ("68.94", "74.67", "70.47", "63.79"):
        assert fold_acc in out


def test_parity_counts_an_answer_that_is_no_label_as_wrong(tmp_path, capsys):
    from analysis import parity

    rows = [{"instruction": "x", "input": "q", "output": "True", "generated_output": " true."},
            {"instruction": "x", "input": "q", "output": "False", "generated_output": "False"},
            {"instruction": "x", "input": "q", "output": "False", "generated_output": "You"},
            {"instruction": "x", "input": "q", "output": "True", "generated_output": "False"}]
    _w(tmp_path / "oqa" / "zero_shot_chat" / "res_fold1.json", rows)
    _w(tmp_path / "oqa" / "zero_shot_chat" / "res_fold2.json", rows[:2])
    s = parity.score_file(tmp_path / "oqa" / "zero_shot_chat" / "res_fold1.json")
    assert (s.fold, s.n_claims, s.n_correct, s.n_unparsed, s.accuracy) == (1, 4, 2, 1, 0.5)
    assert parity.main([str(tmp_path / "oqa" / "zero_shot_chat")]) == 0
    out = capsys.readouterr().out
    assert "mean over 2 folds: 75.00%" in out and "paper: 69.50%" in out  # (50 + 100) / 2


@pytest.mark.parametrize("content, expected", [
    ("[{\"input\": 1, \"output\": \"True\"}]", "row 0: missing field(s) ['generated_output']"),
    ("[{\"input\": \"q\", \"output\": \"yes\", \"generated_output\": \"True\"}]",
     "row 0: 'output' (the gold label) must be 'True' or 'False'"),
    ("[{\"input\": \"q\", \"output\": \"True\", \"generated_output\": \"True\"}, 3]",
     "row 1: expected an object"),
    ("{\"a\": 1}", "expected a JSON list"),
    ("[{\"input\": ", "not valid JSON"),
])
def test_parity_names_file_and_row_of_a_malformed_prediction_file(tmp_path, capsys, content, expected):
    from analysis import parity

    f = tmp_path / "bad_fold1.json"
    f.write_text(content)
    assert parity.main([str(f)]) == 2
    err = capsys.readouterr().err
    assert str(f) in err and expected in err


def test_the_headline_score_is_claim_accuracy_and_question_accuracy_a_named_column(tmp_path):
    """Cells whose claim and question accuracies differ: the score compared with the paper is the
    claim accuracy; question accuracy is its own column (read from older files' ``accuracy``)."""
    from analysis import load, tables

    for fold, (claim, question) in enumerate([(0.70, 0.40), (0.80, 0.50)]):
        d = tmp_path / "results" / "main" / "llama70b" / "oqa" / "zero_shot" / "nall" / f"fold{fold}" / "seed0"
        overall = {"claim_accuracy": claim, "claim_accuracy_se": 0.01, "n_claims": 100}
        overall |= ({"question_accuracy": question} if fold == 0 else {"accuracy": question})
        _w(d / "metrics.json", {"overall": overall, "per_persona": {}, "meta": {}})
        _w(d / "COMPLETE.json", {})
    cells = load.load_cells(tmp_path)
    assert list(cells.score) == pytest.approx([0.70, 0.80])
    assert set(cells.score_metric) == {"claim_accuracy"}
    assert list(cells.question_accuracy) == pytest.approx([0.40, 0.50])
    folds = tables.fold_scores(cells)
    head = tables.headline_table(tables.condition_means(folds), pd.DataFrame(),
                                 tables.condition_means(folds, "question_accuracy"))
    row = head.iloc[0]
    assert row.ours == pytest.approx(75.0) and row.paper == pytest.approx(69.5)
    assert row.question_accuracy == pytest.approx(45.0)


def test_report_records_the_search_protocol_and_warns_of_unreached_claims(tmp_path):
    for fold in (0, 1):
        d = write_cell(tmp_path, "llama70b", "gqa", "icm", fold)
        m = json.loads((d / "metrics.json").read_text())
        m["meta"] |= {"icm_preset": "fork", "search_unit": "part",
                      "seed_labels": "gold" if fold == 1 else "random"}
        _w(d / "metrics.json", m)
        write_cell(tmp_path, "llama70b", "gqa", "zero_shot", fold)
    sd = tmp_path / "searches" / "llama70b" / "gqa" / "fold1" / "Brazil" / "h1"
    _w(sd / "summary.json", {"U": 1.0, "P": 0.1, "I": 0, "iterations": 5, "accepted": 1,
                             "label_accuracy": 0.7, "n_claims": 20, "n_predicted_unlabelled": 3,
                             "search_unit": "part", "part": 1, "seed_labels": "random"})
    _w(sd / "COMPLETE.json", {})
    build_report(tmp_path)
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## ICM search protocol" in md
    assert "GOLD SEED LABELS" in md and "Warning: 1 of 1 searches" in md
    head = pd.read_csv(tmp_path / "report" / "headline.csv")
    icm = head[head.condition == "icm"].iloc[0]
    assert icm.protocol == "part/gold GOLD SEEDS; part/random"
    assert pd.isna(head[head.condition == "zero_shot"].iloc[0].protocol)
    searches = load.load_searches(tmp_path)
    assert searches.iloc[0].n_predicted_unlabelled == 3 and searches.iloc[0].search_unit == "part"


# -- figures: what they show (captured before saving) ------------------------------------------

@pytest.fixture
def captured(monkeypatch):
    from analysis import figures

    figs = {}

    def keep(fig, path):
        figs[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr(figures, "_save", keep)
    return figs


def test_figures_show_the_paper_zero_bars_axis_start_and_model_order(report, captured, tmp_path):
    from analysis import figures

    root, _, _ = report
    build_report(root, tmp_path / "rep")
    # Figure 2: Llama-3.1-70B only (the paper's model), with the paper's values as diamonds
    f2 = captured["fig2_dataset_condition.png"]
    gqa = f2.axes[0]
    assert "Llama-3.1-70B" in gqa.get_title()
    diamonds = [l for l in gqa.get_lines() if l.get_marker() == "D"]
    ys = sorted(float(y) for l in diamonds for y in l.get_ydata())
    assert ys == pytest.approx(sorted([54.3, 63.9, 71.7, 70.9]))  # Table 6 averages
    # the true 0% (zero-shot base) is drawn as a visible mark, not an empty slot
    assert any(c.get_segments() and c.get_segments()[0][0][1] == 0 for c in gqa.collections
               if hasattr(c, "get_segments"))
    oqa = f2.axes[1]
    # the axis note sits in the y label (issue #29: as a text above the axes it overlapped the
    # panel title); oqa's missing zero-shot (base) cell keeps its slot, marked with an x
    assert oqa.get_ylim()[0] > 0 and "starts at" in oqa.get_ylabel()
    assert not any("starts at" in t.get_text() for t in oqa.texts)
    assert any(t.get_text() == "×" for t in oqa.texts)
    # Figures 1, 3, 8 carry the paper's values too
    for name in ("fig1_percent_of_gold.png", "fig3_improvement_over_zero_shot.png",
                 "fig8_absolute_scores.png"):
        assert any(l.get_marker() == "D" for ax in captured[name].axes for l in ax.get_lines()), name
    # Figure 3: models by family and size, not alphabetically
    assert figures.sort_models(["qwen14b", "olmo7b", "llama70b", "llama8b", "zzz"]) == \
        ["llama8b", "llama70b", "qwen14b", "olmo7b", "zzz"]
    assert [t.get_text() for t in captured["fig3_improvement_over_zero_shot.png"].axes[0]
            .get_xticklabels()] == ["llama70b", "smollm2"]
    # Figure 7: the n = all points (meta n_examples null) are drawn, zero-shot as a line
    f7 = captured["fig7_sample_efficiency.png"].axes[0]
    icm = [c for c in f7.containers if c.get_label() == "Few-shot ICM"][0]
    assert list(icm.lines[0].get_xdata()) == [10, 20, 40]
    assert any(l.get_label() == "Zero-shot (chat)" and len(set(l.get_ydata())) == 1
               for l in f7.get_lines())
    # trajectories: every fold, and a legend naming all 13 personas
    tr = captured["search_trajectories.png"]
    titles = [ax.get_title() for ax in tr.axes]
    assert "llama70b / gqa / fold 0" in titles and "llama70b / gqa / fold 1" in titles
    # (13 personas, then the mark of each search's final U: issue #29)
    texts = [t.get_text() for t in tr.legends[0].get_texts()]
    assert len(texts) == 14 and texts[-1] == "final U of a search"
    # the final U (10.0 in the searches' summaries) is marked at each search's last iteration
    assert any(list(l.get_xdata()) == [2] and list(l.get_ydata()) == [10.0]
               for l in tr.axes[0].get_lines())


def _patch_cell(d: Path, per_persona_update=None, overall_update=None, pred_update=None):
    m = json.loads((d / "metrics.json").read_text())
    for p, vals in (per_persona_update or {}).items():
        m["per_persona"][p].update(vals)
    m["overall"].update(overall_update or {})
    (d / "metrics.json").write_text(json.dumps(m))
    if pred_update:
        rows = [json.loads(x) for x in (d / "predictions.jsonl").read_text().splitlines()]
        (d / "predictions.jsonl").write_text("".join(json.dumps(pred_update(r)) + "\n" for r in rows))


def test_js_distance_per_persona_with_distributions_and_self_judged_ot(tmp_path):
    for f in (0, 1):
        for c, js in (("zero_shot", 0.30), ("icm", 0.10)):
            d = write_cell(tmp_path, "llama70b", "gqa", c, f)
            _patch_cell(d, {"Brazil": {"js_distance": js + 0.02 * f}, "Britain": {"js_distance": js}},
                        pred_update=lambda r: r | {"distribution": [0.7, 0.3]})
    d = write_cell(tmp_path, "llama70b", "ot", "icm", 0)
    _patch_cell(d, overall_update={"representation_score": 4.1, "representation_se": 0.1,
                                   "judge_is_model_under_test": True})
    out = tmp_path / "rep"
    build_report(tmp_path, out)
    js = pd.read_csv(out / "js_distance_per_persona.csv").set_index("persona")
    assert js.loc["Brazil", "icm"] == pytest.approx(0.11) and js.loc["Britain", "zero_shot"] == \
        pytest.approx(0.30)
    dists = pd.read_csv(out / "js_distributions.csv")
    assert set(dists.observed) == {"[0.7, 0.3]"}
    # the fixture's P(True) 0.8 / 0.2 for a correct question: predicted [0.8, 0.2]
    assert "[0.8, 0.2]" in set(dists.predicted)
    md = (out / "report.md").read_text()
    assert "Jensen-Shannon distance" in md and "0.70 / 0.30" in md
    h = pd.read_csv(out / "headline.csv")
    ot = h[h.dataset == "ot"].iloc[0]
    assert ot.paper_comparable == False and math.isnan(ot["diff"])  # noqa: E712
    assert bool(h[h.dataset == "gqa"].paper_comparable.all())
    assert "Not comparable with the paper" in md and "`llama70b/ot/icm`" in md
    # another judge without a stated validation is not comparable either; with one it is
    for validation, comparable in ((None, False), ("rho 0.88 vs humans", True)):
        _patch_cell(d, overall_update={"judge_is_model_under_test": False,
                                       "judge_validation": validation})
        build_report(tmp_path, out)
        ot = pd.read_csv(out / "headline.csv").query("dataset == 'ot'").iloc[0]
        assert bool(ot.paper_comparable) is comparable


def test_collaborative_figure_draws_after_before_and_the_papers_values(captured, tmp_path):
    """Table 1 as a figure: one panel per persona, the test and label accuracy after the labels as
    bars, before them as ticks, the paper's GQA values as diamonds (simulated answers only)."""
    from analysis import figures
    from analysis.tables import collaborative_table

    rows = []
    for method, (test, label) in {"confidence": (0.8, 0.9), "random": (0.6, 0.7),
                                  "active": (0.5, 0.75)}.items():
        for fold in range(2):
            rows.append({"model": "llama70b", "dataset": "gqa_claims", "persona": "Britain",
                         "method": method, "fold": fold, "k": 1, "test_accuracy": test,
                         "label_accuracy": label, "U": 100.0, "before_test_accuracy": 0.5,
                         "before_label_accuracy": 0.6, "before_U": 90.0,
                         "answers": "simulated_gold"})
    t = collaborative_table(pd.DataFrame(rows))
    path = figures.fig_collaborative(t, tmp_path / "fig_collaborative.png")
    assert path is not None
    ax = captured["fig_collaborative.png"].axes[0]
    assert "Britain" in ax.get_title()
    heights = sorted(round(b.get_height(), 6) for b in ax.patches)
    assert heights == sorted([80.0, 90.0, 60.0, 70.0, 50.0, 75.0])
    diamonds = [l for l in ax.get_lines() if l.get_marker() == "D"]
    ys = sorted(float(y) for l in diamonds for y in l.get_ydata())
    assert ys == pytest.approx(sorted([76, 90, 61, 77, 72, 83]))  # Table 1, Britain
    assert [x.get_text() for x in ax.get_xticklabels()][0].endswith("k=2")  # 1 label x 2 folds
    assert figures.fig_collaborative(pd.DataFrame(), tmp_path / "none.png") is None
