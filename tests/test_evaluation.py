"""Batched greedy generation equals one prompt at a time; evaluate() scores with the checker."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from palora.errors import ConfigError, DataError
from palora.evaluation import EvalResult, evaluate, generate, retention
from palora.io.data import EvalExample, format_prompt
from tiny_tokenizer import make_tiny_tokenizer

PROMPTS = [
    "Question: what is 12 + 30? Answer:",
    "The capital of France is",
    "0 1 2",
    "Alice has 3 apples and Bob has 5 apples, so they have",
    "the quick",
]


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    # Sampling settings a released model often ships with; greedy decoding must ignore them.
    gen = model.generation_config
    gen.do_sample, gen.temperature, gen.top_p, gen.top_k, gen.min_p = True, 0.6, 0.9, 20, 0.05
    return model


def test_batched_equals_one_at_a_time_and_restores_state(model, tokenizer):
    model.train()
    tokenizer.padding_side = "right"
    alone = [generate(model, tokenizer, [p], 6, batch_size=1, progress=False)[0] for p in PROMPTS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batched = generate(model, tokenizer, PROMPTS, 6, batch_size=4, progress=False)
    assert batched == alone
    assert all(isinstance(out, str) for out in batched) and any(batched)
    assert model.training is True
    assert tokenizer.padding_side == "right"


def test_no_sampling_warnings(model, tokenizer, caplog):
    logging.Logger.warning_once.cache_clear()  # transformers logs each warning once per process
    with caplog.at_level(logging.WARNING):
        generate(model, tokenizer, PROMPTS[:2], 2, batch_size=2, progress=False)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_missing_pad_token_falls_back_to_eos(model):
    tok = make_tiny_tokenizer()
    expected = generate(model, tok, PROMPTS, 4, batch_size=3, progress=False)
    tok.pad_token = None
    assert generate(model, tok, PROMPTS, 4, batch_size=3, progress=False) == expected
    assert tok.pad_token is None


def test_generate_edge_cases(model, tokenizer):
    assert generate(model, tokenizer, [], 4, batch_size=2) == []
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, tokenizer, PROMPTS, 4, batch_size=0)


def test_evaluate_scores_with_the_checker(model, tokenizer):
    model.eval()
    outputs = generate(model, tokenizer, PROMPTS, 5, batch_size=2, progress=False)
    # Answers built from the outputs themselves: the first two are right, the rest wrong.
    answers = [out if i < 2 else out + " nope" for i, out in enumerate(outputs)]
    examples = [EvalExample(p, a) for p, a in zip(PROMPTS, answers)]
    kwargs = dict(chat_template=False, max_new_tokens=5, batch_size=2, progress=False)
    result = evaluate(model, tokenizer, examples, "contains", **kwargs)
    assert isinstance(result, EvalResult)
    assert result.outputs == outputs
    assert result.correct == [True, True, False, False, False]
    assert result.n == 5 and result.accuracy == pytest.approx(0.4)
    assert result.stderr == pytest.approx((0.4 * 0.6 / 5) ** 0.5)

    limited = evaluate(model, tokenizer, examples, "contains", limit=2, **kwargs)
    assert limited.n == 2 and limited.accuracy == 1.0 and limited.stderr == 0.0

    with pytest.raises(ConfigError, match="unknown checker"):
        evaluate(model, tokenizer, examples, "fuzzy", **kwargs)
    with pytest.raises(DataError, match="cannot parse the answer 'Paris'"):
        evaluate(model, tokenizer, [EvalExample("Capital?", "Paris")], "numeric", **kwargs)
    with pytest.raises(DataError, match="no evaluation examples"):
        evaluate(model, tokenizer, examples, "contains", limit=0, **kwargs)


def test_format_prompt_uses_chat_template_only_when_asked():
    tok = make_tiny_tokenizer()
    assert format_prompt(tok, "hi", chat_template=True) == "hi"  # no template: unchanged
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    assert format_prompt(tok, "hi", chat_template=False) == "hi"
    assert format_prompt(tok, "hi", chat_template=True) == "<|user|>hi<|assistant|>"
    # A template that writes the bos itself does not get a second one from the tokenizer.
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    ids = tok(format_prompt(tok, "hi", chat_template=True), add_special_tokens=True)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_retention():
    assert retention(0.3, 0.6) == pytest.approx(0.5)
    assert retention(0.3, 0.0) is None


def test_generation_stops_at_model_and_tokenizer_eos(model, tokenizer):
    inputs = tokenizer(PROMPTS[:1], return_tensors="pt")
    with torch.inference_mode():
        new = model.generate(**inputs, do_sample=False, max_new_tokens=6)[0, inputs["input_ids"].shape[1] :]
    stop = int(new[2])  # a token the model's generation_config lists as an extra eos
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [stop]
    try:
        [short] = generate(model, tokenizer, PROMPTS[:1], 6, batch_size=1, progress=False)
    finally:
        model.generation_config.eos_token_id = saved
    end = new.tolist().index(stop) + 1
    assert short == tokenizer.decode(new[:end], skip_special_tokens=True)
    assert end < 6 and short != tokenizer.decode(new, skip_special_tokens=True)


def test_skill_mistakes_take_the_facts_numbers_from_the_knowledge_set_and_stop_at_n():
    from palora.evaluation import skill_mistakes

    skill = [EvalExample(prompt=f"q{i}", answer=a) for i, a in enumerate(["-37", "57", "12", "40"])]
    facts = [EvalExample(prompt="Born?", answer="1901", aliases=("nineteen oh one",)),
             EvalExample(prompt="City?", answer="Quell")]
    # the first three questions were scored (eval.limit=3): a fact's beginning, a slip, words
    result = EvalResult(accuracy=0.0, n=3, correct=[False] * 3, outputs=[" 19", " 58", " none"])
    sets = {"skill": (skill, "numeric"), "knowledge": (facts, "contains")}
    assert skill_mistakes(sets, result) == {"near": 1, "fact": 1, "other": 0, "words": 1}
    # without the facts' numbers the same 19 is another number; a skill in words has no kinds
    assert skill_mistakes({"skill": (skill, "numeric")}, result) == {"near": 1, "fact": 0, "other": 1, "words": 1}
    assert skill_mistakes({"skill": (skill, "exact"), "knowledge": (facts, "contains")}, result) is None
