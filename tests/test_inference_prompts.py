"""Prompt formats of in-context inference: a base model is always prompted as plain text."""

from __future__ import annotations

from types import SimpleNamespace

from fake_lm import FakeLM, LineTokenizer

from plural_icm.data.records import Claim, Persona
from plural_icm.inference.predict import PromptBuilder, predict


class TemplatedTokenizer(LineTokenizer):
    """A tokenizer that ships a chat template, as some base checkpoints do (Qwen3-*-Base)."""

    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=False):
        text = "".join(f"<|{m['role']}|>\n{m['content']}\n" for m in messages)
        return text + ("<|assistant|>\n" if add_generation_prompt else "")


INF = SimpleNamespace(labels=[" True", " False"], system_prompt="SYSTEM",
                      example_template="Question: {question}\nClaim: {claim}\nLabel: {label}\n\n",
                      query_template="Question: {question}\nClaim: {claim}\nLabel:",
                      context_policy="error")
PERSONA = Persona("P", "The user is from P.")
CLAIM = Claim(item_id="i", persona_id="P", group_id="g", question_id="q", option_key="0",
              question="Q?", claim="C", gold=True)


def _backend():
    lm = FakeLM()
    lm.tokenizer = TemplatedTokenizer()
    return lm


def _text(builder):
    prompt = builder.prompts(PERSONA, [], [CLAIM])[0]
    return builder.backend.tokenizer.decode([t for seg in prompt for t in seg])


def test_instruct_model_uses_the_chat_template():
    b = PromptBuilder(_backend(), INF)
    assert b.chat and b.labels == [" True", " False"] and "<|assistant|>" in _text(b)


def test_base_model_is_plain_text_even_with_a_chat_template():
    b = PromptBuilder(_backend(), INF, base=True)
    text = _text(b)
    assert not b.chat and "<|" not in text and text.startswith("SYSTEM\n\nThe user is from P.")
    assert b.labels == [" True", " False"]
    rows, used = predict(_backend(), INF, PERSONA, [], [CLAIM], base=True)
    assert len(rows) == 1 and used == 0
