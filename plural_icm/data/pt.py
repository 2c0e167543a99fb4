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

Persona types (the paper's Table 2 keyword scheme, :data:`KEYWORDS`): a persona sentence scores,
per type, ``pos`` = number of the type's positive keywords it contains and ``neg`` = number of its
negative keywords (lower-cased, whole-word match at the start, common suffixes such as ``-s``,
``-ly`` allowed, so "concisely" matches "concise"). A type is *eligible* when ``pos >= 1`` and
``pos > neg`` ("matches few negative keywords"). The sentence goes to the eligible type with the
largest ``pos - neg``; ties are broken by the larger ``pos``; a remaining tie leaves it
**unassigned** ("ambiguous"), as does having no eligible type ("no match"). Both are counted and
logged.

Items: each instance contributes a group for its chosen persona's type (``chosen`` preferred) and
one for its rejected persona's type (``rejected`` preferred). A group holds the pairwise claim in
both orders (``option_key`` ``AB`` and ``BA``: exactly one True). Which response is ``A`` is decided
by a seeded hash of the pair id, never by which one is chosen, so the listing order carries no label
information. When both personas of an instance fall in the same type, the two groups would assert
opposite preferences over the same pair. With the default ``persona_text=instance`` the two groups
differ in the persona sentence shown, so both are kept (group ids end in ``/chosen`` and
``/rejected``); with ``persona_text=type`` the claims would be identical with opposite labels, so
such instances keep neither (counted as "conflicting").
Rows with an empty ``chosen``/``rejected`` (the publisher's Mnemonic/test ships without responses)
or an empty persona are skipped and counted (logged).

Claim layout for the ICM template ``Question: {question}\\nClaim: {claim}``: ``Claim.question`` is
``<prompt>\\nHuman Response Preference: <persona sentence>\\nChoice 1: ...\\nChoice 2: ...`` and
``Claim.claim`` is ``Choice 1 > Choice 2.`` (the persona sentence of the instance, i.e. the text the
benchmark conditions on; ``options.persona_text=type`` uses the type description instead).
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from plural_icm.errors import ConfigError
from plural_icm.data.reading import parse_json, read_arrow, read_parquet, read_text
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.sources import (BadRows, as_list, cfg_get, cfg_options,
                                     configured_path, data_dir_path, download_allowed, hub_table,
                                     missing, require_columns)

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
_SUFFIX = r"(?:s|es|ly|al|ual|ed|d)?"


def _pattern(keyword: str) -> re.Pattern:
    words = [re.escape(w) for w in re.split(r"[\s]+", keyword.lower())]
    return re.compile(r"\b" + r"\s+".join(words) + _SUFFIX + r"(?![\w-])")


_PATTERNS = {t: ([_pattern(k) for k in pos], [_pattern(k) for k in neg])
             for t, (_, pos, neg) in KEYWORDS.items()}


def keyword_scores(text: str) -> dict[str, tuple[int, int]]:
    """type -> (positive keywords matched, negative keywords matched)."""
    low = text.lower()
    return {t: (sum(bool(p.search(low)) for p in pos), sum(bool(p.search(low)) for p in neg))
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


def read_split(cfg: Any, data_dir: str | Path | None, config: str, split: str, fmt: str,
               bad: BadRows) -> tuple[pd.DataFrame, str]:
    path = configured_path(cfg, "pt", FIXES)
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
    if not download_allowed(cfg):
        raise missing(f"pt: no local copy of {config}/{split} (dataset.path is unset) and "
                      f"downloads are off", FIXES)
    return hub_table(HUB_REPO, config, split, f"pt ({config}/{split})", FIXES), \
        f"hf://{HUB_REPO}/{config}/{split}"


def _ab(pair_id: str, seed: int) -> bool:
    """True when response A is the chosen one (seeded hash of the pair, not the label)."""
    return hashlib.sha256(f"{seed}:{pair_id}".encode()).digest()[0] % 2 == 0


def load_pt(cfg: Any, data_dir: str | Path | None = None) -> ClaimSet:
    opts = cfg_options(cfg)
    configs = [str(c) for c in as_list(opts.get("configs"))] or list(CONFIGS)
    split = str(opts.get("split", "test"))
    field = str(opts.get("persona_field", "gold"))
    fmt = str(opts.get("format", "auto"))
    persona_text = str(opts.get("persona_text", "instance"))
    seed = int(cfg_get(cfg, "split_seed", 0) or 0)
    if field not in ("gold", "retr"):
        raise ConfigError(f"pt: dataset.options.persona_field={field!r}; expected gold or retr")
    if fmt not in ("auto", "arrow", "parquet", "jsonl"):
        raise ConfigError(f"pt: dataset.options.format={fmt!r}; expected auto, arrow, parquet "
                         f"or jsonl")
    if persona_text not in ("instance", "type"):
        raise ConfigError(f"pt: dataset.options.persona_text={persona_text!r}; expected "
                         f"instance or type")
    bad = BadRows("pt", bool(cfg_get(cfg, "skip_bad_rows", False)))
    columns = ["prompt", "chosen", "rejected", f"chosen_persona_{field}",
               f"rejected_persona_{field}"]
    claims: list[Claim] = []
    n = {"rows": 0, "empty": 0, "no_match": 0, "ambiguous": 0, "conflicting": 0, "groups": 0}
    sources = []
    for config in configs:
        df, where = read_split(cfg, data_dir, config, split, fmt, bad)
        sources.append(where)
        require_columns(df.columns, columns, where)
        cfg_key = config.replace(" ", "_")
        n_empty_here = 0
        for i, rec in enumerate(df[columns].to_dict("records")):
            n["rows"] += 1
            values = {}
            for col in columns:
                v = rec[col]
                if v is None or (isinstance(v, float) and v != v):
                    v = ""
                if not isinstance(v, str):
                    bad.bad(f"{where}: row {i}: column {col!r} must be a string, got "
                            f"{type(v).__name__}")
                    break
                values[col] = v.strip()
            else:
                if not all(values.values()):
                    n["empty"] += 1
                    n_empty_here += 1
                    continue
                pair_id = f"pt/{cfg_key}/{split}/{i}"
                personas = {"chosen": values[f"chosen_persona_{field}"],
                            "rejected": values[f"rejected_persona_{field}"]}
                types = {}
                for side, text in personas.items():
                    t, reason = persona_type(text)
                    if t is None:
                        n[reason] += 1
                    types[side] = t
                if (persona_text == "type" and types["chosen"] is not None
                        and types["chosen"] == types["rejected"]):
                    n["conflicting"] += 1
                    continue
                a_is_chosen = _ab(pair_id, seed)
                resp = {"A": values["chosen"] if a_is_chosen else values["rejected"],
                        "B": values["rejected"] if a_is_chosen else values["chosen"]}
                for side, ptype in types.items():
                    if ptype is None:
                        continue
                    n["groups"] += 1
                    preferred = "A" if (side == "chosen") == a_is_chosen else "B"
                    shown = personas[side] if persona_text == "instance" else \
                        f"{ptype}: {KEYWORDS[ptype][0]}"
                    for order in ("AB", "BA"):
                        first, second = order[0], order[1]
                        question = (f"{values['prompt']}\nHuman Response Preference: {shown}\n"
                                    f"Choice 1: {resp[first]}\nChoice 2: {resp[second]}")
                        claims.append(Claim(
                            item_id=f"{pair_id}/{ptype}/{side}/{order}",
                            persona_id=ptype,
                            group_id=f"{pair_id}/{ptype}/{side}",
                            question_id=pair_id,
                            option_key=order,
                            question=question,
                            claim="Choice 1 > Choice 2.",
                            gold=(first == preferred),
                            meta={"pair": pair_id, "config": config, "split": split, "row": i,
                                  "order": order, "response_a": resp["A"],
                                  "response_b": resp["B"], "chosen": values["chosen"],
                                  "rejected": values["rejected"],
                                  "chosen_is": "A" if a_is_chosen else "B",
                                  "preferred": preferred, "persona_side": side,
                                  "persona_text": personas[side], "prompt": values["prompt"]}))
        if n_empty_here:
            log.warning("pt: %s: skipped %d row(s) with an empty prompt/response/persona "
                        "(field=%s)", where, n_empty_here, field)
    bad.finish()
    unassigned = n["no_match"] + n["ambiguous"]
    if unassigned or n["conflicting"]:
        log.warning("pt: %d persona sentence(s) unassigned (%d no keyword match, %d ambiguous); "
                    "%d instance(s) with both personas in one type dropped (persona_text=type)",
                    unassigned,
                    n["no_match"], n["ambiguous"], n["conflicting"])
    personas = {t: Persona(t, f"{t}: {desc}") for t, (desc, _, _) in KEYWORDS.items()}
    description = (f"Persona-Tailoring {configs} split={split} persona_field={field} from "
                   f"{sources}: {n['rows']} rows, {n['empty']} with empty fields skipped, "
                   f"{n['groups']} persona groups; persona sentences unassigned: "
                   f"{n['no_match']} no match, {n['ambiguous']} ambiguous; {n['conflicting']} "
                   f"instances with both personas in one type dropped; {bad.count} bad row(s) "
                   f"skipped.")
    log.info(description)
    return ClaimSet(name=str(cfg_get(cfg, "name", "pt")), personas=personas, claims=claims,
                    rule=ConsistencyRule.EXACTLY_ONE, description=description)
