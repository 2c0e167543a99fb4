"""Tiny random causal LMs with locally built tokenizers, for plumbing tests (no downloads).

``make_tiny_model_dir(path)`` writes a ``save_pretrained`` folder (model + tokenizer) in well under
a second. The tokenizer is a byte-level BPE trained on the given words, so any text encodes (no
unknown tokens) and every vocabulary word with a leading space (``" True"``) is one token, like the
real BPE tokenizers the label rule is written for. ``arch="gemma3"`` builds a model with sliding-window
attention layers (window ``sliding_window``) to test prefix reuse across windowed layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

DEFAULT_WORDS: tuple[str, ...] = (
    "True", "False", "Question", "Claim", "I", "think", "this", "claim", "is", "the", "a", "of",
    "Do", "you", "agree", "that", "people", "should", "be", "more", "less", "government", "good",
    "bad", "yes", "no", "Persona", "Answer", "Assistant", "User", "ends", "sentence", "with", "and",
)


def build_tokenizer(vocab_words: Sequence[str] = DEFAULT_WORDS):
    """A ``PreTrainedTokenizerFast`` (byte-level BPE) trained on ``vocab_words``."""
    from plural_icm.bench.tokenizer import train_word_tokenizer

    return train_word_tokenizer(vocab_words)


def make_tiny_model_dir(path: str | Path, vocab_words: Sequence[str] = DEFAULT_WORDS, seed: int = 0,
                        max_position_embeddings: int = 8192, arch: str = "llama",
                        sliding_window: int = 16) -> Path:
    """Write a tiny random causal LM + tokenizer into ``path`` and return the folder."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(vocab_words)
    common = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=max_position_embeddings, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=False,
                  initializer_range=0.2)  # peaked logits, so numerical mistakes show up
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM
        config, cls = LlamaConfig(**common), LlamaForCausalLM
    elif arch == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig
        config = Gemma3TextConfig(**common, sliding_window=sliding_window,
                                  layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                  query_pre_attn_scalar=16)
        cls = Gemma3ForCausalLM
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; use 'llama' or 'gemma3'")
    torch.manual_seed(seed)
    model = cls(config).eval()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
