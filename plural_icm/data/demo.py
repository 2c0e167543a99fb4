"""The embedded demo dataset: SYNTHETIC, written for this project (not survey data).

Three personas whose answers follow a coherent value profile (tradition and self-reliance; social
change and public services; individual freedom and technology), so that coherence has something
to find: knowing some of a persona's answers predicts the others. Each question has two options;
each option is one claim; exactly one option per (persona, question) is the persona's answer.

The shipped file ``demo/demo_claims.jsonl`` is what :func:`build_demo` writes
(``python -m plural_icm.data.demo`` regenerates it); loading reads the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from plural_icm.data.folds import assign_folds
from plural_icm.data.records import Claim, ClaimSet, ConsistencyRule, Persona
from plural_icm.data.settings import DatasetConfig, DatasetSettings

PERSONAS = {
    "traditional": ("rural traditionalists",
                    "The group is rural traditionalists: small-town farmers and shop owners who value "
                    "tradition, faith, self-reliance and small government."),
    "progressive": ("urban progressives",
                    "The group is urban progressives: young city professionals who value social change, "
                    "public services and environmental protection."),
    "libertarian": ("tech libertarians",
                    "The group is tech libertarians: software engineers and founders who value individual "
                    "freedom, new technology and minimal regulation."),
}

# question, (option A, option B), the option index each persona picks, its share of the group
QUESTIONS = [
    ("Should the city spend more on public transit or on roads?",
     ("More on public transit", "More on roads"), {"traditional": 1, "progressive": 0, "libertarian": 1}),
    ("Should new gas-powered cars be banned by 2040?",
     ("Yes, ban them", "No, keep them legal"), {"traditional": 1, "progressive": 0, "libertarian": 1}),
    ("Should traditional holidays be kept as they are?",
     ("Keep them as they are", "Update them for today"), {"traditional": 0, "progressive": 1, "libertarian": 1}),
    ("Should self-driving cars be allowed on public roads now?",
     ("Yes, allow them now", "No, wait for more testing"), {"traditional": 1, "progressive": 1, "libertarian": 0}),
    ("Should the minimum wage be raised?",
     ("Yes, raise it", "No, leave it to the market"), {"traditional": 1, "progressive": 0, "libertarian": 1}),
    ("Should every child learn to code at school?",
     ("Yes, teach everyone to code", "No, focus on the basics"), {"traditional": 1, "progressive": 0, "libertarian": 0}),
    ("Should hunting be more strictly regulated?",
     ("Yes, regulate it more", "No, it is fine as it is"), {"traditional": 1, "progressive": 0, "libertarian": 1}),
    ("Should cryptocurrencies be regulated like banks?",
     ("Yes, regulate them", "No, let them be free"), {"traditional": 0, "progressive": 0, "libertarian": 1}),
]
SHARE = 0.7  # the persona's answer gets this share of the synthetic answer distribution


def build_demo() -> ClaimSet:
    personas = {pid: Persona(id=pid, description=desc) for pid, (_, desc) in PERSONAS.items()}
    claims = []
    for q, (question, options, picks) in enumerate(QUESTIONS):
        for pid, (plural, _) in PERSONAS.items():
            pick = picks[pid]
            dist = [SHARE if o == pick else (1 - SHARE) / (len(options) - 1) for o in range(len(options))]
            for o, option in enumerate(options):
                claims.append(Claim(
                    item_id=f"demo/{pid}/q{q}/o{o}", persona_id=pid, group_id=f"{pid}/q{q}",
                    question_id=f"q{q}", option_key=str(o), question=question,
                    claim=f"Most {plural} would answer '{option}'",
                    gold=(o == pick),
                    meta={"options": list(options), "option_index": o, "distribution": dist,
                          "synthetic": True}))
    cs = ClaimSet(name="demo", personas=personas, claims=claims, rule=ConsistencyRule.EXACTLY_ONE,
                  description="SYNTHETIC demo data written for plural_icm; not survey data.")
    return cs


def demo_path() -> Path:
    return Path(str(resources.files("plural_icm.data") / "demo" / "demo_claims.jsonl"))


@dataclass(frozen=True)
class DemoOptions:
    """The ``demo`` loader takes no ``dataset.options``."""


def load_demo(dataset: DatasetSettings[DemoOptions] | None = None,
              data_dir: str | Path | None = None) -> ClaimSet:
    """The shipped demo claims; folds from ``dataset.n_folds`` and ``split_seed`` (the file's
    own folds when it carries some). No ``dataset``: the demo's default settings."""
    from plural_icm.errors import ConfigError

    if dataset is None:
        from plural_icm.data.registry import dataset_settings

        dataset = dataset_settings(DatasetConfig(name="demo", loader="demo"))
    if dataset.path:
        # Reading the shipped file anyway would give demo numbers for a forgotten dataset=...
        raise ConfigError(f"demo: dataset.path={dataset.path!r} is set, but the demo "
                          f"dataset reads only its shipped file; choose the dataset that reads "
                          f"this path (e.g. dataset=gqa dataset.path=...), or leave the path unset")
    if dataset.n_folds < 2:
        raise ConfigError(f"demo: dataset.n_folds={dataset.n_folds!r}; expected an integer >= 2 "
                          f"(one fold is held out, the others are searched)")
    cs = ClaimSet.load_jsonl(demo_path())
    if not cs.folds:
        cs.folds = assign_folds(cs.claims, dataset.n_folds, dataset.split_seed)
    return cs

# What this dataset is, declared to the registry (dataset.loader=demo): its loader, its options,
# its folds and its statistics.
from plural_icm.data.registry import register_loader  # noqa: E402

register_loader("demo", load_demo, DemoOptions, kfold=True)


if __name__ == "__main__":
    build_demo().save_jsonl(demo_path())
    print(f"wrote {demo_path()}")
