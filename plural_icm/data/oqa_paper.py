"""The paper's own OpinionQA items and folds, read from the fork's released result files.

The fork (``Taslim-M/Unsupervised-Elicitation``, ``test_opinionsqa/results/``) released its
zero-shot predictions as one JSON list per fold, ``result_opinionsqa_<variant>_fold<k>.json``
(``k`` = 1..4), of ``{instruction, input, output, generated_output}`` objects (copied to
``../shared/data/paper_released/opinionqa``, its SOURCE.md). They hold the paper's item set:

* ``input``, the rendered claim prompt ``Question: <q>\\nClaim: The majority of <party> would
  answer this question as: '<option>'\\nI think this claim is `` (parsed into question and
  claim; a prompt of another shape is a bad row);
* ``output``, the gold label (``True`` / ``False``);
* the persona, from the claim's party phrase (Democrats, Republicans, independent ... respondents);
* the fold, from the file name (``fold1`` is our fold 0): a fold is the fork's per-persona
  held-out part, so the same question text can sit in different folds for different personas,
  and question ids are per persona and fold;
* ``generated_output``, the fork's zero-shot answer, kept in ``meta["released_output"]`` so a
  cell's predictions can be compared with it item by item.

Consistency groups: the files list a question's two options next to each other, and the paper
keeps binary questions only, so a group is a run of at most two adjacent items of one persona with
the same question text and different options. Grouping by question text alone would be wrong:
generic texts ("Please choose the statement that comes closer to your own views.") are shared by
many questions. A lone item (31 in the released files: the other option is not among the paper's
items) carries no constraint under the exactly-one rule (a lone claim is never inconsistent).
Every released item becomes a claim; bad
rows are errors, or counted skips with ``dataset.skip_bad_rows``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetSettings
from plural_icm.data.sources import (BadRows, DataFormatError, configured_path, data_dir_path,
                                     missing)

log = logging.getLogger(__name__)

#: The party phrase of the fork's claims -> (persona id, the persona's description in prompts);
#: the descriptions are the ``oqa`` loader's, so both item sets prompt alike.
PARTIES: dict[str, tuple[str, str]] = {
    "Democrats": ("Democrat", "The user is a Democrat in the United States."),
    "Republicans": ("Republican", "The user is a Republican in the United States."),
    "independent (no party affiliation) respondents": (
        "Independent", "The user is an independent (no party affiliation) in the United States."),
}
PROMPT = re.compile(r"^Question: (?P<question>.*)\nClaim: (?P<claim>The majority of (?P<party>.+?) "
                    r"would answer this question as: '(?P<option>.*)')\nI think this claim is ?$",
                    re.S)
FILE = re.compile(r"^result_opinionsqa_(?P<variant>.+)_fold(?P<fold>\d+)\.json$")
class Variant(str, Enum):
    """``dataset.options.variant``: whose released predictions the items carry."""

    zero_shot_chat = "zero_shot_chat"  # the chat model's, folder zero_shot_chat/
    zero_shot = "zero_shot"            # the base model's, folder zero_shot_base/


VARIANTS = tuple(v.value for v in Variant)
N_FOLDS = 4
FIXES = ["dataset.path=/path/to/paper_released/opinionqa (the folder of zero_shot_chat/ and "
         "zero_shot_base/), or export PLURAL_ICM_OQA_PAPER=/path/to/it",
         "paths.data_dir=/path/to/data with the files under data_dir/paper_released/opinionqa/",
         "copy test_opinionsqa/results/ of github.com/Taslim-M/Unsupervised-Elicitation "
         "(commit cd24ff9c)"]


@dataclass(frozen=True)
class OQAPaperOptions:
    """``dataset.options`` of the ``oqa_paper`` loader."""

    variant: Variant = Variant.zero_shot_chat
    """Which released files to read: ``zero_shot_chat`` (folder zero_shot_chat/) or
    ``zero_shot`` (the base model's, folder zero_shot_base/). Both hold the same items; the
    variant decides which released predictions ``meta["released_output"]`` carries."""


def declared_folds(dataset: DatasetSettings) -> int:
    """The fork's four released folds, whatever ``dataset.n_folds`` says."""
    return N_FOLDS


def fold_files(root: Path, variant: str) -> dict[int, Path]:
    """Our fold (0-based) -> its released file, for ``variant`` (one of :data:`VARIANTS`); every
    fold 1..4 must be there."""
    found: dict[int, Path] = {}
    for p in sorted(root.rglob("*.json")):
        m = FILE.match(p.name)
        if m and m.group("variant") == variant:
            k = int(m.group("fold")) - 1
            if k in found:
                raise DataFormatError(f"oqa_paper: two files for fold {k + 1}: {found[k]} and {p}")
            found[k] = p
    absent = [k + 1 for k in range(N_FOLDS) if k not in found]
    if absent:
        raise missing(f"oqa_paper: no result_opinionsqa_{variant}_fold{{{','.join(map(str, absent))}}}"
                      f".json under {root}", FIXES)
    extra = sorted(set(found) - set(range(N_FOLDS)))
    if extra:
        raise DataFormatError(f"oqa_paper: fold(s) {[k + 1 for k in extra]} under {root}; the "
                              f"fork released folds 1..{N_FOLDS}")
    return found


def parse_item(where: str, row: Any) -> dict:
    """Question, claim, option, persona and gold of one released object; raises naming the row."""
    if not isinstance(row, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(row).__name__}")
    prompt, gold = row.get("input"), row.get("output")
    if not isinstance(prompt, str) or gold not in ("True", "False"):
        raise DataFormatError(f"{where}: expected 'input' (the claim prompt) and 'output' "
                              f"('True' or 'False'), got output={gold!r}")
    m = PROMPT.match(prompt)
    if not m:
        raise DataFormatError(f"{where}: input is not 'Question: ...\\nClaim: The majority of "
                              f"<party> would answer this question as: '...'\\nI think this claim "
                              f"is ': {prompt[:120]!r}")
    party = m.group("party")
    if party not in PARTIES:
        raise DataFormatError(f"{where}: unknown party {party!r}; expected one of {list(PARTIES)}")
    out = row.get("generated_output")
    return {"question": m.group("question").strip(), "claim": m.group("claim"),
            "option": m.group("option"), "persona": PARTIES[party][0], "gold": gold == "True",
            "released_output": out if isinstance(out, str) else None}


def resolve_root(dataset: DatasetSettings, data_dir: str | Path | None) -> Path:
    path = configured_path(dataset, "oqa_paper", FIXES)
    if path is None:
        path = data_dir_path(data_dir, ["paper_released/opinionqa", "opinionqa_paper"])
    if path is None:
        raise missing("oqa_paper: dataset.path is unset", FIXES)
    return path


def load_oqa_paper(dataset: DatasetSettings[OQAPaperOptions], data_dir: str | Path | None = None
                   ) -> ClaimSet:
    variant = dataset.options.variant.value
    name = dataset.name
    root = resolve_root(dataset, data_dir)
    bad = BadRows("oqa_paper", dataset.skip_bad_rows)
    groups: list[list[dict]] = []   # runs of <= 2 adjacent items (module docstring)
    files = fold_files(root, variant)
    for fold, file in sorted(files.items()):
        try:
            rows = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{file}: not JSON ({exc})") from None
        if not isinstance(rows, list):
            raise DataFormatError(f"{file}: expected a JSON list of result objects")
        previous = None
        for i, raw in enumerate(rows):
            where = f"{file}: item {i}"
            try:
                row = parse_item(where, raw)
            except DataFormatError as exc:
                bad.bad(str(exc))
                previous = None
                continue
            row.update(where=where, index=i, file=file.name, fold=fold)
            if previous is not None and len(groups[-1]) < 2 and \
                    (previous["persona"], previous["question"]) == (row["persona"], row["question"]) \
                    and previous["option"] != row["option"]:
                groups[-1].append(row)
            else:
                groups.append([row])
            previous = row
    claims: list[Claim] = []
    folds: dict[str, int] = {}
    for g, rows in enumerate(groups):
        persona, fold = rows[0]["persona"], rows[0]["fold"]
        qid = f"{persona}/f{fold}/g{g}"
        folds[qid] = fold
        for r in rows:
            claims.append(Claim(
                item_id=f"{name}/{r['file']}/{r['index']}", persona_id=persona,
                group_id=f"{name}/{qid}", question_id=qid, option_key=r["option"],
                question=r["question"], claim=r["claim"], gold=r["gold"],
                meta={"released_output": r["released_output"], "file": r["file"],
                      "index": r["index"]}))
    bad.finish()
    personas = {pid: Persona(pid, desc) for pid, desc in PARTIES.values()
                if any(c.persona_id == pid for c in claims)}
    sizes = Counter(len([c for c in claims if c.group_id == g]) for g in {c.group_id for c in claims})
    one_true = sum(sum(r["gold"] for r in rows) == 1 for rows in groups)
    per_fold = Counter(folds[c.question_id] for c in claims)
    per_persona = Counter(c.persona_id for c in claims)
    description = (f"the fork's released OpinionQA items under {root} ({variant}): {len(claims)} "
                   f"claims, folds {dict(sorted(per_fold.items()))}, personas "
                   f"{dict(sorted(per_persona.items()))}, {len({c.question for c in claims})} question "
                   f"texts, groups by size {dict(sorted(sizes.items()))}, groups with exactly one "
                   f"True: {one_true} of {len(groups)}; {bad.summary()}.")
    log.info(description)
    return ClaimSet(name=name, personas=personas, claims=claims,
                    rule=ConsistencyRule.EXACTLY_ONE, folds=folds, description=description)

# What this dataset is, declared to the registry (dataset.loader=oqa_paper): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("oqa_paper", load_oqa_paper, OQAPaperOptions, folds=declared_folds)


__all__ = ["OQAPaperOptions", "load_oqa_paper", "declared_folds", "parse_item", "PARTIES"]
