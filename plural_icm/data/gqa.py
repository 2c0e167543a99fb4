"""GlobalOpinionQA (Durmus et al. 2023): hub ``Anthropic/llm_global_opinions``, one CSV
``data/global_opinions.csv``.

Columns ``question``, ``options`` (a Python list literal), ``selections`` (the repr of a
``defaultdict(<class 'list'>, {country: [fraction per option]})``) and ``source``. Literals are
parsed with :func:`ast.literal_eval` after stripping the ``defaultdict`` wrapper; nothing is
``eval``-ed.

Selection (the paper keeps 180 questions):

* the countries of ``options.countries`` (13 by default), and only questions where *every* one of
  them has a label ("complete labels");
* questions with ``2 <= n <= options.max_options`` options, where ``n`` counts the non-substantive
  options (``DK/Refused``, ``Don't know``, ``No answer``, ``(VOL) ...``, ``Refused``, ``Not sure``)
  only when ``options.count_nonsubstantive`` is true. :func:`question_counts` reports both settings.

Label of (country, question): the plurality option over the substantive options. Non-substantive
options never become claims and are left out of ``meta["distribution"]`` (renormalised). A country
whose substantive shares are all zero (question not asked there) or absent has no label.
**Ties** (two substantive options with the same largest share): with ``options.ties="drop"``
(default) the country has no label, so the question is incomplete and excluded; with
``ties="first"`` the option listed first wins. Either way the number of ties is logged and put in
the dataset description.

Real-row quirks (each counted in the dataset description, never silent):

* options that are numbers (``["Not important at all", 1.0, 2.0, ...]``) become text (``'1'``);
* non-substantive options as a prefix or suffix (``Other (VOL)``, ``Missing; Not available``,
  ``Other missing; ...``, ``No answer``, ``Don't know``) are recognised (:func:`is_nonsubstantive`);
* the row with an empty question, and rows repeating an earlier row's question and options
  (the first is kept, so one question never gets two ids in two folds), are skipped;
* malformed rows (an unparseable literal, duplicate or empty options such as ``['Yes', 'Yes']``
  or ``['', ' ']``, a share count that differs from the option count) are skipped with a counted
  reason when ``dataset.skip_bad_rows`` is true (the GQA config's default) and an error naming the
  file and row otherwise (strict);
* a country whose shares do not sum to 1 +- ``options.share_sum_tolerance`` (``[0.7, 0.7]``) is
  dropped from that row (no label; counted), never renormalised; strict: an error.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import pandas as pd

from plural_icm.data.reading import check_field_size, check_option_range, read_csv
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetSettings
from plural_icm.data.sources import (BadRows, DataFormatError, configured_path, data_dir_path,
                                     download_allowed, hub_file, missing, require_columns)

log = logging.getLogger(__name__)

HUB_REPO = "Anthropic/llm_global_opinions"
HUB_FILE = "data/global_opinions.csv"
FILE_NAME = "global_opinions.csv"
COUNTRIES = ["Brazil", "Britain", "France", "Germany", "Indonesia", "Japan", "Jordan", "Lebanon",
             "Mexico", "Nigeria", "Pakistan", "Russia", "Turkey"]
COLUMNS = ["question", "options", "selections", "source"]
FIXES = [f"dataset.path=/path/to/{FILE_NAME} (or the folder that holds it)",
         f"paths.data_dir=/path/to/data with {FILE_NAME} under data_dir/llm_global_opinions/",
         f"huggingface-cli download {HUB_REPO} {HUB_FILE} --repo-type dataset --local-dir "
         f"./llm_global_opinions, then dataset.path=./llm_global_opinions/{HUB_FILE}"]

# Non-substantive options: as a prefix (``DK/Refused``, ``(VOL) Don't know``, ``No answer``,
# ``Missing; Not available``, ``Other missing; Multiple answers Mail (EVS)``) or, for Pew's
# volunteered answers, anywhere (``Other (VOL)``, ``Both (VOL)``, ``Depends on the situation (VOL)``).
_NONSUBSTANTIVE = re.compile(
    r"^\s*(\(vol\.?\)|dk\b|dk/|don[’']?t know|dont know|no answer|refused|not sure|"
    r"decline to answer|no opinion|(other\s+)?missing\b)", re.IGNORECASE)
_NONSUBSTANTIVE_ANYWHERE = re.compile(r"\(vol\.?\)|\bnot available\b", re.IGNORECASE)
_WRAPPER = re.compile(r"^\s*defaultdict\(\s*<class '(list|dict)'>\s*,\s*(?P<body>.*)\)\s*$", re.S)


class RowError(DataFormatError):
    """A malformed row, with the short ``reason`` under which a skip of it is counted."""

    def __init__(self, text: str, reason: str = "malformed"):
        super().__init__(text)
        self.reason = reason


def is_nonsubstantive(option: str) -> bool:
    """DK/Refused, Don't know, No answer, Refused, Not sure, Missing ..., (VOL) anywhere."""
    return bool(_NONSUBSTANTIVE.match(option) or _NONSUBSTANTIVE_ANYWHERE.search(option))


def _option_text(value: Any) -> str | None:
    """An option as text: strings stripped; numbers (real rows hold scale points such as ``1.0``)
    written without a spurious ``.0``; anything else None."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    return None


def parse_options(text: Any, where: str) -> tuple[list[str], bool]:
    """(the row's options as strings, whether some were numbers); duplicate or empty options make
    the row malformed."""
    check_field_size(text, where, "options")
    try:
        value = ast.literal_eval(str(text))
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise RowError(f"{where}: column 'options' is not a Python list literal "
                       f"({type(exc).__name__}): {str(text)[:80]!r}") from None
    if not isinstance(value, (list, tuple)):
        raise RowError(f"{where}: column 'options' must be a list of strings, got "
                       f"{str(text)[:80]!r}")
    if not value:
        raise RowError(f"{where}: column 'options' is an empty list", "empty_option")
    options = [_option_text(o) for o in value]
    if any(o is None for o in options):
        raise RowError(f"{where}: column 'options' must hold strings or numbers, got "
                       f"{str(text)[:80]!r}")
    if any(not o for o in options):
        raise RowError(f"{where}: column 'options' has an empty option: {str(text)[:80]!r}",
                       "empty_option")
    folded = [" ".join(o.split()).casefold() for o in options]
    if len(set(folded)) < len(folded):
        raise RowError(f"{where}: column 'options' lists an option twice: {str(text)[:80]!r}; "
                       f"expected distinct options", "duplicate_options")
    return options, any(not isinstance(o, str) for o in value)


def parse_selections(text: Any, where: str) -> dict[str, list[float]]:
    """``defaultdict(<class 'list'>, {...})`` -> dict, via ast.literal_eval of the inner dict."""
    raw = str(text)
    match = _WRAPPER.match(raw)
    body = match.group("body") if match else raw
    check_field_size(raw, where, "selections")
    try:
        value = ast.literal_eval(body)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise RowError(f"{where}: column 'selections' is not "
                       f"\"defaultdict(<class 'list'>, {{country: [shares]}})\" "
                       f"({type(exc).__name__}): {raw[:80]!r}") from None
    if not isinstance(value, dict):
        raise RowError(f"{where}: column 'selections' must hold a dict of country -> "
                       f"list of shares, got {type(value).__name__}")
    out: dict[str, list[float]] = {}
    for country, shares in value.items():
        if not isinstance(shares, (list, tuple)) or not all(
                isinstance(s, (int, float)) and not isinstance(s, bool) for s in shares):
            raise RowError(f"{where}: selections[{country!r}] must be a list of numbers, "
                           f"got {str(shares)[:60]!r}")
        try:
            floats = [float(s) for s in shares]
        except OverflowError:
            floats = [math.inf]
        if any(not math.isfinite(s) or s < 0 for s in floats):
            raise RowError(f"{where}: selections[{country!r}] has a negative or non-finite "
                           f"share: {str(list(shares))[:60]}")
        out[str(country).strip()] = floats
    return out


@dataclass
class GQAQuestion:
    row: int
    question_id: str
    question: str
    options: list[str]
    selections: dict[str, list[float]]
    source: str
    substantive: list[int] = field(default_factory=list)
    """Indices (into ``options``) of the substantive options."""


def resolve_path(dataset: DatasetSettings, data_dir: str | Path | None) -> Path:
    path = configured_path(dataset, "gqa", FIXES)
    if path is None:
        path = data_dir_path(data_dir, ["llm_global_opinions", "global_opinions", "gqa"])
    if path is not None:
        if path.is_dir():
            for candidate in (path / FILE_NAME, path / "data" / FILE_NAME):
                if candidate.is_file():
                    return candidate
            raise missing(f"gqa: no {FILE_NAME} in {path} (nor in {path}/data)", FIXES)
        return path
    if not download_allowed(dataset):
        raise missing("gqa: no local copy of global_opinions.csv (dataset.path is unset) and "
                      "downloads are off", FIXES)
    return hub_file(HUB_REPO, HUB_FILE, "gqa", FIXES)


@dataclass
class ReadReport:
    """What :func:`read_questions` skipped or changed, each with a count (never silent)."""

    rows: int = 0
    empty_question: int = 0
    duplicate_rows: int = 0
    """Rows repeating an earlier row's question and options (the first is kept)."""
    numeric_options: int = 0
    """Rows whose options include numbers (``1.0``), kept with the numbers as text (``'1'``)."""
    bad_share_sum: int = 0
    """(row, country) entries whose shares do not sum to about 1: that country gets no label."""

    def text(self) -> str:
        return (f"{self.rows} rows; skipped {self.empty_question} empty-question row(s), "
                f"{self.duplicate_rows} duplicate row(s); {self.numeric_options} row(s) with "
                f"numeric options kept as text; {self.bad_share_sum} country entr(ies) whose "
                f"shares do not sum to ~1 dropped")


def _check_share_sums(selections: dict[str, list[float]], tolerance: float, where: str,
                      bad: BadRows) -> int:
    """Drop (in place) countries whose non-zero shares do not sum to 1 +- ``tolerance``.

    All-zero shares mean "not asked there" and stay (no label). Renormalising [0.7, 0.7] would
    give a plausible but invented distribution, so such entries are removed and counted; with
    ``skip_bad_rows=false`` (strict) they are an error.
    """
    dropped = 0
    for country in list(selections):
        total = sum(selections[country])
        if total > 0 and abs(total - 1.0) > tolerance:
            if not bad.skip:
                raise RowError(f"{where}: selections[{country!r}] sums to {total:.3f}; expected "
                               f"shares summing to 1 +- {tolerance} (dataset.options."
                               f"share_sum_tolerance) (set dataset.skip_bad_rows=true to skip "
                               f"such entries)", "bad_share_sum")
            del selections[country]
            dropped += 1
    return dropped


def read_questions(path: str | Path, bad: BadRows, tolerance: float
                   ) -> tuple[list[GQAQuestion], ReadReport]:
    """Parse the CSV into questions; malformed rows go to ``bad`` (an error or a counted skip),
    quirks of real rows (numeric options, duplicates, empty question) are counted in the report."""
    path = Path(path)
    df = read_csv(path, dtype=str, keep_default_na=False)
    require_columns(df.columns, COLUMNS, str(path))
    questions: list[GQAQuestion] = []
    seen: set[tuple[str, ...]] = set()
    rep = ReadReport()
    for i, rec in enumerate(df.to_dict("records")):
        rep.rows += 1
        where = f"{path}: data row {i + 1} (after the header)"
        text = str(rec["question"]).strip()
        if not text:
            rep.empty_question += 1
            continue
        try:
            options, numeric = parse_options(rec["options"], where)
            selections = parse_selections(rec["selections"], where)
            for country, shares in selections.items():
                if len(shares) != len(options):
                    raise RowError(
                        f"{where}: selections[{country!r}] has {len(shares)} shares but the row "
                        f"has {len(options)} options; expected one share per option",
                        "share_count")
            rep.bad_share_sum += _check_share_sums(selections, tolerance, where, bad)
        except RowError as exc:
            bad.bad(str(exc), exc.reason)
            continue
        key = (" ".join(text.split()).casefold(), *options)
        if key in seen:
            rep.duplicate_rows += 1
            log.info("%s: repeats an earlier row's question and options; skipped", where)
            continue
        seen.add(key)
        rep.numeric_options += numeric
        digest = hashlib.sha1("\x1f".join([text, *options, str(rec["source"])]).encode()
                              ).hexdigest()[:10]
        questions.append(GQAQuestion(
            row=i + 1, question_id=f"gqa-{digest}", question=text, options=options,
            selections=selections, source=str(rec["source"]).strip(),
            substantive=[k for k, o in enumerate(options) if not is_nonsubstantive(o)]))
    log.info("%s: %s", path, rep.text())
    return questions, rep


def country_label(q: GQAQuestion, country: str, ties: str) -> tuple[int | None, str]:
    """(index into q.substantive of the plurality option or None, reason)."""
    shares = q.selections.get(country)
    if shares is None:
        return None, "absent"
    sub = [shares[k] for k in q.substantive]
    if not sub or sum(sub) <= 0:
        return None, "no_data"
    top = max(sub)
    winners = [j for j, s in enumerate(sub) if math.isclose(s, top, rel_tol=0, abs_tol=1e-9)]
    if len(winners) > 1:
        return (winners[0], "tie_broken") if ties == "first" else (None, "tie")
    return winners[0], "ok"


def select(questions: list[GQAQuestion], countries: list[str], count_nonsubstantive: bool,
           max_options: int, ties: str) -> tuple[list[tuple[GQAQuestion, dict[str, int]]],
                                                 dict[str, int]]:
    """Questions passing the option-count filter with a label for every country."""
    report = {"rows": len(questions), "option_count_ok": 0, "complete": 0, "ties": 0,
              "ties_broken": 0, "incomplete": 0}
    kept = []
    for q in questions:
        n = len(q.options) if count_nonsubstantive else len(q.substantive)
        if not 2 <= n <= max_options or len(q.substantive) < 2:
            continue
        report["option_count_ok"] += 1
        labels: dict[str, int] = {}
        for country in countries:
            label, reason = country_label(q, country, ties)
            report["ties"] += reason in ("tie", "tie_broken")
            report["ties_broken"] += reason == "tie_broken"
            if label is not None:
                labels[country] = label
        if len(labels) == len(countries):
            report["complete"] += 1
            kept.append((q, labels))
        else:
            report["incomplete"] += 1
    return kept, report


class Ties(str, Enum):
    """``dataset.options.ties``: a plurality tie within a country."""

    drop = "drop"    # no label: the question is incomplete, excluded
    first = "first"  # the option listed first wins


@dataclass(frozen=True)
class GQAOptions:
    """``dataset.options`` of the ``gqa`` loader (validated by :mod:`plural_icm.data.registry`)."""

    count_nonsubstantive: bool = False
    countries: list[str] = field(default_factory=lambda: list(COUNTRIES))
    """An empty list means all of :data:`COUNTRIES`."""
    max_options: int = 3
    ties: Ties = Ties.drop
    share_sum_tolerance: float = 0.05
    download: bool = True

    def __post_init__(self) -> None:
        check_option_range("gqa", "share_sum_tolerance", self.share_sum_tolerance, 0, 1,
                           hi_open=True)


def _countries(options: GQAOptions) -> list[str]:
    return [str(c) for c in options.countries] or list(COUNTRIES)


def question_counts(dataset: DatasetSettings[GQAOptions], data_dir: str | Path | None = None
                    ) -> pd.DataFrame:
    """Questions kept under both ``count_nonsubstantive`` settings (and both tie policies)."""
    opts = dataset.options
    countries, max_options = _countries(opts), opts.max_options
    path = resolve_path(dataset, data_dir)
    bad = BadRows("gqa", dataset.skip_bad_rows)
    questions, _ = read_questions(path, bad, opts.share_sum_tolerance)
    bad.finish()
    rows = []
    for flag in (False, True):
        for ties in (t.value for t in Ties):
            _, rep = select(questions, countries, flag, max_options, ties)
            rows.append({"count_nonsubstantive": flag, "ties": ties,
                         "option_count_ok": rep["option_count_ok"], "questions": rep["complete"],
                         "country_ties": rep["ties"]})
    return pd.DataFrame(rows)


def load_gqa(dataset: DatasetSettings[GQAOptions], data_dir: str | Path | None = None) -> ClaimSet:
    opts = dataset.options
    countries, count_nonsub = _countries(opts), opts.count_nonsubstantive
    max_options, ties = opts.max_options, opts.ties.value
    path = resolve_path(dataset, data_dir)
    bad = BadRows("gqa", dataset.skip_bad_rows)
    questions, read = read_questions(path, bad, opts.share_sum_tolerance)
    bad.finish()
    kept, rep = select(questions, countries, count_nonsub, max_options, ties)
    if rep["ties"]:
        log.warning("gqa: %d (country, question) plurality tie(s) among questions passing the "
                    "option filter; ties=%s %s", rep["ties"], ties,
                    "-> lowest option index wins" if ties == "first" else
                    "-> no label, the question is excluded")
    personas = {c: Persona(c, f"The user is from {c}.") for c in countries}
    claims: list[Claim] = []
    for q, labels in kept:
        options = [q.options[k] for k in q.substantive]
        for country in countries:
            shares = [q.selections[country][k] for k in q.substantive]
            total = sum(shares)
            dist = [s / total for s in shares]
            for j, option in enumerate(options):
                claims.append(Claim(
                    item_id=f"gqa/{country}/{q.question_id}/{j}",
                    persona_id=country,
                    group_id=f"gqa/{country}/{q.question_id}",
                    question_id=q.question_id,
                    option_key=str(j),
                    question=q.question,
                    claim=(f"The majority of people from {country} would answer this question "
                           f"as: '{option}'"),
                    gold=(j == labels[country]),
                    meta={"options": options, "option_index": j, "distribution": dist,
                          "all_options": q.options, "source": q.source, "row": q.row}))
    description = (f"GlobalOpinionQA from {path}: {len(kept)} questions x {len(countries)} "
                   f"countries (count_nonsubstantive={count_nonsub}, max_options={max_options}, "
                   f"ties={ties}); {rep['option_count_ok']} pass the option filter, "
                   f"{rep['incomplete']} lack a label for some country, {rep['ties']} country "
                   f"ties; {read.text()}; {bad.summary()}.")
    log.info(description)
    return ClaimSet(name=dataset.name, personas=personas, claims=claims,
                    rule=ConsistencyRule.EXACTLY_ONE, description=description)


def stats_text(dataset: DatasetSettings[GQAOptions], data_dir: str | Path | None = None) -> str:
    """What ``stage=data_stats dataset=gqa`` prints after the common table: the questions kept
    under both option-count settings (:func:`question_counts`; the paper keeps 180)."""
    counts = question_counts(dataset, data_dir)
    return ("GQA questions with complete labels by option-count setting "
            "(the paper keeps 180):\n" + counts.to_string(index=False))


# What this dataset is, declared to the registry (dataset.loader=gqa): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("gqa", load_gqa, GQAOptions, kfold=True, stats=stats_text)
