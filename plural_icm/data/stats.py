"""Dataset statistics: questions, claims and label balance per persona x fold.

``python launch.py stage=data_stats dataset=<name>`` can print :func:`data_stats_report`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from plural_icm.data.records import ClaimSet

COLUMNS = ["persona", "fold", "questions", "groups", "claims", "true_fraction",
           "first_option_true"]


def dataset_stats(claimset: ClaimSet) -> pd.DataFrame:
    """One row per persona x fold plus per-persona ``all`` rows and a ``TOTAL`` row.

    ``fold`` is the fold id as a string (``"all"`` for the totals); ``true_fraction`` is the share
    of claims whose gold label is True (NaN when no claim has a gold label);
    ``first_option_true`` the share of groups whose first claim (smallest ``option_key``: the first
    survey option, PT's order ``AB``) is True, which shows position bias in the gold labels.
    """
    rows = []
    for c in claimset.claims:
        rows.append({"persona": c.persona_id, "fold": claimset.folds.get(c.question_id, -1),
                     "question": c.question_id, "group": c.group_id,
                     "key": c.option_key,
                     "gold": float("nan") if c.gold is None else float(c.gold)})
    df = pd.DataFrame(rows, columns=["persona", "fold", "question", "group", "key", "gold"])
    first = df.sort_values(["group", "key"]).groupby("group")["gold"].first()
    if df.empty:
        return pd.DataFrame(columns=COLUMNS)

    def summarise(part: pd.DataFrame) -> dict[str, Any]:
        return {"questions": part["question"].nunique(), "groups": part["group"].nunique(),
                "claims": len(part), "true_fraction": part["gold"].mean(),
                "first_option_true": first.loc[part["group"].unique()].mean()}

    out = []
    for persona in sorted(df["persona"].unique()):
        sub = df[df["persona"] == persona]
        for fold in sorted(sub["fold"].unique()):
            out.append({"persona": persona, "fold": str(fold),
                        **summarise(sub[sub["fold"] == fold])})
        out.append({"persona": persona, "fold": "all", **summarise(sub)})
    out.append({"persona": "TOTAL", "fold": "all", **summarise(df)})
    return pd.DataFrame(out, columns=COLUMNS)


def format_stats(claimset_or_df: ClaimSet | pd.DataFrame, title: str | None = None) -> str:
    """A printable table (accepts a ClaimSet or the output of :func:`dataset_stats`)."""
    if isinstance(claimset_or_df, ClaimSet):
        df = dataset_stats(claimset_or_df)
        title = title or (f"dataset {claimset_or_df.name}: {len(claimset_or_df.personas)} "
                          f"personas, rule={claimset_or_df.rule.value}")
        note = claimset_or_df.description
    else:
        df, note = claimset_or_df, ""
    lines = [title] if title else []
    if note:
        lines.append(note)
    if df.empty:
        lines.append("(no claims)")
    else:
        lines.append(df.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return "\n".join(lines)


def data_stats_report(cfg: Any, data_dir: str | Path | None = None) -> str:
    """Everything ``stage=data_stats`` prints for one dataset: ``cfg`` is its
    :class:`~plural_icm.data.settings.DatasetSettings`, or a config
    :func:`plural_icm.data.registry.dataset_settings` converts."""
    from plural_icm.data.registry import dataset_settings, load_claimset, loader_stats_text

    dataset = dataset_settings(cfg)
    claimset = load_claimset(dataset, data_dir)
    text = format_stats(claimset)
    extra = loader_stats_text(dataset, data_dir)  # what the dataset declares (LoaderSpec.stats)
    if extra:
        text += "\n\n" + extra
    return text
