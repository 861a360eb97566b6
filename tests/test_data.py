"""JSONL loading, the loss mask of tokenised examples, padding, and the resumable batch order."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from palora.errors import DataError
from palora.io.data import (
    EvalExample,
    TrainCollator,
    TrainExample,
    batches,
    load_eval,
    load_train,
    read_jsonl,
    tokenize_train,
)
from tiny_tokenizer import make_tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return make_tiny_tokenizer()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[object]) -> Path:
    return write_lines(path, [json.dumps(r) for r in rows])


# --- reading -------------------------------------------------------------------------------------


def test_train_round_trip(tmp_path):
    rows = [
        {"text": "the quick brown fox"},
        {"prompt": "Question: 1 + 1? Answer:", "completion": " 2", "id": 7},  # extra key ignored
    ]
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(rows[0]), "", "   ", json.dumps(rows[1])])
    assert load_train(path) == [
        TrainExample(prompt="", completion="the quick brown fox"),
        TrainExample(prompt="Question: 1 + 1? Answer:", completion=" 2"),
    ]
    assert read_jsonl(path) == rows


def test_eval_round_trip(tmp_path):
    rows = [
        {"prompt": "Capital of France?", "answer": "Paris", "aliases": ["paris city"]},
        {"prompt": "6 * 7 =", "answer": 42},
        {"prompt": "pi ~", "answer": 3.14, "source": "x"},
    ]
    assert load_eval(write_jsonl(tmp_path / "e.jsonl", rows)) == [
        EvalExample("Capital of France?", "Paris", ("paris city",)),
        EvalExample("6 * 7 =", "42"),
        EvalExample("pi ~", "3.14"),
    ]


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "hi"}).encode() + b"\n")
    assert load_train(path) == [TrainExample("", "hi")]


# (file lines, loader, expected line number or None, a fragment of the message)
BAD_FILES = [
    ([], read_jsonl, None, "empty"),
    (["", "  "], read_jsonl, None, "empty"),
    (['{"text": "a"}', '{"text": '], read_jsonl, 2, "malformed JSON"),
    (['{"text": "a"}', "", "[1, 2]"], read_jsonl, 3, "expected a JSON object, got an array"),
    (['"just a string"'], read_jsonl, 1, "got a string"),
    (['{"text": 3}'], load_train, 1, "'text' must be a string"),
    (['{"text": "a"}', '{"prompt": "p"}'], load_train, 2, "missing key 'completion'"),
    (['{"completion": "c"}'], load_train, 1, "missing key 'prompt'"),
    (['{"prompt": "p", "completion": null}'], load_train, 1, "'completion' must be a string, got null"),
    (['{"question": "q"}'], load_train, 1, "expected 'text', 'messages', or 'prompt' and 'completion'"),
    # TRL's conversational forms, malformed
    (['{"messages": []}'], load_train, 1, "'messages' must be a non-empty list of {'role', 'content'} turns"),
    (['{"messages": [{"role": "user", "content": "q"}]}'], load_train, 1, "must end with an assistant turn"),
    (['{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": 3}]}'], load_train, 1,
     "'messages'[1] must be {'role': system|user|assistant|tool, 'content': a string}"),
    (['{"messages": [{"role": "bot", "content": "q"}, {"role": "assistant", "content": "a"}]}'], load_train, 1,
     "'messages'[0] must be"),
    (['{"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "a"}]}'],
     load_train, 1, "a conversational 'completion' holds assistant turns only"),
    (['{"messages": [], "text": "t"}'], load_train, 1, "has both 'text' and 'messages'"),
    (['{"prompt": [], "answer": "a"}'], load_eval, 1, "'prompt' must be a non-empty list"),
    (['{"text": "t", "prompt": "p", "completion": "c"}'], load_train, 1, "both"),
    (['{"answer": "a"}'], load_eval, 1, "missing key 'prompt'"),
    (['{"prompt": "p"}'], load_eval, 1, "missing key 'answer'"),
    (['{"prompt": "p", "answer": true}'], load_eval, 1, "'answer' must be a string or a number"),
    (['{"prompt": "p", "answer": ["a"]}'], load_eval, 1, "got an array"),
    (['{"prompt": "p", "answer": "a", "aliases": "b"}'], load_eval, 1, "'aliases' must be a list"),
    (['{"prompt": "p", "answer": "a", "aliases": [1]}'], load_eval, 1, "'aliases' must be a list"),
]


@pytest.mark.parametrize("lines, loader, lineno, fragment", BAD_FILES)
def test_bad_file_names_file_and_line(tmp_path, lines, loader, lineno, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(DataError) as info:
        loader(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:{lineno}: " if lineno else f"{path}: ")
    assert fragment in message


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        load_train(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


def test_non_utf8_names_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl:2: not valid UTF-8"):
        load_train(path)


# --- tokenising ----------------------------------------------------------------------------------


def labelled(item: dict[str, list[int]]) -> list[int]:
    return [t for t, label in zip(item["input_ids"], item["labels"]) if label != -100]


def test_mask_covers_exactly_the_prompt(tokenizer):
    examples = [
        TrainExample("Question: what is 12 + 30? Answer:", " 42"),
        TrainExample("The capital of France is", " Paris."),
        TrainExample("", "the quick brown fox"),
    ]
    items = tokenize_train(examples, tokenizer, max_length=128, chat_template=False)
    for ex, item in zip(examples, items):
        assert len(item["input_ids"]) == len(item["labels"])
        assert item["input_ids"][0] == tokenizer.bos_token_id and item["labels"][0] == -100
        ids = labelled(item)
        assert ids[-1] == tokenizer.eos_token_id
        assert tokenizer.decode(ids) == ex.completion + tokenizer.eos_token
        # The masked part is exactly the prompt (with its bos).
        n_prompt = item["labels"].index(ids[0])
        assert item["labels"][:n_prompt] == [-100] * n_prompt
        assert tokenizer.decode(item["input_ids"][:n_prompt], skip_special_tokens=True) == ex.prompt
        assert item["labels"][n_prompt:] == item["input_ids"][n_prompt:]


def test_truncation_and_dropping(tokenizer):
    long_prompt = TrainExample("the quick brown fox jumps over the lazy dog " * 4, " 42")
    short = TrainExample("Answer:", " 42 and more words here")
    items = tokenize_train([long_prompt, short], tokenizer, max_length=6, chat_template=False)
    assert len(items) == 1  # the long prompt leaves no completion token within 6 tokens
    assert len(items[0]["input_ids"]) == 6 and len(items[0]["labels"]) == 6
    assert tokenizer.eos_token_id not in items[0]["input_ids"]  # cut from the right
    with pytest.raises(DataError, match="max_length=6"):
        tokenize_train([long_prompt], tokenizer, max_length=6, chat_template=False)


def test_chat_template_applies_to_prompts_not_text():
    tok = make_tiny_tokenizer()
    tok.chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"
    prompt_ex, text_ex = TrainExample("hi", " there"), TrainExample("", "hi there")
    templated, text = tokenize_train([prompt_ex, text_ex], tok, max_length=64, chat_template=True)
    (plain,) = tokenize_train([prompt_ex], tok, max_length=64, chat_template=False)
    n = templated["labels"].count(-100)
    assert tok.decode(templated["input_ids"][:n], skip_special_tokens=True) == "<|user|>hi<|assistant|>"
    assert labelled(templated) == labelled(plain)
    assert tok.decode(text["input_ids"], skip_special_tokens=True) == "hi there"


def test_collator_right_pads(tokenizer):
    items = [{"input_ids": [1, 5, 6], "labels": [-100, 5, 6]}, {"input_ids": [1, 7], "labels": [-100, 7]}]
    batch = TrainCollator(pad_token_id=tokenizer.pad_token_id)(items)
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[1, 5, 6], [1, 7, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 5, 6], [-100, 7, -100]]
    assert all(t.dtype == torch.long for t in batch.values())


# --- batch order ---------------------------------------------------------------------------------


def take(iterator, n):
    return list(itertools.islice(iterator, n))


@pytest.mark.parametrize("n_items, batch_size", [(10, 3), (10, 5), (4, 7), (1, 2)])
def test_batches_deterministic_and_resumable(n_items, batch_size):
    items = list(range(n_items))
    first = take(batches(items, batch_size, seed=3), 20)
    assert first == take(batches(items, batch_size, seed=3), 20)
    assert all(len(b) == batch_size for b in first)
    for k in (0, 1, 4, 7, 13):
        assert take(batches(items, batch_size, seed=3, start_step=k), 20 - k) == first[k:]
    # Each epoch is a permutation: every item appears once per len(items) stream positions.
    stream = [x for b in first for x in b]
    for e in range(len(stream) // n_items):
        assert sorted(stream[e * n_items : (e + 1) * n_items]) == items


def test_batches_reshuffle_each_epoch_and_depend_on_seed():
    items = list(range(50))
    epochs = take(batches(items, 50, seed=0), 2)
    assert epochs[0] != epochs[1]
    assert take(batches(items, 50, seed=1), 1)[0] != epochs[0]
    with pytest.raises(DataError):
        next(batches([], 2, seed=0))


# --- TRL's conversational formats ------------------------------------------------------------------

TEMPLATE = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"


def test_conversational_lines_are_read_as_turns(tmp_path):
    from palora.io.chat import Turn

    user, answer = {"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": " 5"}
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, user, answer]},
        {"prompt": [user], "completion": [answer]},
        {"prompt": "plain", "completion": " text"},
    ])
    system = Turn("system", "Be brief.")
    assert load_train(path) == [TrainExample((system, Turn("user", "What is 2 + 3?")), " 5"),
                                TrainExample((Turn("user", "What is 2 + 3?"),), " 5"),
                                TrainExample("plain", " text")]
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": [user], "answer": 5}])
    assert load_eval(evals, "numeric") == [EvalExample((Turn("user", "What is 2 + 3?"),), "5")]


def test_conversational_prompts_go_through_the_chat_template(tmp_path, tokenizer):
    """The prompt turns are rendered with the generation prompt; the loss is on the assistant's text alone."""
    from palora.io.data import format_prompt

    tok = make_tiny_tokenizer()
    tok.chat_template = TEMPLATE
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": " 5"}]}])
    (example,) = load_train(path)
    assert format_prompt(tok, example.prompt, chat_template=False) == "<|user|>hi<|assistant|>"
    (item,) = tokenize_train([example], tok, max_length=64, chat_template=False)
    prompt_ids = tok("<|user|>hi<|assistant|>", add_special_tokens=True)["input_ids"]
    completion_ids = tok(" 5", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert item["input_ids"] == prompt_ids + completion_ids
    assert item["labels"] == [-100] * len(prompt_ids) + completion_ids
    with pytest.raises(DataError, match="needs a tokenizer with a chat template"):
        tokenize_train([example], tokenizer, max_length=64, chat_template=False)  # this one has none


def test_a_conversational_completion_is_the_turn_the_template_writes(tmp_path):
    """As TRL trains it: the assistant turn with the template's end-of-turn marker; no second eos when
    that marker is the eos; a template that refuses the turns is a one-line DataError."""
    from palora.io.chat import Turn

    tok = make_tiny_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% if m.role == 'assistant' %}</s>"
                         "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    example = TrainExample((Turn("user", "hi"),), " 5")
    (item,) = tokenize_train([example], tok, max_length=64, chat_template=False)
    completion = tok(" 5</s>", add_special_tokens=False)["input_ids"]
    assert item["labels"][-len(completion):] == completion and item["labels"].count(tok.eos_token_id) == 1
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(DataError, match="cannot render these turns: roles must alternate"):
        tokenize_train([example], tok, max_length=64, chat_template=False)
