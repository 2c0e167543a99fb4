"""Print the exact prompt a prediction of a cell was scored with.

    python -m plural_icm.inference.show_prompt <cell dir> [--item ITEM_ID] [--persona ID]

Rebuilt from the cell's own files (``config.yaml``, ``examples.jsonl``) and its dataset with the
same :class:`~plural_icm.inference.predict.PromptBuilder` the cell used; only the tokenizer is
loaded (for the chat template), never the model. Prints the text up to where the label is scored
(the labels continue it), with the model's BOS token noted for plain-text prompts. Without
``--item``: the first held-out claim of the persona (default: the first persona).

Limits: a condition with perturbed example sets (``acc_matched``) lists one set in
``examples.jsonl``; ``inference.context_policy=drop_oldest`` may have dropped leading examples
(the cell's log says how many).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from plural_icm.backends.base import LMBackend
from plural_icm.layout import CONFIG, EXAMPLES


class _TokenizerOnly(LMBackend):
    """What PromptBuilder reads of a backend: its tokenizer (no weights are loaded)."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__()
        self.tokenizer = tokenizer

    def label_logprobs(self, prompts, labels):  # pragma: no cover - never scores
        raise NotImplementedError

    def generate(self, prompts, params):  # pragma: no cover - never generates
        raise NotImplementedError


def cell_prompt(cell_dir: str | Path, item_id: str | None = None, persona: str | None = None,
                tokenizer: Any = None) -> tuple[str, str, list[str], str]:
    """(item id, prompt text up to the label, the scored labels, the BOS token prepended to a
    plain-text prompt or "") of one held-out claim."""
    from plural_icm.data.registry import load_claimset
    from plural_icm.inference.predict import PromptBuilder

    cell_dir = Path(cell_dir)
    if not (cell_dir / CONFIG).is_file() or not (cell_dir / EXAMPLES).is_file():
        raise SystemExit(f"error: {cell_dir} is not a cell directory (expected {CONFIG} and "
                         f"{EXAMPLES} in it)")
    cfg = OmegaConf.load(cell_dir / CONFIG)
    claimset = load_claimset(cfg.dataset, cfg.paths.get("data_dir"))
    rows = [json.loads(line) for line in (cell_dir / EXAMPLES).read_text(encoding="utf-8").splitlines()
            if line.strip()]
    by_id = {c.item_id: c for c in claimset.claims}
    if item_id is not None:
        if item_id not in by_id:
            raise SystemExit(f"error: item {item_id!r} is not in dataset {claimset.name!r}")
        persona = by_id[item_id].persona_id
    persona = persona or sorted(claimset.personas)[0]
    if persona not in claimset.personas:
        raise SystemExit(f"error: persona {persona!r} is not in dataset {claimset.name!r} "
                         f"(personas: {sorted(claimset.personas)})")
    _, test = claimset.split(int(cfg.fold), persona)
    target = by_id[item_id] if item_id is not None else test[0]
    examples = [(by_id[r["item_id"]], bool(r["label"])) for r in rows if r["persona_id"] == persona]
    base = cfg.condition.get("model_role", "instruct") == "base"  # config.yaml holds strings
    if tokenizer is None:
        from plural_icm.backends.loading import load_tokenizer, resolve_model

        spec = cfg.model.base if base else cfg.model.instruct
        tokenizer = load_tokenizer(resolve_model(str(spec), cfg.paths.get("cache_dir"),
                                                 revision=cfg.model.get("revision")))
    builder = PromptBuilder(_TokenizerOnly(tokenizer), cfg.inference, base=base)
    _, before, after = builder.split_prompt(claimset.personas[persona], examples)
    query = cfg.inference.query_template.format(question=target.question, claim=target.claim)
    bos = "" if builder.chat or not builder.backend.bos() else str(tokenizer.bos_token)
    return target.item_id, before + query + after, builder.labels, bos


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plural_icm.inference.show_prompt",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cell_dir", help="a cell's result directory (holds config.yaml, examples.jsonl)")
    ap.add_argument("--item", default=None, help="the item_id of a held-out claim (predictions.jsonl)")
    ap.add_argument("--persona", default=None, help="the persona whose first held-out claim to show")
    args = ap.parse_args(argv)
    item, text, labels, bos = cell_prompt(args.cell_dir, args.item, args.persona)
    head = f"--- prompt of {item} (scored labels: {labels}" + (f"; preceded by the BOS token {bos!r}"
                                                              if bos else "") + ") ---"
    sys.stdout.write(f"{head}\n{text}\n--- end (the label follows) ---\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
