"""Build the analysis report from a result tree.

    python -m analysis.report <outputs_dir> [--out DIR] [--run-tag TAG]
                              [--wandb [--wandb-group G] [--wandb-mode offline|online]]

Writes ``report.md`` (and ``report.html``), PNG figures and CSV tables into ``--out`` (default
``<outputs_dir>/report/``) and prints the list of files written. Works on a partial grid: missing
cells are "—" in tables and absent bars in figures, never 0. The paper's numbers are for
Llama-3.1-70B; they are shown beside every model's rows, the differences are meaningful only for
``llama70b``.

``--wandb`` also logs the tables (W&B Tables, ours beside the paper's) and figures to one run of
``job_type=report`` in the sweep's group (default ``grid-<run tag>``, the group of the jobs of
that run tag without an ``experiment``; ``--wandb-group`` names another, e.g.
``collaborative-main``), offline by default under ``<outputs>/wandb``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pandas as pd

from analysis import figures, load, selection, tables
from analysis import paper_numbers as paper


def build_report(outputs: str | Path, out: str | Path | None = None,
                 run_tag: str | None = None) -> list[Path]:
    """Write the report; returns the files written."""
    outputs = Path(outputs)
    out = Path(out) if out is not None else outputs / "report"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    all_cells = load.load_cells(outputs, include_incomplete=True)
    cells = all_cells[all_cells.complete] if not all_cells.empty else all_cells
    tag = tables.choose_run_tag(cells, run_tag)
    other_tags = sorted(set(cells.run_tag) - {tag}) if not cells.empty else []
    cells_tag = cells[cells.run_tag == tag] if not cells.empty else cells
    n_main = tables.main_n(cells_tag)
    folds_all = tables.fold_scores(cells_tag)
    folds = folds_all[folds_all.n.astype(str) == n_main] if n_main else folds_all

    per_persona = load.load_per_persona(outputs)
    if not per_persona.empty:
        per_persona = per_persona[per_persona.run_tag == tag]
    searches = load.load_searches(outputs)
    traj = load.load_trajectories(outputs)
    collab = load.load_collaborative(outputs)
    main_cells = cells_tag[cells_tag.n.astype(str) == n_main] if n_main else cells_tag
    preds = load.load_predictions(outputs, main_cells) if len(main_cells) else pd.DataFrame()

    means = tables.condition_means(folds) if not folds.empty else pd.DataFrame()
    ccorr = tables.claim_correctness(preds)
    sig = tables.significance_table(folds, ccorr) if not folds.empty else pd.DataFrame()
    qmeans = (tables.condition_means(folds, "question_accuracy")
              if not folds.empty and "question_accuracy" in folds else None)
    headline = tables.headline_table(means, sig, qmeans) if not means.empty else pd.DataFrame()
    headline = _with_protocol(headline, cells_tag)
    headline = tables.mark_self_judged(headline, main_cells)
    per_fold = tables.per_fold_table(folds, sig)
    js_table, js_dists = tables.js_distance_table(per_persona, preds, n_main)
    label_acc = tables.label_accuracy_table(per_persona)
    pp_table = tables.per_persona_table(per_persona, n_main)
    ece = tables.ece_table(tables.condition_means(folds, "ece")) if not folds.empty else pd.DataFrame()
    stab = (tables.simple_metric_table(tables.condition_means(folds, "stable_fraction"),
                                       "stable_fraction", 100.0)
            if not folds.empty else pd.DataFrame())
    eff = tables.sample_efficiency_table(folds_all)
    collab_t = tables.collaborative_table(collab)

    ratios = pd.concat([tables.paired_on_common_folds(folds, c, "gold")
                        for c in tables.sort_conditions(folds.condition)], ignore_index=True) \
        if not folds.empty and "gold" in set(folds.condition) else pd.DataFrame()
    diffs = pd.concat([tables.paired_on_common_folds(folds, c, "zero_shot") for c in ("icm", "gold")],
                      ignore_index=True) \
        if not folds.empty and "zero_shot" in set(folds.condition) else pd.DataFrame()

    label_sets = tables.label_set_table(load.load_label_sets(outputs)[lambda f: f.run_tag == tag]
                                        if tag is not None else load.load_label_sets(outputs))

    # ---- CSVs ----
    csvs = {"cells.csv": all_cells.drop(columns=["path"], errors="ignore"),
            "fold_scores.csv": folds_all, "headline.csv": headline,
            "table6_per_fold.csv": per_fold, "table4_label_accuracy.csv": label_acc,
            "table7_8_per_persona.csv": pp_table, "table9_ece.csv": ece,
            "fig6_stability.csv": stab, "fig7_sample_efficiency.csv": eff,
            "table1_collaborative.csv": collab_t, "significance.csv": sig,
            "fig1_percent_of_gold.csv": ratios, "fig3_improvement.csv": diffs,
            "searches.csv": searches.drop(columns=["path"], errors="ignore"),
            "js_distance_per_persona.csv": js_table, "label_sets.csv": label_sets, "js_distributions.csv": js_dists}
    for name, df in csvs.items():
        p = out / name
        (df if df is not None else pd.DataFrame()).to_csv(p, index=False)
        written.append(p)

    # ---- figures ----
    figs: dict[str, Path | None] = {
        "fig1": figures.fig1_percent_of_gold(ratios, out / "fig1_percent_of_gold.png"),
        "fig2": figures.fig2_dataset_condition(folds, out / "fig2_dataset_condition.png"),
        "fig3": figures.fig3_improvement(diffs, out / "fig3_improvement_over_zero_shot.png"),
        "fig5": figures.fig5_per_persona(pp_table, out / "fig5_per_persona.png"),
        "fig6": figures.fig6_stability(stab, out / "fig6_stability.png"),
        "fig7": figures.fig7_sample_efficiency(eff, out / "fig7_sample_efficiency.png"),
        "fig8": figures.fig8_absolute(means, out / "fig8_absolute_scores.png"),
        "traj": figures.fig_trajectories(traj, out / "search_trajectories.png", searches=searches),
        "label_sets": figures.fig_label_sets(label_sets, out / "fig_label_sets.png"),
        "collaborative": figures.fig_collaborative(collab_t, out / "fig_collaborative.png"),
    }
    written += [p for p in figs.values() if p is not None]

    # ---- Markdown ----
    md = _markdown(outputs, tag, other_tags, n_main, all_cells, folds, headline, per_fold,
                   label_acc, pp_table, ece, stab, eff, collab_t, sig, figs, label_sets)
    md = md.replace(_PROTOCOL_SLOT, _protocol_section(cells_tag, searches), 1)
    md += _js_section(js_table, js_dists) + _judge_section(headline)
    sel_md, sel_files = selection.section(cells_tag, out)
    md += sel_md
    written += sel_files
    (out / "report.md").write_text(md, encoding="utf-8")
    written.append(out / "report.md")
    (out / "report.html").write_text(_html(md), encoding="utf-8")
    written.append(out / "report.html")
    return written


_PROTOCOL_SLOT = "<!-- icm protocol -->"


def _with_protocol(headline: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    """A ``protocol`` column (search_unit/seed_labels[/context_order] of the cells behind a row;
    GOLD SEEDS marked; the order where the cells recorded one)."""
    if headline.empty or "search_unit" not in cells.columns:
        return headline
    def describe(g: pd.DataFrame) -> str:
        g = g.dropna(subset=["search_unit"])
        orders = g.context_order if "context_order" in g.columns else [None] * len(g)
        names = sorted({f"{u}/{s}" + (f"/{o}" if isinstance(o, str) else "")
                        + (" GOLD SEEDS" if s == "gold" else "")
                        for u, s, o in zip(g.search_unit, g.seed_labels, orders)})
        return "; ".join(names)
    proto = {k: describe(g) for k, g in cells.groupby(["model", "dataset", "condition", "n"])}
    out = headline.copy()
    out["protocol"] = [proto.get((r.model, r.dataset, r.condition, r.n), "") for r in out.itertuples()]
    return out


def _protocol_section(cells: pd.DataFrame, searches: pd.DataFrame) -> str:
    """Which ICM protocol produced the numbers (search unit, seed labels), with gold seeds
    marked, and a warning naming the searches whose budget left claims unreached."""
    out = []
    cols = [c for c in ("icm_preset", "search_unit", "seed_labels", "context_order") if c in cells.columns]
    used = cells.dropna(subset=["search_unit"]) if "search_unit" in cells.columns else pd.DataFrame()
    if used.empty:
        out.append("No cell of this report used ICM searches with a recorded protocol.\n")
    else:
        t = used.groupby(["model", "dataset", "condition"] + cols, dropna=False).size().rename("cells").reset_index()
        t["note"] = ["GOLD SEED LABELS: not unsupervised" if s == "gold" else ""
                     for s in t.seed_labels]
        out += ["`search_unit`: `training_folds` = one search over the union of the training folds "
                "(ours); `part` = one search per training fold part, the examples being the union "
                "of the parts' labels (the paper's fork). `seed_labels`: `random` (the paper's "
                "text) or `gold` (the first claims seeded with their gold labels; such numbers "
                "are marked). `context_order`: the order of the other claims in every "
                "leave-one-out context, `published` (the published code's one global order) or "
                "`halving_tail` (ours, faster; another objective: U and P of two orders do not "
                "compare).\n", tables.to_markdown(t)]
    if not searches.empty and "n_predicted_unlabelled" in searches:
        short = searches[searches.n_predicted_unlabelled.fillna(0) > 0]
        if len(short):
            out.append(f"**Warning: {len(short)} of {len(searches)} searches ended with claims "
                       "their iteration budget never reached** (labelled by one final prediction "
                       "given the searched labels; their U, P, I include them). Raise "
                       "`icm.max_iters`.\n")
            out.append(tables.to_markdown(short[["model", "dataset", "fold", "persona", "hash",
                                                 "n_claims", "n_predicted_unlabelled", "iterations"]]))
    return "\n".join(out)


def _img(figs: dict, key: str, caption: str) -> str:
    p = figs.get(key)
    if p is None:
        return f"_{caption}: no data for this figure._\n\n"
    return f"![{caption}]({p.name})\n\n"


def _grid_status(all_cells: pd.DataFrame, tag: str | None, n_main: str | None) -> str:
    if all_cells.empty:
        return "No cells found under `results/`.\n"
    c = all_cells[(all_cells.run_tag == tag)]
    if n_main:
        c = c[c.n.astype(str) == n_main]
    models, datasets = sorted(c.model.unique()), sorted(c.dataset.unique())
    conds = tables.sort_conditions(c.condition)
    folds_per_ds = c.groupby("dataset").fold.max().to_dict()
    expected = sum(len(models) * len(conds) * (int(folds_per_ds[d]) + 1) for d in datasets)
    done = c[c.complete].groupby(["model", "dataset", "condition", "fold"]).ngroups
    lines = [f"Models: {', '.join(models)}; datasets: {', '.join(datasets)}; conditions: "
             f"{', '.join(conds)}.",
             f"Complete (model, dataset, condition, fold) cells: **{done}** of {expected} "
             f"in the grid spanned by what exists ({int((~c.complete).sum())} incomplete "
             "cell directories are ignored)."]
    missing = []
    for m in models:
        for d in datasets:
            for cond in conds:
                for f in range(int(folds_per_ds[d]) + 1):
                    hit = c[(c.model == m) & (c.dataset == d) & (c.condition == cond)
                            & (c.fold == f) & c.complete]
                    if hit.empty:
                        missing.append(f"{m}/{d}/{cond}/fold{f}")
    if missing:
        shown = ", ".join(f"`{x}`" for x in missing[:30])
        lines.append(f"Missing: {shown}" + (f" … and {len(missing) - 30} more" if len(missing) > 30
                                             else "") + ".")
    return "\n\n".join(lines) + "\n"


def _markdown(outputs, tag, other_tags, n_main, all_cells, folds, headline, per_fold, label_acc,
              pp_table, ece, stab, eff, collab_t, sig, figs, label_sets=None) -> str:
    P = paper.PAPER_MODEL
    s = ["# Reproduction report: Coherence Maximization Improves Pluralistic Alignment\n",
         f"Results read from `{Path(outputs).resolve()}` (run tag `{tag}`, in-context examples "
         f"n = `{n_main}`)." + (f" Other run tags present, not in this report: "
                                f"{', '.join(other_tags)} (use `--run-tag`)." if other_tags else "")
         + "\n",
         "**Conventions.** Scores are claim accuracy in % (GQA, OQA, PT, demo) or the "
         "OvertonBench representation score (1–5). **Claim accuracy is the paper's metric**: each "
         "True/False claim counts, correct when P(True) > P(False) agrees with gold (the paper's "
         "code counts claims; its released OpinionQA zero-shot predictions give its 69.5%, see "
         "`python -m analysis.parity`); `ours`, `paper` and `diff` are claim accuracies. "
         "`question_accuracy` (headline table) is a second, stricter score with no published "
         "counterpart: a question is correct when its highest-P(True) option is the gold "
         "(plurality) option. Seeds are averaged per fold; a condition's score is the "
         "unweighted mean over folds (as the paper's Table 6 'Avg'); SE is over folds (or the "
         "binomial SE of a single fold). `—` is a missing value (a cell that was not run or "
         "a metric that was not computed), never zero. "
         f"**Paper columns are the published numbers for {P}**; `diff` = ours − paper and is "
         f"comparable only for our `{paper.PAPER_MODEL_KEY}` rows. Paper fold F1..F4 = our "
         "fold0..fold3.\n",
         "**Significance.** `p_icm_vs_this_claims`: ICM against the row's condition on the "
         "score beside it, claim accuracy: claims paired on persona, item, fold and seed, "
         "clustered by question (a paired sign-flip test of each question's summed difference, "
         "exact when at most 20 questions differ; where every differing question differs by one "
         "claim, as on OvertonBench with one claim per question, it is the exact McNemar test "
         "over claims); the `test` column of the significance table names the test each p comes "
         "from. For OvertonBench the headline score is the judge's representation score: the "
         "p-values there test claim correctness, not the ratings. `p_icm_vs_this_t_folds`: paired "
         "t-test over folds (k − 1 degrees of freedom, low power with 4 folds); `undefined` when "
         "every fold difference is the same (their SD is 0, so t has no finite value and no "
         "p-value).\n",
         "## Grid status\n", _grid_status(all_cells, tag, n_main),
         "## ICM search protocol\n", _PROTOCOL_SLOT + "\n",
         "## Headline scores (Section 5.1)\n",
         "Paper: Section 5.1 headline values; for GQA conditions without a headline value, the "
         "Table 6 average.\n",
         tables.to_markdown(headline),
         "## Figures 1–3, 8\n",
         _img(figs, "fig1", "Figure 1: score as % of gold"),
         "Ratios and differences are computed on the folds both conditions have. Yellow "
         f"diamonds: the paper's values ({P}; GQA from Table 6, the others from Section 5.1). "
         f"Figure 2 shows our `{paper.PAPER_MODEL_KEY}` only, as the paper's (the panel title "
         "says so when it is absent and the models are averaged instead). A bar axis that does "
         "not start at 0 says so; a true 0 is drawn as a thick line at the bottom, a missing "
         "cell as no bar.\n\n",
         _img(figs, "fig2", "Figure 2: per dataset and condition"),
         _img(figs, "fig3", "Figure 3: improvement over zero-shot"),
         _img(figs, "fig8", "Figure 8: absolute scores"),
         "## Table 6: accuracy per fold\n",
         f"Paper columns: GQA, {P}.\n", tables.to_markdown(per_fold),
         "## Significance tests between conditions\n",
         "A = first condition, B = second; `A_only`/`B_only` = claims only A/only B got right; "
         "`n_questions` = the clusters (questions) of the paired claims; `test` = the test of "
         "`p_claims`.\n",
         tables.to_markdown(sig, digits={"mean_A": 4, "mean_B": 4}),
         "## Coherence beyond accuracy: the training label sets\n",
         "Per cell that scores them (acc_matched: the paper fork's construction; acc_matched_swap: "
         "ours; bootstrap), each label set of the persona's training claims: its accuracy against "
         "gold (%), its coherence P (mean signed log-odds of each label given all the others, "
         "under the base model, the search's scorer and context order) and its consistency "
         "violations (I), averaged over personas, folds, seeds and the acc-matched sets' seeds. "
         "The paper's claim is that ICM's labels are more coherent than labels of the same "
         "accuracy (acc_matched).\n",
         tables.to_markdown(label_sets, digits={"accuracy": 1, "coherence_P": 3, "violations": 1,
                                                "n_labels": 0}),
         _img(figs, "label_sets", "Label sets: accuracy vs coherence"),
         "## Table 4: ICM label accuracy per persona (%)\n",
         "Mean over folds of the label accuracy (against gold) of the search each ICM cell used: "
         "the best of its restarts, unconstrained; non-best restarts and the collaborative "
         f"stage's constrained re-runs are not counted. Paper: {P}.\n",
         tables.to_markdown(label_acc),
         "## Tables 7, 8 / Figure 5: per-persona scores\n",
         f"Paper: PT accuracy (Table 7) and OT representation score (Table 8), zero-shot and "
         f"ICM, {P}.\n", tables.to_markdown(pp_table),
         _img(figs, "fig5", "Figure 5: per-persona scores"),
         "## Table 9: expected calibration error (15 bins)\n",
         f"Paper: GQA and OQA, {P}.\n", tables.to_markdown(ece, digits=4),
         "## Figure 6: stability (%)\n",
         "Share of two-option questions where exactly one option is judged True (P(True) > 0.5). "
         "No published numbers in our notes.\n",
         tables.to_markdown(stab), _img(figs, "fig6", "Figure 6: stability"),
         "## Figure 7: sample efficiency\n",
         "Score vs number of in-context examples (`n` from the result path; for `all`, the "
         "cells' reported number of examples).\n",
         tables.to_markdown(eff), _img(figs, "fig7", "Figure 7: sample efficiency"),
         "## Table 1: collaborative elicitation\n",
         f"Paper: GQA, k = 4 human labels (one per fold), {P}.\n",
         "`answers`: `simulated_gold` (the gold option answers, as the paper simulated its "
         "humans) or `human` (people's answers exported from a web study, `python -m "
         "plural_icm.elicitation`); for people: annotators per question, the majority's share, "
         "Fleiss' kappa between annotators, and the share of their answers equal to the gold "
         "option the simulated row used (`answers_match_gold`). The paper's numbers sit beside "
         "simulated rows only.\n",
         tables.to_markdown(collab_t, digits=2),
         _img(figs, "collaborative", "Collaborative elicitation: accuracy before and after the labels"),
         "## ICM search trajectories\n", _img(figs, "traj", "Search trajectories"),
         ]
    return "\n".join(s)


def _js_section(js_table: pd.DataFrame, js_dists: pd.DataFrame, max_rows: int = 40) -> str:
    """Jensen-Shannon distance per persona and condition, and the distributions it compares."""
    lines = ["\n## Distributional pluralism: Jensen-Shannon distance\n",
             "Per persona and condition, the mean over folds of the JS distance (base 2, 0 = the "
             "observed answer shares, 1 = disjoint) between the model's distribution over a "
             "question's options (its P(True) values normalised to sum 1) and the persona's "
             "observed shares. The paper reports this lens per persona; it publishes no numbers "
             "we could compare with. Lower is better.\n",
             tables.to_markdown(js_table, digits=3)]
    if not js_dists.empty:
        shown = js_dists.head(max_rows).assign(
            observed=lambda d: d.observed.map(lambda v: " / ".join(f"{x:.2f}" for x in v)),
            predicted=lambda d: d.predicted.map(
                lambda v: "—" if v is None else " / ".join(f"{x:.2f}" for x in v)))
        lines += [f"Observed vs predicted distributions (first {min(max_rows, len(js_dists))} "
                  f"of {len(js_dists)} question groups; all in `js_distributions.csv`):\n",
                  tables.to_markdown(shown)]
    return "\n".join(lines)


def _judge_section(headline: pd.DataFrame) -> str:
    if headline.empty or "paper_comparable" not in headline.columns:
        return ""
    bad = headline[headline.paper_comparable.eq(False)]
    if bad.empty:
        return ""
    rows = ", ".join(f"`{r.model}/{r.dataset}/{r.condition}`" for r in bad.itertuples())
    return ("\n## OvertonBench judge\n\n**Not comparable with the paper:** " + rows + " were "
            "rated by the model under test (`inference.judge_model` unset), or by a judge whose "
            "agreement with OvertonBench's human ratings nobody stated "
            "(`inference.judge_validation` unset); the paper's scores come from a judge validated "
            "against humans (rho = 0.88), and our judge prompt is ours. Their `diff` is left empty "
            "(`paper_comparable = False` in the headline table). Set `inference.judge_model` "
            "(any checkpoint, or `inference.judge_backend=openai` with "
            "`inference.judge_api_base`) and `inference.judge_validation` (where that judge's "
            "agreement with the human ratings is shown) for comparable scores.\n")


#: The page's style: readable tables and figures, nothing fetched from the network.
_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45;color:#222}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em;display:block;overflow-x:auto}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
tr:nth-child(even) td{background:#fafafa}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
code{background:#f3f3f3;padding:0 .25em;border-radius:3px}
h1,h2{border-bottom:1px solid #eee;padding-bottom:.2em}
"""


def _html(md: str) -> str:
    """The report's Markdown rendered as a page by markdown-it-py (CommonMark with tables)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(md)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>plural_icm report</title>"
            f"<style>{_CSS}</style></head><body>\n{body}</body></html>\n")


def no_cells_message(outputs: str | Path) -> str | None:
    """Why ``outputs`` holds nothing to report (None when it holds at least one cell)."""
    cells = load.load_cells(outputs, include_incomplete=True)
    if not cells.empty:
        return None
    return (f"{outputs} holds no result cells (expected results/<run_tag>/<model>/<dataset>/"
            f"<condition>/n<n>/fold<k>/seed<s>/metrics.json under it); point the report at the "
            f"outputs directory of a run (the one holding results/ and searches/, e.g. outputs/)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outputs", help="the outputs directory (holds results/, searches/, ...)")
    ap.add_argument("--out", default=None, help="report directory (default <outputs>/report)")
    ap.add_argument("--run-tag", default=None, help="run tag to report (default: main, else the "
                                                    "first found)")
    ap.add_argument("--wandb", action="store_true",
                    help="also log the tables and figures to a W&B report run of the group")
    ap.add_argument("--wandb-group", default=None,
                    help="W&B group (default grid-<run tag>, as the sweep's jobs)")
    ap.add_argument("--wandb-mode", default="offline", choices=["offline", "online"],
                    help="W&B mode (default offline; `wandb sync` later)")
    ap.add_argument("--wandb-project", default=None,
                    help="W&B project (default $WANDB_PROJECT, else plural_icm)")
    args = ap.parse_args(argv)
    if not Path(args.outputs).is_dir():
        print(f"error: {args.outputs} is not a directory", file=sys.stderr)
        return 2
    empty = no_cells_message(args.outputs)
    if empty:
        print(f"error: {empty}", file=sys.stderr)
        return 2
    written = build_report(args.outputs, args.out, args.run_tag)
    out_dir = written[-1].parent if written else None
    print(f"Report written to {out_dir}:")
    for p in written:
        print(f"  {p}")
    if args.wandb:
        from plural_icm.tracking.results import log_report

        tag = args.run_tag or tables.choose_run_tag(
            load.load_cells(args.outputs, include_incomplete=True), None) or "main"
        wb = log_report(written, outputs=args.outputs, run_tag=tag, group=args.wandb_group,
                        project=args.wandb_project, mode=args.wandb_mode)
        print(f"W&B report run {wb.run_id} ({'logged' if wb.started else 'not logged'}): "
              f"{wb.dir or 'W&B off'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
