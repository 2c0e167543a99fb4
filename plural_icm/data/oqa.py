"""OpinionQA (Santurkar et al. 2023), the release layout of ``tatsu-lab/opinions_qa``.

``dataset.path`` may point at ``human_resp/`` itself, at the folder that contains it, or at a
folder with ``data/human_resp/`` (the repository layout, e.g. ``/work/shared/data/opinionqa``).
Each wave folder ``American_Trends_Panel_W<n>/`` holds ``info.csv`` (``key, question, references,
option_ordinal, option_mapping``) and the answers as either

* ``responses.csv`` (full CodaLab release): one row per respondent, a column per question key, the
  party in ``POLPARTY`` and the survey weight in ``WEIGHT_W<n>``; answers are weighted, or
* ``POLPARTY_data.json`` (the partial copy): unweighted counts per party and answer. Its
  ``MC_options`` are corrupted (options with commas split), so options come from ``info.csv``.

``options.counts``: ``auto`` (default: ``responses.csv`` when present, else the JSON, logged),
``weighted`` or ``unweighted``.

Selection (the paper): personas Democrat, Republican, Independent ("Other" and "Refused" dropped);
binary questions, i.e. ``len(option_ordinal) == 2``; the first ``len(option_ordinal)`` entries of
``references`` are the substantive options and refusals (``Refused``, ``Not sure``, ...) are left
out of the counts. Keys whose duplicated ``info.csv`` rows disagree (e.g. ``IDIMPORT_W43``, asked
with race-specific wordings) are ambiguous and excluded (counted in the log).

Label: the option with the most (weighted) answers within the party. **Ties**: with
``options.ties="drop"`` (default) that (party, question) group is left out (logged; other parties
keep the question); ``ties="first"`` gives it to the first option. A party with no substantive
answer to a question has no group for it.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from plural_icm.data.reading import finite_number, literal, preview, read_csv, read_json
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetSettings
from plural_icm.data.sources import (BadRows, DataFormatError, configured_path, data_dir_path,
                                     missing, require_columns)

log = logging.getLogger(__name__)

PARTIES: dict[str, tuple[str, str]] = {
    "Democrat": ("Democrats", "The user is a Democrat in the United States."),
    "Republican": ("Republicans", "The user is a Republican in the United States."),
    "Independent": ("independent (no party affiliation) respondents",
                    "The user is an independent (no party affiliation) in the United States."),
}
INFO_COLUMNS = ["key", "question", "references", "option_ordinal"]
WAVE_DIR = re.compile(r"^American_Trends_Panel_W(\d+)$")
FIXES = ["dataset.path=/path/to/opinions_qa/data (the folder that contains human_resp/), or "
         "export PLURAL_ICM_OQA=/path/to/it",
         "paths.data_dir=/path/to/data with the release under data_dir/opinionqa/",
         "download the CodaLab bundle linked from https://github.com/tatsu-lab/opinions_qa "
         "(worksheet 0x6fb693719477478aac73fc07db333f69) and unpack human_resp/"]


@dataclass
class InfoRow:
    key: str
    question: str
    options: list[str]
    """The substantive options (first ``len(option_ordinal)`` references)."""
    refusals: list[str]


def _norm(text: str) -> str:
    return " ".join(str(text).split()).casefold()


def find_human_resp(path: Path) -> Path:
    for candidate in (path, path / "human_resp", path / "data" / "human_resp"):
        if candidate.is_dir() and any(WAVE_DIR.match(p.name) for p in candidate.iterdir()
                                      if p.is_dir()):
            return candidate
    raise missing(f"oqa: {path} has no American_Trends_Panel_W*/ folders (looked in {path}, "
                  f"{path}/human_resp and {path}/data/human_resp)", FIXES)


def resolve_path(dataset: DatasetSettings, data_dir: str | Path | None) -> Path:
    path = configured_path(dataset, "oqa", FIXES)
    if path is None:
        path = data_dir_path(data_dir, ["opinionqa", "opinions_qa", "oqa"])
    if path is None:
        raise missing("oqa: no local copy of the OpinionQA release (dataset.path is unset; it is "
                      "not on the Hugging Face hub)", FIXES)
    return find_human_resp(path)


def _literal_list(text: Any, where: str, column: str) -> list:
    value = literal(text, where, column, "a Python list literal")
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(f"{where}: column {column!r} must be a list, got "
                              f"{str(text)[:80]!r}")
    return list(value)


def read_info(wave_dir: Path, bad: BadRows) -> tuple[dict[str, InfoRow], set[str]]:
    """(key -> InfoRow, ambiguous keys whose duplicated rows disagree)."""
    path = wave_dir / "info.csv"
    if not path.is_file():
        raise missing(f"oqa: {path} is missing (every wave folder needs info.csv)", FIXES)
    df = read_csv(path, dtype=str, keep_default_na=False)
    require_columns(df.columns, INFO_COLUMNS, str(path))
    out: dict[str, InfoRow] = {}
    ambiguous: set[str] = set()
    for i, rec in enumerate(df.to_dict("records")):
        where = f"{path}: data row {i + 1} (key {rec['key']!r})"
        try:
            refs = [str(r) for r in _literal_list(rec["references"], where, "references")]
            ordinal = _literal_list(rec["option_ordinal"], where, "option_ordinal")
            if not 1 <= len(ordinal) <= len(refs):
                raise DataFormatError(f"{where}: option_ordinal has {len(ordinal)} entries but "
                                      f"references has {len(refs)}; expected 1..{len(refs)}")
        except DataFormatError as exc:
            bad.bad(str(exc))
            continue
        row = InfoRow(rec["key"].strip(), str(rec["question"]).strip(), refs[:len(ordinal)],
                      refs[len(ordinal):])
        old = out.get(row.key)
        if old is not None and (old.question, old.options) != (row.question, row.options):
            ambiguous.add(row.key)
        out.setdefault(row.key, row)
    return out, ambiguous


def counts_from_json(wave_dir: Path) -> dict[str, dict[str, dict[str, float]]]:
    path = wave_dir / "POLPARTY_data.json"
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected an object {{key: {{party: {{answer: count}}}}}}")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise DataFormatError(f"{path}: entry {key!r} must be an object of parties")
        parties = {}
        for party, counts in entry.items():
            if party in ("MC_options", "question_text"):
                continue
            if not isinstance(counts, dict):
                raise DataFormatError(f"{path}: {key!r} -> {party!r} must map answers to "
                                      f"non-negative counts, got {preview(counts)}")
            table = {str(a): finite_number(v, f"{path}: {key!r} -> {party!r} -> {a!r}", "the count")
                     for a, v in counts.items()}
            if any(v < 0 for v in table.values()):
                raise DataFormatError(f"{path}: {key!r} -> {party!r} must map answers to "
                                      f"non-negative counts, got {preview(counts)}")
            parties[party] = table
        out[key] = parties
    return out


def counts_from_responses(wave_dir: Path, wave: str, keys: list[str]
                          ) -> dict[str, dict[str, dict[str, float]]]:
    path = wave_dir / "responses.csv"
    weight = f"WEIGHT_W{wave}"
    header = read_csv(path, nrows=0).columns
    require_columns(header, ["POLPARTY", weight], str(path))
    use = [k for k in keys if k in header]
    df = read_csv(path, usecols=use + ["POLPARTY", weight], dtype={k: str for k in use})
    w = pd.to_numeric(df[weight], errors="coerce")
    bad_w = w.isna() | ~np.isfinite(w.astype(float)) | (w < 0)
    if bad_w.any():
        row = int(bad_w.to_numpy().nonzero()[0][0])
        raise DataFormatError(f"{path}: data row {row + 1}: column {weight} must be a "
                              f"finite non-negative number, got {df[weight].iloc[row]!r}")
    df[weight] = w
    out: dict[str, dict[str, dict[str, float]]] = {}
    for key in use:
        sub = df[["POLPARTY", key, weight]].dropna(subset=["POLPARTY", key])
        grouped = sub.groupby(["POLPARTY", key])[weight].sum()
        table: dict[str, dict[str, float]] = {}
        for (party, answer), value in grouped.items():
            table.setdefault(str(party), {})[str(answer)] = float(value)
        out[key] = table
    return out


class Counts(str, Enum):
    """``dataset.options.counts``: which answer counts label a (party, question) group."""

    auto = "auto"              # responses.csv (weighted) when present, else POLPARTY_data.json
    weighted = "weighted"      # responses.csv, answers weighted by WEIGHT_W<wave> (the paper)
    unweighted = "unweighted"  # POLPARTY_data.json's counts


class Ties(str, Enum):
    """``dataset.options.ties``: a (party, question) plurality tie."""

    drop = "drop"    # no label: the group is left out
    first = "first"  # the first option wins


@dataclass(frozen=True)
class OQAOptions:
    """``dataset.options`` of the ``oqa`` loader (validated by :mod:`plural_icm.data.registry`)."""

    counts: Counts = Counts.auto
    ties: Ties = Ties.drop


def load_oqa(dataset: DatasetSettings[OQAOptions], data_dir: str | Path | None = None) -> ClaimSet:
    mode = dataset.options.counts
    ties = dataset.options.ties.value
    root = resolve_path(dataset, data_dir)
    bad = BadRows("oqa", dataset.skip_bad_rows)
    waves = sorted((p for p in root.iterdir() if p.is_dir() and WAVE_DIR.match(p.name)),
                   key=lambda p: int(WAVE_DIR.match(p.name).group(1)))
    claims: list[Claim] = []
    n = {"binary": 0, "ambiguous": 0, "ties": 0, "no_answers": 0, "no_counts": 0,
         "weighted_waves": 0, "unweighted_waves": 0}
    for wave_dir in waves:
        wave = WAVE_DIR.match(wave_dir.name).group(1)
        info, ambiguous = read_info(wave_dir, bad)
        binary = [k for k, row in info.items() if len(row.options) == 2]
        n["ambiguous"] += len(ambiguous & set(binary))
        binary = [k for k in binary if k not in ambiguous]
        has_resp = (wave_dir / "responses.csv").is_file()
        has_json = (wave_dir / "POLPARTY_data.json").is_file()
        if mode is Counts.weighted or (mode is Counts.auto and has_resp):
            if not has_resp:
                raise missing(f"oqa: {wave_dir}/responses.csv is missing "
                              f"(dataset.options.counts=weighted)",
                              ["dataset.options.counts=unweighted (use POLPARTY_data.json)",
                               *FIXES])
            counts = counts_from_responses(wave_dir, wave, binary)
            n["weighted_waves"] += 1
        else:
            if not has_json:
                raise missing(f"oqa: {wave_dir} has neither responses.csv nor POLPARTY_data.json",
                              FIXES)
            counts = counts_from_json(wave_dir)
            n["unweighted_waves"] += 1
        for key in binary:
            row = info[key]
            if key not in counts:
                n["no_counts"] += 1
                continue
            n["binary"] += 1
            lookup = {_norm(o): j for j, o in enumerate(row.options)}
            refusals = {_norm(o) for o in row.refusals}
            for party, (plural, _) in PARTIES.items():
                table = counts[key].get(party, {})
                votes = [0.0] * len(row.options)
                for answer, value in table.items():
                    norm = _norm(answer)
                    if norm in lookup:
                        votes[lookup[norm]] += value
                    elif norm not in refusals and norm not in ("refused", "nan", ""):
                        bad.bad(f"{wave_dir}: question {key!r}, party {party!r}: answer "
                                f"{answer!r} is not one of the info.csv references "
                                f"{row.options + row.refusals}")
                total = sum(votes)
                if not math.isfinite(total):
                    bad.bad(f"{wave_dir}: question {key!r}, party {party!r}: the counts sum to "
                            f"{total} (overflow); expected finite counts")
                    continue
                if total <= 0:
                    n["no_answers"] += 1
                    continue
                top = max(votes)
                winners = [j for j, v in enumerate(votes) if v == top]
                if len(winners) > 1:
                    n["ties"] += 1
                    log.info("oqa: tie in %s for %s (%s)", key, party, votes)
                    if ties == "drop":
                        continue
                label = winners[0]
                dist = [v / total for v in votes]
                for j, option in enumerate(row.options):
                    claims.append(Claim(
                        item_id=f"oqa/{party}/{key}/{j}",
                        persona_id=party,
                        group_id=f"oqa/{party}/{key}",
                        question_id=key,
                        option_key=str(j),
                        question=row.question,
                        claim=f"The majority of {plural} would answer this question as: "
                              f"'{option}'",
                        gold=(j == label),
                        meta={"options": list(row.options), "option_index": j,
                              "distribution": dist, "counts": votes, "wave": f"W{wave}",
                              "weighted": has_resp and mode is not Counts.unweighted}))
    bad.finish()
    if not waves:
        raise missing(f"oqa: no American_Trends_Panel_W* folders in {root}", FIXES)
    if n["unweighted_waves"]:
        log.warning("oqa: %d wave(s) use the UNWEIGHTED counts of POLPARTY_data.json "
                    "(no responses.csv); the paper weights answers by WEIGHT_W<wave>",
                    n["unweighted_waves"])
    if n["ties"]:
        log.warning("oqa: %d (party, question) tie(s); ties=%s", n["ties"], ties)
    personas = {p: Persona(p, desc) for p, (_, desc) in PARTIES.items()}
    description = (f"OpinionQA from {root}: {n['binary']} binary questions with counts "
                   f"({n['weighted_waves']} weighted / {n['unweighted_waves']} unweighted "
                   f"waves); {n['no_counts']} binary questions without counts, "
                   f"{n['ambiguous']} ambiguous keys, {n['ties']} party ties (ties={ties}), "
                   f"{n['no_answers']} party groups without answers; {bad.count} bad row(s) "
                   f"skipped.")
    log.info(description)
    return ClaimSet(name=dataset.name, personas=personas, claims=claims,
                    rule=ConsistencyRule.EXACTLY_ONE, description=description)


# What this dataset is, declared to the registry (dataset.loader=oqa): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("oqa", load_oqa, OQAOptions, kfold=True)
