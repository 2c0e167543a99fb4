"""ICM claim files: the item format of Wen et al.'s ICM code, the paper's fork and the authors'
own copies (``../shared/data/gqa_paper_claims``: the paper's GQA items).

A file is a JSON list or JSONL of objects with at least ``question``, ``choice`` (the claim
text), ``label`` (0/1 or a bool) and ``consistency_id`` (the claims of one question or pair share
it); optional ``persona``, ``question_id``, ``uid``, ``raw_choice_<k>``. ``dataset.path`` is one
such file or a folder searched recursively for ``*.json`` / ``*.jsonl``.

Mapping onto the internal schema:

* persona: the row's ``persona`` (else ``options.persona``), shown in prompts through
  ``options.persona_template`` (``{persona}`` is replaced);
* consistency group: (persona, ``consistency_id``) under ``options.rule`` (``exactly_one``, the
  default, or ``none``): the rule comes from the config, never from the labels;
* question id: ``question_id`` when present, else the consistency id; the claim text is kept
  verbatim (the authors word GQA claims ``People from <Country> would answer ... as: '<option>'``).

Folds (``options.folds``): ``cv`` (default) deals question texts to ``dataset.n_folds`` folds like
every other dataset (:func:`plural_icm.data.folds.assign_folds`: the paper's fork used four parts
per country); ``halves`` follows the copy's own ``train/`` and ``test/`` folders per persona: fold 0
is the test half, fold 1 the train half (question ids are then per persona, as the halves are).

Degenerate items never become claims; each skip is counted in the description: a row without
the required fields or with a label that is not 0/1 (a bad row: an error unless
``dataset.skip_bad_rows``), and under ``exactly_one`` a group with fewer than two claims, two
equal claim texts, or not exactly one True label (its gold would be meaningless).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from plural_icm.data.reading import read_text
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetSettings
from plural_icm.data.sources import (BadRows, DataFormatError, configured_path, data_dir_path,
                                     missing)

log = logging.getLogger(__name__)

REQUIRED = ("question", "choice", "label", "consistency_id")
FIXES = ["dataset.path=/path/to/claims.jsonl (or a folder of *.json / *.jsonl claim files)",
         "paths.data_dir=/path/to/data with the files under data_dir/gqa_paper_claims/",
         "export PLURAL_ICM_GQA_CLAIMS=/path/to/gqa_paper_claims"]
HALVES = {"test": 0, "train": 1}


def claim_files(path: Path) -> list[Path]:
    """The claim files under ``path`` (itself when a file), sorted for a stable order."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl"))
    if not files:
        raise missing(f"claims: no *.json or *.jsonl files under {path}", FIXES)
    return files


def _strict_object(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are unique (``{"label": 0, "label": 1}`` is refused, never read
    as its last value)."""
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _loads(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_strict_object)


def read_rows(file: Path, bad: BadRows) -> list[tuple[str, dict]]:
    """(where, object) per claim row of a JSON list or JSONL file."""
    text = read_text(file)  # UTF-8 or an error naming the line; regular files only
    if text.lstrip().startswith("["):
        try:
            rows = _loads(text)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{file}: line {exc.lineno}: not a JSON list of claim objects "
                                  f"({exc.msg})") from None
        except RecursionError:
            raise DataFormatError(f"{file}: nested too deeply to be a JSON list of claim "
                                  f"objects") from None
        except ValueError as exc:
            raise DataFormatError(f"{file}: {exc} in a claim object") from None
        items = [(f"{file}: item {i}", r) for i, r in enumerate(rows)]
    else:
        items = []
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                items.append((f"{file}: line {i}", _loads(line)))
            except json.JSONDecodeError as exc:
                bad.bad(f"{file}: line {i}: not a JSON object ({exc.msg})")
            except RecursionError:
                bad.bad(f"{file}: line {i}: nested too deeply")
            except ValueError as exc:
                bad.bad(f"{file}: line {i}: {exc}")
    out = []
    for where, row in items:
        if not isinstance(row, dict):
            bad.bad(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        out.append((where, row))
    return out


def parse_row(where: str, row: dict, default_persona: str | None) -> dict:
    """The fields of one claim row, checked; raises DataFormatError naming the row."""
    lacking = [k for k in REQUIRED if row.get(k) in (None, "")]
    persona = row.get("persona", default_persona)
    if persona in (None, ""):
        lacking.append("persona (or dataset.options.persona)")
    if lacking:
        raise DataFormatError(f"{where}: missing field(s) {lacking}; expected at least "
                              f"{list(REQUIRED)}")
    label = row["label"]
    if isinstance(label, bool) or label in (0, 1):
        gold = bool(label)
    else:
        raise DataFormatError(f"{where}: label={label!r}; expected 0, 1, true or false")
    for key in ("question", "choice"):
        if not isinstance(row[key], str):
            raise DataFormatError(f"{where}: {key} is a {type(row[key]).__name__}; expected a "
                                  f"string")
    if not isinstance(persona, str):
        raise DataFormatError(f"{where}: persona is a {type(persona).__name__}; expected a string")
    for key in ("consistency_id", "question_id"):
        if isinstance(row.get(key), (dict, list, float)):
            raise DataFormatError(f"{where}: {key}={str(row[key])[:40]!r}; expected a string or "
                                  f"an integer")
    question, choice = row["question"].strip(), row["choice"].strip()
    if not question or not choice:
        raise DataFormatError(f"{where}: empty question or choice")
    return {"persona": str(persona).strip(), "question": question, "choice": choice,
            "gold": gold, "consistency_id": str(row["consistency_id"]),
            "question_id": str(row.get("question_id", row["consistency_id"])),
            "uid": row.get("uid"),
            "raw_choices": [str(row[k]) for k in sorted(row) if k.startswith("raw_choice_")]}


def resolve_path(dataset: DatasetSettings, data_dir: str | Path | None) -> Path:
    path = configured_path(dataset, "claims", FIXES)
    if path is None:
        path = data_dir_path(data_dir, ["gqa_paper_claims"])
    if path is None:
        raise missing("claims: dataset.path is unset", FIXES)
    return path


def _group_problem(rows: list[dict]) -> str | None:
    """Why an exactly-one group is degenerate, or None."""
    if len(rows) < 2:
        return "single_claim_group"
    if len({" ".join(r["choice"].split()).casefold() for r in rows}) < len(rows):
        return "duplicate_claims"
    if sum(r["gold"] for r in rows) != 1:
        return "not_exactly_one_true"
    return None


def _check_group_question(persona: str, cid: str, rows: list[dict]) -> None:
    """The claims of one consistency group answer one question: two question texts under one
    ``consistency_id`` would become one exactly-one group (and, under ``folds=halves``, move test
    claims into training). An error naming both."""
    texts = {" ".join(r["question"].split()).casefold(): r for r in rows}
    if len(texts) > 1:
        a, b = list(texts.values())[:2]
        raise DataFormatError(
            f"claims: consistency_id {cid!r} of persona {persona!r} holds {len(texts)} different "
            f"questions: {a['question'][:80]!r} ({a['where']}) and {b['question'][:80]!r} "
            f"({b['where']}); the claims of one group must answer one question")


class Rule(str, Enum):
    """``dataset.options.rule``: the :class:`ConsistencyRule` of every group (from the config,
    never from the labels)."""

    exactly_one = ConsistencyRule.EXACTLY_ONE.value
    none = ConsistencyRule.NONE.value


class Folds(str, Enum):
    """``dataset.options.folds``."""

    cv = "cv"          # dataset.n_folds folds over question texts, assigned by the registry
    halves = "halves"  # the copy's own test/ (fold 0) and train/ (fold 1) halves


@dataclass(frozen=True)
class ClaimsOptions:
    """``dataset.options`` of the ``claims`` loader (the typed schema the registry validates)."""

    rule: Rule = Rule.exactly_one
    folds: Folds = Folds.cv
    persona_template: str = "{persona}"
    persona: Optional[str] = None


def load_claims(dataset: DatasetSettings[ClaimsOptions], data_dir: str | Path | None = None
                ) -> ClaimSet:
    opts = dataset.options
    rule = ConsistencyRule(opts.rule.value)
    folds_mode = opts.folds.value
    template = opts.persona_template
    default_persona = opts.persona
    name = dataset.name
    root = resolve_path(dataset, data_dir)
    bad = BadRows("claims", dataset.skip_bad_rows)
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    half_of: dict[tuple[str, str], int] = {}
    files = claim_files(root)
    for file in files:
        half = HALVES.get(file.parent.name)
        if folds_mode == "halves" and half is None:
            raise DataFormatError(f"{file}: dataset.options.folds=halves needs the files under "
                                  f"train/ and test/ folders")
        for where, raw in read_rows(file, bad):
            try:
                row = parse_row(where, raw, default_persona)
            except DataFormatError as exc:
                bad.bad(str(exc))
                continue
            row.update(file=str(file.relative_to(root)) if root.is_dir() else file.name,
                       where=where)
            key = (row["persona"], row["consistency_id"])
            groups[key].append(row)
            if half is not None:
                half_of[key] = half
    skipped: dict[str, int] = defaultdict(int)
    claims: list[Claim] = []
    folds: dict[str, int] = {}
    for (persona, cid), rows in groups.items():
        _check_group_question(persona, cid, rows)
        problem = _group_problem(rows) if rule is ConsistencyRule.EXACTLY_ONE else None
        if problem:
            skipped[problem] += 1
            log.info("claims: group (%s, %s) at %s skipped: %s", persona, cid, rows[0]["where"],
                     problem)
            continue
        qid = rows[0]["question_id"]
        if folds_mode == "halves":
            qid = f"{persona}/{qid}"  # the halves are per persona
            folds[qid] = half_of[(persona, cid)]
        options = rows[0]["raw_choices"] or [r["choice"] for r in rows]
        for j, r in enumerate(rows):
            claims.append(Claim(
                item_id=f"{name}/{persona}/{cid}/{j}", persona_id=persona,
                group_id=f"{name}/{persona}/{cid}", question_id=qid, option_key=str(j),
                question=r["question"], claim=r["choice"], gold=r["gold"],
                meta={"options": options, "option_index": j, "file": r["file"],
                      "uid": r["uid"], "consistency_id": cid,
                      "options_are_claims": not rows[0]["raw_choices"]}))
    personas = {p: Persona(p, template.replace("{persona}", p))
                for p in sorted({c.persona_id for c in claims})}
    bad.finish()
    skips = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items())) or "none"
    description = (f"ICM claim files under {root} ({len(files)} file(s)): {len(claims)} claims, "
                   f"{len({c.group_id for c in claims})} groups, "
                   f"{len({c.question for c in claims})} distinct question texts, "
                   f"{len(personas)} personas; rule={rule.value}, folds={folds_mode}; degenerate "
                   f"groups skipped: {skips}; {bad.summary()}.")
    if skipped:
        log.warning(description)
    else:
        log.info(description)
    cs = ClaimSet(name=name, personas=personas, claims=claims, rule=rule,
                  description=description)
    if folds_mode == "halves":
        cs.folds = folds  # kept by the registry; cv folds are assigned there like any dataset's
    return cs


def declared_folds(dataset: DatasetSettings[ClaimsOptions]) -> int:
    """``halves``: the copy's two halves (fold 0 test, fold 1 train); ``cv``: ``dataset.n_folds``."""
    if dataset.options.folds is Folds.halves:
        return len(HALVES)
    return dataset.n_folds


# What this dataset is, declared to the registry (dataset.loader=claims): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("claims", load_claims, ClaimsOptions, kfold=True, folds=declared_folds)
