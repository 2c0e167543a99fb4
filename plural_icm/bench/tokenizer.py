"""A byte-level BPE tokenizer trained locally on a list of words (no download).

Every text encodes (byte-level: no unknown tokens) and every word of the list, with and without a
leading space, becomes one token, like the real BPE tokenizers the label rule is written for. Used
by the GPU check (random weights of a real architecture need some tokenizer) and by the tests'
tiny models.
"""

from __future__ import annotations

from typing import Iterable


def train_word_tokenizer(words: Iterable[str]):
    """A ``PreTrainedTokenizerFast`` whose vocabulary holds ``words`` as single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = list(dict.fromkeys(words))
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # Enough merges to turn every word (with and without a leading space) into one token.
    n_merges = sum(2 * (len(w.encode()) + 1) for w in words) + 64
    trainer = trainers.BpeTrainer(vocab_size=len(alphabet) + len(specials) + n_merges,
                                  special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=1)
    corpus = []
    for w in words:
        corpus += [w] * 5 + [" " + w] * 10 + ["\n" + w, w + ":", w + "."]
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>")
