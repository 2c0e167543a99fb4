"""Prompts whose token ids are the tokenizer's own encoding of their text.

Backends score token ids given as segments (plural_icm.backends.base), and prefix reuse needs the
same text to give the same tokens wherever it appears. Encoding pieces of a prompt separately gives
that, but it is only the *canonical* encoding of the prompt's text (``tokenizer.encode(full_text)``,
what a server given the text would compute) when no token of the full encoding would cross a piece
boundary: a boundary where the tokenization is *stable*. Example: SmolLM2's tokenizer encodes a
block ending in "\\n\\n" as one "\\n\\n" token, but in running text "\\n\\nQuestion" becomes "\\n",
"\\n", "Question"; a boundary just *before* the blank line is stable, one after it is not.

This module holds the two operations that keep prompts canonical: checking that separately encoded
pieces concatenate to the canonical encoding (:func:`check_concatenation`), and cutting a canonical
encoding at a text boundary (:func:`encode_split`). Both raise :class:`UnstableBoundaryError`, which
names the tokenizer and the boundary text, instead of scoring tokens the text does not say.
"""

from __future__ import annotations

from typing import Any, Sequence

_SHOW = 24  # characters of context either side of a boundary in error messages


class UnstableBoundaryError(ValueError):
    """A segment boundary where the tokenizer encodes the running text differently."""


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """The canonical token ids of ``text`` (special-token text such as ``<|im_start|>`` is parsed
    as the special token, as ``apply_chat_template(tokenize=True)`` does; no BOS is added)."""
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def tokenizer_name(tokenizer: Any) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def _pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([t]) for t in ids]


def _boundary_error(tokenizer: Any, what: str, left: str, right: str, joined: Sequence[int],
                    separate: Sequence[int], at: int, hint: str) -> UnstableBoundaryError:
    lo = max(0, at - 3)
    return UnstableBoundaryError(
        f"{what}: tokenizer {tokenizer_name(tokenizer)!r} does not keep the segment boundary "
        f"{left[-_SHOW:]!r} | {right[:_SHOW]!r} stable: the full text encodes to "
        f"{_pieces(tokenizer, joined[lo:at + 4])} there, the separately encoded segments give "
        f"{_pieces(tokenizer, separate[lo:at + 4])}. Scoring those tokens would score a prompt that "
        f"is not the encoding of its own text. {hint}")


def check_concatenation(tokenizer: Any, texts: Sequence[str], ids: Sequence[Sequence[int]],
                        what: str, hint: str = "") -> None:
    """Raise :class:`UnstableBoundaryError` unless the canonical encoding of ``"".join(texts)``
    equals the concatenation of ``ids`` (the pieces' own encodings), naming the first boundary
    where they part."""
    joined = encode_text(tokenizer, "".join(texts))
    separate = [t for piece in ids for t in piece]
    if joined == separate:
        return
    at = next((k for k, (a, b) in enumerate(zip(joined, separate)) if a != b),
              min(len(joined), len(separate)))
    # The boundary nearest to the first difference (a merge across it starts at or before it).
    ends, n = [], 0
    for piece in ids[:-1]:
        n += len(piece)
        ends.append(n)
    k = min(range(len(ends)), key=lambda j: abs(ends[j] - at)) if ends else 0
    left, right = "".join(texts[:k + 1]), "".join(texts[k + 1:])
    raise _boundary_error(tokenizer, what, left, right, joined, separate, at, hint)


def encode_split(tokenizer: Any, before: str, after: str, what: str, hint: str = "",
                 head: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """The canonical encoding of ``before + after``, cut where ``before`` ends.

    Returns ``(ids of before, the rest)``; the first part is also ``before``'s own encoding, so it
    is the same for every ``after`` (a reusable prefix). Raises :class:`UnstableBoundaryError` when
    the full text's encoding does not start with ``before``'s. ``head``: ``before``'s encoding when
    the caller has it already (many prompts with one prefix).
    """
    head = encode_text(tokenizer, before) if head is None else [int(t) for t in head]
    full = encode_text(tokenizer, before + after)
    if full[:len(head)] != head:
        at = next((k for k, (a, b) in enumerate(zip(full, head)) if a != b), len(head))
        raise _boundary_error(tokenizer, what, before, after, full, head, at, hint)
    return head, full[len(head):]
