"""Persona-Tailoring (Balepur et al. 2025), hub dataset ``nbalepur/persona-tailoring``.

Accepted local layouts under ``dataset.path`` (``options.format``: ``auto`` picks the first found in
this order; ``arrow``, ``parquet`` or ``jsonl`` force one):

* ``arrow``: ``datasets.save_to_disk`` output, ``[arrow/][persona-tailoring-]<config>/<split>/
  data-*.arrow`` (Arrow stream files, read with pyarrow; ``datasets`` is not needed);
* ``parquet``: the hub layout ``<config>/<split>-*.parquet``;
* ``jsonl``: ``[jsonl/]<config>/<split>.jsonl`` (spaces in config names may be ``_``).

Without a local copy the split is loaded with ``datasets.load_dataset`` (network).

Fields: ``prompt, chosen, rejected, chosen_persona_<f>, rejected_persona_<f>`` with
``f = options.persona_field`` (``gold`` or ``retr``).

Splits: ``options.splits`` (a list; default :data:`DEFAULT_SPLITS` = ``[sft_train]``, the split of
the paper's Table 5 example), read for every config of ``options.configs``.

Persona types (the paper's Table 2 keyword scheme, :data:`KEYWORDS`): a persona sentence scores,
per type, ``pos`` = number of the type's positive keywords it contains and ``neg`` = number of its
negative keywords. Matching is on lower-cased word stems with hyphens splitting words, so
"to-the-point" is "to the point", "acknowledges"/"acknowledging" are "acknowledge" and "concisely"
is "concise"; whole words only ("indirect" is not "direct"). A type is *eligible* when ``pos >= 1``
and ``pos > neg`` ("matches few negative keywords"). The sentence goes to the eligible type with the
largest ``pos - neg``; ties are broken by the larger ``pos``; a remaining tie leaves it
**unassigned** ("ambiguous"), as does having no eligible type ("no match"). Both are counted;
:func:`cluster_sizes` (printed by ``stage=data_stats dataset=pt``) gives the sizes.

Items: each instance contributes a group for its chosen persona's type (``chosen`` preferred) and
one for its rejected persona's type (``rejected`` preferred). A group holds the pairwise claim in
both orders (``option_key`` ``AB`` and ``BA``: exactly one True). Which response is ``A`` is decided
by a seeded hash of the pair id, never by which one is chosen, so the listing order carries no label
information. Pairs whose two personas fall in the same type would make one persona type prefer
both responses: they are dropped and counted (``same_type``), as are pairs whose two responses are
equal (``equal_responses``) and rows with an empty ``chosen``/``rejected``/persona/prompt (the
publisher's Mnemonic/test ships without responses).

Claim layout for the ICM template ``Question: {question}\\nClaim: {claim}``: ``Claim.question`` is
``<prompt>\\nHuman Response Preference: <type>\\nChoice 1: ...\\nChoice 2: ...`` and ``Claim.claim`` is
``Choice 1 > Choice 2.``, as in the paper's Table 5: the prompt without HH-RLHF's ``Human: `` prefix
and the persona *type* (``Direct, Concise, Fact-first``); ``options.persona_text=instance`` shows
the row's own persona sentence instead.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import Enum
from pathlib import Path
from typing import ClassVar

import pandas as pd

from plural_icm.errors import ConfigError
from plural_icm.data.reading import parse_json, read_arrow, read_parquet, read_text
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetSettings
from plural_icm.data.sources import (BadRows, configured_path, data_dir_path, download_allowed,
                                     hub_table, missing, require_columns)

log = logging.getLogger(__name__)

HUB_REPO = "nbalepur/persona-tailoring"
CONFIGS = ["BeaverTails", "Anthropic HHH", "Mnemonic"]
SPLITS = ["fewshot", "sft_train", "sft_val", "dpo_train", "dpo_val", "test"]

#: type -> (name/description, positive keywords, negative keywords): the paper's Table 2.
KEYWORDS: dict[str, tuple[str, list[str], list[str]]] = {
    "DCF": ("Direct, Concise, Fact-first: prefers direct, concise, fact-first answers",
            ["direct", "concise", "to the point", "brief", "short answer", "no fluff",
             "without elaboration"],
            ["explore options", "background", "context", "nuanced", "ask follow-up",
             "conversation", "discuss further"]),
    "DEC": ("Dialogic, Empathetic, Coach: prefers empathetic, supportive, personalized guidance",
            ["empathetic", "gentle", "reassure", "acknowledge emotions", "personalized",
             "supportive", "tailored"],
            ["blunt", "impersonal", "no empathy", "strictly factual"]),
    "DMS": ("Direct, Methodical, Step-by-step: prefers clear step-by-step instructions",
            ["step by step", "step-by-step", "instructions", "checklist", "exact measurements",
             "clear steps", "specific guidance", "recipe"],
            ["high-level", "theoretical", "overview", "open-ended", "exploratory"]),
    "DSN": ("Dialogic, Scholarly, Nuanced: prefers in-depth, nuanced answers with context",
            ["in-depth", "underlying mechanisms", "nuanced", "context", "background",
             "historical", "clarify first", "ensure understanding"],
            ["just answer", "skip context", "brief only", "no clarifying questions"]),
}
FIXES = ["dataset.path=/path/to/persona_tailoring (a save_to_disk, parquet or jsonl copy), or "
         "export PLURAL_ICM_PT=/path/to/it",
         "paths.data_dir=/path/to/data with the copy under data_dir/persona_tailoring/",
         f"huggingface-cli download {HUB_REPO} --repo-type dataset --local-dir "
         f"./persona_tailoring, then dataset.path=./persona_tailoring"]
# Suffixes stripped before matching, so inflections match the keyword ("acknowledges",
# "acknowledging" -> "acknowledge"; "concisely" -> "concise"; "steps" -> "step"). Longest first.
_SUFFIXES = ("ingly", "edly", "ing", "ed", "ly", "es", "s")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


def _tokens(text: str) -> tuple[str, ...]:
    """Lower-cased word stems; hyphens split words ("to-the-point" == "to the point")."""
    return tuple(_stem(w) for w in re.findall(r"[a-z0-9]+", text.lower().replace("-", " ")))


def _keyword_stems(keywords: list[str]) -> list[tuple[str, ...]]:
    # "step by step" and "step-by-step" are one phrase once hyphens split words: count it once
    return list(dict.fromkeys(_tokens(k) for k in keywords))


_PATTERNS = {t: (_keyword_stems(pos), _keyword_stems(neg)) for t, (_, pos, neg) in KEYWORDS.items()}


def _contains(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def keyword_scores(text: str) -> dict[str, tuple[int, int]]:
    """type -> (positive keywords matched, negative keywords matched), on word stems, so
    hyphenation and inflection do not hide a keyword; whole words only ("indirect" is not
    "direct")."""
    tokens = _tokens(text)
    return {t: (sum(_contains(tokens, k) for k in pos), sum(_contains(tokens, k) for k in neg))
            for t, (pos, neg) in _PATTERNS.items()}


def persona_type(text: str) -> tuple[str | None, str]:
    """(type or None, reason: ``ok``, ``no_match`` or ``ambiguous``)."""
    scores = keyword_scores(text)
    eligible = {t: (p - n, p) for t, (p, n) in scores.items() if p >= 1 and p > n}
    if not eligible:
        return None, "no_match"
    best = max(eligible.values())
    top = [t for t, v in eligible.items() if v == best]
    return (top[0], "ok") if len(top) == 1 else (None, "ambiguous")


def type_name(ptype: str) -> str:
    """The type as the paper's Table 5 shows it: ``Direct, Concise, Fact-first``."""
    return KEYWORDS[ptype][0].split(":")[0]


def strip_turn_marker(prompt: str) -> str:
    """The question without HH-RLHF's ``Human: `` prefix (and a trailing ``Assistant:``)."""
    text = re.sub(r"^\s*Human:\s*", "", prompt)
    return re.sub(r"\s*Assistant:\s*$", "", text)


# -- reading -------------------------------------------------------------------------------------

def _config_names(config: str) -> list[str]:
    names = [config, config.replace(" ", "_"), config.replace(" ", "-")]
    return list(dict.fromkeys(names + [f"persona-tailoring-{n}" for n in names]))


def _roots(path: Path, sub: str) -> list[Path]:
    return [path / sub, path] if (path / sub).is_dir() else [path]


def find_split(path: Path, config: str, split: str, fmt: str) -> tuple[str, list[Path]] | None:
    """(format, files) of one config/split under ``path``, or None."""
    order = ["arrow", "parquet", "jsonl"] if fmt == "auto" else [fmt]
    for kind in order:
        for root in _roots(path, kind):
            for name in _config_names(config):
                base = root / name
                if kind == "arrow":
                    files = sorted((base / split).glob("*.arrow"))
                elif kind == "parquet":
                    files = sorted(base.glob(f"{split}-*.parquet")) + sorted(
                        (base / split).glob("*.parquet"))
                else:
                    files = [base / f"{split}.jsonl"] if (base / f"{split}.jsonl").is_file() else []
                if files:
                    return kind, files
    return None


def _read_jsonl(file: Path, bad: BadRows) -> pd.DataFrame:
    rows = []
    for i, line in enumerate(read_text(file).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = parse_json(line, "its content")
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            bad.bad(f"{file}: line {i}: expected a JSON object per line ({exc})")
            continue
        rows.append(obj)
    return pd.DataFrame(rows)


def read_split(dataset: DatasetSettings, data_dir: str | Path | None, config: str, split: str,
               fmt: str, bad: BadRows) -> tuple[pd.DataFrame, str]:
    path = configured_path(dataset, "pt", FIXES)
    if path is None:
        path = data_dir_path(data_dir, ["persona_tailoring", "persona-tailoring", "pt"])
    if path is not None:
        found = find_split(path, config, split, fmt)
        if found is None:
            raise missing(f"pt: no {config}/{split} ({'any format' if fmt == 'auto' else fmt}) "
                          f"under {path}; expected e.g. {path}/arrow/persona-tailoring-{config}/"
                          f"{split}/data-00000-of-00001.arrow, {path}/{config}/{split}-*.parquet "
                          f"or {path}/jsonl/{config.replace(' ', '_')}/{split}.jsonl",
                          ["dataset.options.configs=[...] / dataset.options.split=... naming "
                           "what the copy holds", *FIXES])
        kind, files = found
        if kind == "arrow":
            df = pd.concat([read_arrow(f) for f in files], ignore_index=True)
        elif kind == "parquet":
            df = pd.concat([read_parquet(f) for f in files], ignore_index=True)
        else:
            df = _read_jsonl(files[0], bad)
        return df, str(files[0].parent if kind != "jsonl" else files[0])
    if not download_allowed(dataset):
        raise missing(f"pt: no local copy of {config}/{split} (dataset.path is unset) and "
                      f"downloads are off", FIXES)
    return hub_table(HUB_REPO, config, split, f"pt ({config}/{split})", FIXES), \
        f"hf://{HUB_REPO}/{config}/{split}"


def _ab(pair_id: str, seed: int) -> bool:
    """True when response A is the chosen one (seeded hash of the pair, not the label)."""
    return hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[0] % 2 == 0


#: The splits read by default: the paper's Table 5 example ("I am trying to see how influential
#: colours are to consumers...") is a row of Anthropic HHH ``sft_train``, and nothing in the paper
#: points at another split, so ``sft_train`` (of every config) is the item pool the 4-fold
#: cross-validation runs on. ``test`` is what the benchmark itself evaluates on; add it with
#: ``dataset.options.splits=[sft_train,test]``.
DEFAULT_SPLITS = ["sft_train"]


class PersonaField(str, Enum):
    """``dataset.options.persona_field``: which persona columns a row's sides are read from."""

    gold = "gold"  # chosen_persona_gold / rejected_persona_gold
    retr = "retr"  # chosen_persona_retr / rejected_persona_retr


class Format(str, Enum):
    """``dataset.options.format``: the local copy's layout (``auto``: the first found)."""

    auto = "auto"
    arrow = "arrow"
    parquet = "parquet"
    jsonl = "jsonl"


class PersonaText(str, Enum):
    """``dataset.options.persona_text``: what the claim shows as the persona."""

    type = "type"          # the persona's type, as the paper's Table 5
    instance = "instance"  # the row's own persona sentence


@dataclass(frozen=True)
class PTOptions:
    """``dataset.options`` of the ``pt`` loader (validated by :mod:`plural_icm.data.registry`)."""

    RENAMED: ClassVar[dict[str, str]] = {"split": "splits"}
    """Old option names, refused with the name that replaced them."""

    configs: list[str] = dc_field(default_factory=lambda: list(CONFIGS))
    """An empty list means all of :data:`CONFIGS`."""
    splits: list[str] = dc_field(default_factory=lambda: list(DEFAULT_SPLITS))
    """Some of :data:`SPLITS`; an empty list means :data:`DEFAULT_SPLITS`."""
    persona_field: PersonaField = PersonaField.gold
    format: Format = Format.auto
    persona_text: PersonaText = PersonaText.type
    download: bool = True

    def __post_init__(self) -> None:
        unknown = [x for x in self.splits if x not in SPLITS]
        if unknown:
            raise ConfigError(f"pt: dataset.options.splits has unknown split(s) {unknown}; "
                              f"valid: {SPLITS}")


@dataclass
class _Settings:
    configs: list[str]
    splits: list[str]
    field: str
    fmt: str
    persona_text: str
    seed: int


def _settings(dataset: DatasetSettings[PTOptions]) -> _Settings:
    """The options as the loader's plain values (an empty list: the default configs/splits)."""
    opts = dataset.options
    return _Settings(configs=[str(c) for c in opts.configs] or list(CONFIGS),
                     splits=[str(x) for x in opts.splits] or list(DEFAULT_SPLITS),
                     field=opts.persona_field.value, fmt=opts.format.value,
                     persona_text=opts.persona_text.value, seed=dataset.split_seed)


def _row_values(rec: dict, columns: list[str], where: str, bad: BadRows) -> dict | None:
    values = {}
    for col in columns:
        v = rec[col]
        if v is None or (isinstance(v, float) and v != v):
            v = ""
        if not isinstance(v, str):
            bad.bad(f"{where}: column {col!r} must be a string, got {type(v).__name__}")
            return None
        values[col] = v.strip()
    return values


def _pair_claims(values: dict, types: dict, personas: dict, pair_id: str, st: _Settings,
                 meta: dict) -> list[Claim]:
    """Both orders of the pair for each typed persona side (exactly one order True)."""
    a_is_chosen = _ab(pair_id, st.seed)
    resp = {"A": values["chosen"] if a_is_chosen else values["rejected"],
            "B": values["rejected"] if a_is_chosen else values["chosen"]}
    prompt = strip_turn_marker(values["prompt"])
    claims = []
    for side, ptype in types.items():
        if ptype is None:
            continue
        preferred = "A" if (side == "chosen") == a_is_chosen else "B"
        shown = personas[side] if st.persona_text == "instance" else type_name(ptype)
        for order in ("AB", "BA"):
            first, second = order[0], order[1]
            question = (f"{prompt}\nHuman Response Preference: {shown}\n"
                        f"Choice 1: {resp[first]}\nChoice 2: {resp[second]}")
            claims.append(Claim(
                item_id=f"{pair_id}/{ptype}/{side}/{order}", persona_id=ptype,
                group_id=f"{pair_id}/{ptype}/{side}", question_id=pair_id, option_key=order,
                question=question, claim="Choice 1 > Choice 2.", gold=(first == preferred),
                meta={**meta, "pair": pair_id, "order": order, "response_a": resp["A"],
                      "response_b": resp["B"], "chosen": values["chosen"],
                      "rejected": values["rejected"],
                      "chosen_is": "A" if a_is_chosen else "B", "preferred": preferred,
                      "persona_side": side, "persona_text": personas[side], "prompt": prompt}))
    return claims


def _typed_rows(dataset: DatasetSettings, data_dir: str | Path | None, st: _Settings, bad: BadRows, n: dict,
                sources: list):
    """Yield (values, types, personas, pair_id, meta) per usable row; skips are counted in ``n``."""
    columns = ["prompt", "chosen", "rejected", f"chosen_persona_{st.field}",
               f"rejected_persona_{st.field}"]
    for config in st.configs:
        cfg_key = config.replace(" ", "_")
        for split in st.splits:
            df, where = read_split(dataset, data_dir, config, split, st.fmt, bad)
            sources.append(where)
            require_columns(df.columns, columns, where)
            n_empty_here = 0
            for i, rec in enumerate(df[columns].to_dict("records")):
                n["rows"] += 1
                values = _row_values(rec, columns, f"{where}: row {i}", bad)
                if values is None:
                    continue
                if not all(values.values()):
                    n["empty"] += 1
                    n_empty_here += 1
                    continue
                if " ".join(values["chosen"].split()) == " ".join(values["rejected"].split()):
                    n["equal_responses"] += 1  # no preference to learn: a degenerate pair
                    continue
                personas = {"chosen": values[f"chosen_persona_{st.field}"],
                            "rejected": values[f"rejected_persona_{st.field}"]}
                types = {}
                for side, text in personas.items():
                    t, reason = persona_type(text)
                    if t is None:
                        n[reason] += 1
                    types[side] = t
                if types["chosen"] is not None and types["chosen"] == types["rejected"]:
                    # one type preferring both responses: opposite labels for one persona type
                    n["same_type"] += 1
                    continue
                yield (values, types, personas, f"pt/{cfg_key}/{split}/{i}",
                       {"config": config, "split": split, "row": i})
            if n_empty_here:
                log.warning("pt: %s: skipped %d row(s) with an empty prompt/response/persona "
                            "(field=%s)", where, n_empty_here, st.field)


def _new_counts() -> dict[str, int]:
    return {"rows": 0, "empty": 0, "equal_responses": 0, "no_match": 0, "ambiguous": 0,
            "same_type": 0, "groups": 0}


def cluster_sizes(dataset: DatasetSettings[PTOptions], data_dir: str | Path | None = None
                  ) -> pd.DataFrame:
    """Persona sentences per type (the paper's keyword clusters) and what was not clustered.

    One row per type with the sentences assigned on the chosen side, the rejected side and in all,
    then rows for the sentences left unassigned (``no_match``, ``ambiguous``) and the pairs
    dropped (``same_type``, ``equal_responses``, ``empty``).
    """
    st = _settings(dataset)
    bad = BadRows("pt", dataset.skip_bad_rows)
    n = _new_counts()
    sizes = {t: {"chosen": 0, "rejected": 0} for t in KEYWORDS}
    for _values, types, _p, _pid, _meta in _typed_rows(dataset, data_dir, st, bad, n, []):
        for side, t in types.items():
            if t is not None:
                sizes[t][side] += 1
    rows = [{"cluster": f"{t} ({type_name(t)})", "chosen": v["chosen"], "rejected": v["rejected"],
             "total": v["chosen"] + v["rejected"]} for t, v in sizes.items()]
    for reason in ("no_match", "ambiguous", "same_type", "equal_responses", "empty"):
        unit = "pairs dropped" if reason in ("same_type", "equal_responses", "empty") \
            else "sentences unassigned"
        rows.append({"cluster": f"{reason} ({unit})", "chosen": None, "rejected": None,
                     "total": n[reason]})
    return pd.DataFrame(rows)


def load_pt(dataset: DatasetSettings[PTOptions], data_dir: str | Path | None = None) -> ClaimSet:
    st = _settings(dataset)
    bad = BadRows("pt", dataset.skip_bad_rows)
    n = _new_counts()
    sources: list[str] = []
    claims: list[Claim] = []
    for values, types, personas, pair_id, meta in _typed_rows(dataset, data_dir, st, bad, n,
                                                                sources):
        new = _pair_claims(values, types, personas, pair_id, st, meta)
        n["groups"] += len(new) // 2
        claims += new
    bad.finish()
    unassigned = n["no_match"] + n["ambiguous"]
    if unassigned or n["same_type"] or n["equal_responses"]:
        log.warning("pt: %d persona sentence(s) unassigned (%d no keyword match, %d ambiguous); "
                    "%d pair(s) with both personas in one type and %d with equal responses "
                    "dropped", unassigned, n["no_match"], n["ambiguous"], n["same_type"],
                    n["equal_responses"])
    personas = {t: Persona(t, type_name(t)) for t in KEYWORDS}
    description = (f"Persona-Tailoring {st.configs} splits={st.splits} persona_field={st.field} "
                   f"persona_text={st.persona_text} from {sources}: {n['rows']} rows, "
                   f"{n['empty']} with empty fields skipped, {n['equal_responses']} with equal "
                   f"responses skipped, {n['groups']} persona groups; persona sentences "
                   f"unassigned: {n['no_match']} no match, {n['ambiguous']} ambiguous; "
                   f"{n['same_type']} pairs with both personas in one type dropped; "
                   f"{bad.summary()}.")
    log.info(description)
    return ClaimSet(name=dataset.name, personas=personas, claims=claims,
                    rule=ConsistencyRule.EXACTLY_ONE, description=description)


def stats_text(dataset: DatasetSettings[PTOptions], data_dir: str | Path | None = None) -> str:
    """What ``stage=data_stats dataset=pt`` prints after the common table: the persona clusters'
    sizes (:func:`cluster_sizes`)."""
    return ("PT persona clusters (the paper's Table 2 keywords; persona sentences per "
            "type and side):\n" + cluster_sizes(dataset, data_dir).to_string(
                index=False, na_rep="", float_format=lambda x: f"{x:.0f}"))


# What this dataset is, declared to the registry (dataset.loader=pt): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("pt", load_pt, PTOptions, kfold=True, stats=stats_text)
