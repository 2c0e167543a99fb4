"""The one internal schema every dataset is turned into.

A dataset becomes a :class:`ClaimSet`: personas, and claims about what a persona would say.
Each claim belongs to a *consistency group* (one persona x one question, or one persona x one
response pair); the group's rule says which labellings are coherent. Rules come from item
structure only, never from gold labels (the published ICM code derived TruthfulQA keys from gold,
which leaks supervision into an unsupervised search).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable

from plural_icm.errors import ConfigError


class ConsistencyRule(str, Enum):
    """How the labels inside one consistency group must relate."""

    #: Exactly one claim of the group is True: survey options (the plurality option of a persona)
    #: and preference pairs (exactly one of A>B, B>A).
    EXACTLY_ONE = "exactly_one"
    #: No constraint between claims (OvertonBench: several answers may represent a group).
    NONE = "none"


@dataclass(frozen=True)
class Persona:
    """A group whose views are modelled."""

    id: str
    """Short stable identifier used in file names and tables (``Democrat``, ``Brazil``, ``DCF``)."""
    description: str
    """Natural-language description put in prompts ("The user is a Democrat in the U.S.")."""


@dataclass(frozen=True)
class Claim:
    """One binary item: a claim about a persona that is True or False."""

    item_id: str
    """Unique within the dataset; stable across runs (used in caches and result files)."""
    persona_id: str
    group_id: str
    """Consistency group: claims that must be labelled coherently together."""
    question_id: str
    """Whole questions stay in one fold; for PT this is the response pair."""
    option_key: str
    """Which option / ordering of the group this claim asserts (item structure, never gold)."""
    question: str
    """The question text shown in the claim prompt."""
    claim: str
    """The rendered claim sentence (the paper's wording for the dataset)."""
    gold: bool | None = None
    """Gold label when known. Searches never read it; it is used for metrics only."""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """What metrics need: option list, observed distribution, response pair, answer text."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "Claim":
        return cls(**row)


@dataclass
class ClaimSet:
    """A dataset in the internal schema."""

    name: str
    personas: dict[str, Persona]
    claims: list[Claim]
    rule: ConsistencyRule = ConsistencyRule.EXACTLY_ONE
    #: Fold of every question id (``question_id -> fold``); ``-1`` means "search set only",
    #: used by datasets with a fixed search/test split (OvertonBench).
    folds: dict[str, int] = field(default_factory=dict)
    description: str = ""

    def for_persona(self, persona_id: str) -> list[Claim]:
        return [c for c in self.claims if c.persona_id == persona_id]

    def groups(self, claims: Iterable[Claim] | None = None) -> dict[str, list[Claim]]:
        out: dict[str, list[Claim]] = {}
        for c in self.claims if claims is None else claims:
            out.setdefault(c.group_id, []).append(c)
        return out

    def split(self, fold: int, persona_id: str | None = None) -> tuple[list[Claim], list[Claim]]:
        """(search/train claims, test claims) for ``fold``.

        Fold ``k`` is the test fold, the others are ICM's search set. For datasets with a fixed
        split the test set is fold 0 and ``fold`` must be 0.
        """
        if not self.folds:
            raise ConfigError(f"dataset {self.name!r} has no folds assigned")
        n_folds = max(self.folds.values()) + 1
        if not 0 <= fold < n_folds:
            raise ConfigError(f"fold={fold} is out of range for dataset {self.name!r}: "
                             f"valid folds are 0..{n_folds - 1}")
        claims = self.claims if persona_id is None else self.for_persona(persona_id)
        train = [c for c in claims if self.folds[c.question_id] != fold]
        test = [c for c in claims if self.folds[c.question_id] == fold]
        return train, test

    # -- serialisation (JSONL, used for the embedded demo and for caching converted datasets) --
    def save_jsonl(self, path: str | Path) -> None:
        from plural_icm.utils.io import atomic_write_text

        header = {"name": self.name, "rule": self.rule.value, "description": self.description,
                  "personas": [asdict(p) for p in self.personas.values()], "folds": self.folds}
        lines = [json.dumps({"header": header})]
        lines += [json.dumps(c.to_dict(), ensure_ascii=False) for c in self.claims]
        atomic_write_text(path, "\n".join(lines) + "\n")

    @classmethod
    def load_jsonl(cls, path: str | Path) -> "ClaimSet":
        path = Path(path)
        rows = path.read_text(encoding="utf-8").splitlines()
        if not rows:
            raise ValueError(f"{path}: empty file, expected a header line and claims")
        try:
            header = json.loads(rows[0])["header"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"{path}:1: expected a JSON header line {{'header': ...}}") from exc
        claims = []
        for i, line in enumerate(rows[1:], start=2):
            if not line.strip():
                continue
            try:
                claims.append(Claim.from_dict(json.loads(line)))
            except (json.JSONDecodeError, TypeError) as exc:
                raise ValueError(f"{path}:{i}: not a claim record ({exc})") from exc
        personas = {p["id"]: Persona(**p) for p in header["personas"]}
        return cls(name=header["name"], personas=personas, claims=claims,
                   rule=ConsistencyRule(header["rule"]), folds=header.get("folds", {}),
                   description=header.get("description", ""))
