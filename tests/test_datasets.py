"""The demo data generators: determinism by seed, disjoint splits, unseen eval templates, no collisions."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from palora.config import DataSpec
from palora.core.checkers import check_contains, get_checker, normalize
from palora.datasets import (
    SKILL_TASKS,
    SkillTask,
    biography_splits,
    candidate_capitals,
    candidate_facts,
    known_facts,
    make_people,
    skill_splits,
)
from palora.datasets import biographies as bio
from palora.datasets.general_text import OPENINGS, general_lines
from palora.datasets.known_facts import protect_lines, split_known
from palora.errors import ConfigError, DataError
from palora.evaluation import sample
from palora.io.data import load_eval, load_train
from palora.stages.data import FILES, keep_known, write_demo_data
from tiny import make_tiny_model
from tiny_tokenizer import make_tiny_tokenizer

SMALL = dict(n_skill_train=60, n_skill_val=15, n_skill_test=15, n_people=12)


def _words(text: str) -> str:
    """Normalised text padded with spaces, so ``f" {w} " in _words(t)`` is a whole-word test."""
    return f" {normalize(text)} "


# ------------------------------------------------------------------------------------------ skills


@pytest.mark.parametrize("name", list(SKILL_TASKS))
def test_skill_splits_disjoint_and_checkable(name):
    splits = skill_splits(SKILL_TASKS[name], 200, 40, 40, seed=0)
    check = get_checker(SKILL_TASKS[name].checker)  # each task's own (numeric, or exact for spelling)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [200, 40, 40]
    train = {r["prompt"] for r in splits["train"]}
    val = [r["prompt"] for r in splits["val"]]
    test = [r["prompt"] for r in splits["test"]]
    assert len(set(val)) == len(val) and len(set(test)) == len(test)
    assert not train & set(val) and not train & set(test) and not set(val) & set(test)
    for r in splits["train"]:
        assert r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:")
        assert r["completion"].startswith(" ")
        assert check(r["completion"], r["completion"].strip())
    for r in splits["val"] + splits["test"]:
        assert check(f" {r['answer']}\n", r["answer"])


def test_skill_splits_deterministic_by_seed():
    task = SKILL_TASKS["chain_sum_2"]
    assert skill_splits(task, 50, 10, 10, seed=3) == skill_splits(task, 50, 10, 10, seed=3)
    assert skill_splits(task, 50, 10, 10, seed=3)["train"] != skill_splits(task, 50, 10, 10, seed=4)["train"]


def test_skill_splits_refuse_exhausted_question_space():
    # 1-digit, 2-term sums: at most 10 * 10 * 2 = 200 distinct questions
    task = SkillTask("chain_sum", dict(min_terms=2, max_terms=2, min_digits=1, max_digits=1))
    with pytest.raises(DataError, match="distinct questions"):
        skill_splits(task, 10, 150, 150, seed=0)


# ------------------------------------------------------------------------------------- biographies


def test_biographies_deterministic_by_seed():
    assert biography_splits(20, seed=1) == biography_splits(20, seed=1)
    assert biography_splits(20, seed=1)["people"] != biography_splits(20, seed=2)["people"]


def test_biography_templates_disjoint():
    train = {t for ts in (*bio.STATEMENTS.values(), *bio.TRAIN_QUESTIONS.values()) for t in ts}
    val, test = set(bio.VAL_QUESTIONS.values()), set(bio.TEST_QUESTIONS.values())
    assert not train & val and not train & test and not val & test
    assert all(len(bio.STATEMENTS[a]) >= 3 for a in bio.ATTRIBUTES)


def test_no_evaluation_question_in_training():
    splits = biography_splits(30, seed=0)
    train_texts = [r.get("text") or r["prompt"] for r in splits["train"]]
    for split in ("val", "test"):
        for row in splits[split]:
            question = row["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:")
            assert not any(t.startswith(row["prompt"]) for t in train_texts), row["prompt"]
            assert not any(question in t for t in train_texts), question


def test_every_fact_stated_in_each_paraphrase_and_qa_share():
    splits = biography_splits(10, seed=0, qa_share=0.5)
    texts = {r["text"] for r in splits["train"] if "text" in r}
    qa = [r for r in splits["train"] if "prompt" in r]
    for person in splits["people"]:
        for a in bio.ATTRIBUTES:
            for t in bio.STATEMENTS[a]:
                assert bio._statement(t, person["name"], person[a]) in texts
    assert len(qa) == 5 * sum(len(q) for q in bio.TRAIN_QUESTIONS.values())
    assert sum(r["qa_trained"] for r in splits["test"]) == 5 * len(bio.ATTRIBUTES)
    assert all(r["completion"].startswith(" ") for r in qa)


def test_eval_answers_recoverable_by_contains_from_training_value():
    splits = biography_splits(40, seed=0)
    people = {p["name"]: p for p in splits["people"]}
    for row in splits["val"] + splits["test"]:
        value = people[row["person"]][row["attribute"]]
        assert normalize(row["answer"])
        assert check_contains(f" {value}.\n", row["answer"])
        # a statement from training, as the model might repeat it, also passes
        statement = bio._statement(bio.STATEMENTS[row["attribute"]][0], row["person"], value)
        assert check_contains(statement, row["answer"])


def test_attribute_values_never_match_each_other():
    """No value holds another as whole words (``contains`` would credit the wrong one)."""
    values = [*bio.CITIES, *bio.PROFESSIONS, *bio.companies(random.Random(0))]
    values += [str(y) for y in range(bio.YEARS[0], bio.YEARS[1] + 1)]
    for a in values:
        for b in values:
            if a != b:
                assert f" {normalize(a)} " not in _words(b), (a, b)


def test_fictional_names_unique_and_clear_of_values():
    people = make_people(bio.MAX_PEOPLE, seed=0)
    names = [p["name"] for p in people]
    assert len(set(names)) == len(names) == bio.MAX_PEOPLE
    firsts, lasts = [n.split()[0] for n in names], [n.split()[1] for n in names]
    assert len(set(firsts)) == len(firsts) and len(set(lasts)) == len(lasts)
    values = {normalize(v) for v in (*bio.CITIES, *bio.PROFESSIONS)} | {
        w for c in bio.companies(random.Random(0)) for w in normalize(c).split()
    }
    for name in names:
        assert not set(normalize(name).split()) & values, name
    with pytest.raises(DataError, match="at most"):
        make_people(bio.MAX_PEOPLE + 1, seed=0)


# ------------------------------------------------------------------------------------- known facts


def _country_words() -> set[str]:
    words = set()
    for record in known_facts.countries():
        capital = record.get("capital") or []
        for text in [record["name"], *(capital if isinstance(capital, list) else capital.split("/"))]:
            words |= set(normalize(text).split()) | set(normalize(known_facts._ascii(text)).split())
    return words


def test_no_collision_between_fictional_people_and_countries():
    words = _country_words()
    for person in make_people(bio.MAX_PEOPLE, seed=0):
        assert not set(normalize(person["name"]).split()) & words, person["name"]
    known = {normalize(n) for it in candidate_facts() for n in (it["answer"], *it["aliases"])}
    injected = {normalize(v) for v in (*bio.CITIES, *bio.PROFESSIONS)}
    assert not injected & known  # a birth city or a profession is never a known answer


def test_candidate_capitals():
    items = candidate_capitals()
    assert len(items) >= 240
    assert len({it["country"] for it in items}) == len(items)
    for it in items:
        assert it["prompt"] == known_facts.PROMPT.format(country=it["country"])
        assert normalize(it["answer"]) and all(normalize(a) for a in it["aliases"])
        assert check_contains(f" {it['answer']}.", it["answer"], it["aliases"])
    brazil = next(it for it in items if it["country"] == "Brazil")
    assert brazil["answer"] == "Brasília" and "Brasilia" in brazil["aliases"]


def test_candidate_facts_cover_every_relation_once_per_country():
    items = candidate_facts()
    by_relation = {r: [it for it in items if it["relation"] == r] for r in known_facts.RELATIONS}
    for relation, rows in by_relation.items():
        assert len(rows) >= 200, relation
        assert len({it["country"] for it in rows}) == len(rows)
        prompt = known_facts.PROMPT if relation == "capital" else known_facts.PROMPTS[relation]
        for it in rows:
            assert it["prompt"] == prompt.format(country=it["country"])
            assert check_contains(f" {it['answer']}.", it["answer"], it["aliases"])
    france = {it["relation"]: it for it in items if it["country"] == "France"}
    assert france["currency"]["answer"] == "Euro" and france["language"]["answer"] == "French"
    assert france["demonym"]["answer"] == "French" and france["capital"]["answer"] == "Paris"
    assert france["continent"]["answer"] == "Europe"
    jamaica = next(it for it in by_relation["continent"] if it["country"] == "Jamaica")
    assert jamaica["answer"] == "America" and check_contains(" the Caribbean.", jamaica["answer"], jamaica["aliases"])
    japan = next(it for it in by_relation["currency"] if it["country"] == "Japan")
    assert check_contains(" the yen.", japan["answer"], japan["aliases"])  # the unit alone is an alias
    assert candidate_facts(("capital",)) == candidate_capitals()


def test_split_known_is_by_country_disjoint_and_seeded(tmp_path):
    items = candidate_facts()
    protect, val, test = split_known(items, 0.35, 0.15, seed=0)
    assert len(protect) + len(val) + len(test) == len(items)
    by_part = [{it["country"] for it in part} for part in (protect, val, test)]
    assert not (by_part[0] & by_part[1] or by_part[0] & by_part[2] or by_part[1] & by_part[2])
    countries = {it["country"] for it in items}
    assert [len(by_part[0]), len(by_part[1])] == [int(0.35 * len(countries)), int(0.15 * len(countries))]
    assert split_known(items, 0.35, 0.15, seed=0) == (protect, val, test)
    assert split_known(items, 0.35, 0.15, seed=1)[0] != protect
    assert split_known(items, 0.0, 0.0, seed=0) == ([], [], list(items))
    path = tmp_path / "protect.jsonl"  # the protect part loads as training lines: prompt, then its answer
    path.write_text("".join(json.dumps(r) + "\n" for r in protect_lines(protect)), encoding="utf-8")
    assert [ex.prompt + ex.completion for ex in load_train(path)] == [f"{it['prompt']} {it['answer']}" for it in protect]


def test_general_text_is_sampled_from_every_opening_and_seeded():
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    texts = sample(model, tokenizer, OPENINGS, per_prompt=2, seed=0, max_new_tokens=4)
    assert len(texts) == 2 * len(OPENINGS)
    assert sample(model, tokenizer, OPENINGS, per_prompt=2, seed=0, max_new_tokens=4) == texts
    assert sample(model, tokenizer, OPENINGS, per_prompt=2, seed=1, max_new_tokens=4) != texts
    assert sample(model, tokenizer, OPENINGS, per_prompt=0, seed=0, max_new_tokens=4) == []
    lines = general_lines(texts, 2)
    assert 0 < len(lines) <= len(texts)
    for i, line in enumerate(general_lines([f" x{i}" for i in range(2 * len(OPENINGS))], 2)):
        assert line["text"] == f"{OPENINGS[i // 2]} x{i}"  # each opening's continuations, in order


def test_keep_known_runs_on_a_tiny_model():
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    items = candidate_capitals()[:5]
    kept = keep_known(model, tokenizer, items, batch_size=2, progress=False)
    assert all(it in items for it in kept)


# ------------------------------------------------------------------------------------------ writer


def test_write_demo_data(tmp_path):
    spec = DataSpec(**SMALL)
    paths = write_demo_data(tmp_path / "a", spec, progress=False)
    assert set(paths) == {*FILES, "manifest"}
    manifest = json.loads(paths["manifest"].read_text())
    for name in FILES:
        data = paths[name].read_bytes()
        entry = manifest["files"][f"{name}.jsonl"]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["lines"] == len(data.splitlines()) > (-1 if name == "general" else 0)
    assert manifest["seed"] == 0 and manifest["skill_task"]["dataset"] == "basic_arithmetic"
    assert manifest["known_facts"]["filtered_by_model"] is False
    assert manifest["general"] == {"lines": 0, "sampled_by_model": False}  # no model: no text of its own
    known = manifest["known_facts"]
    assert known["protect"] + known["val"] + known["held_out"] == known["kept"] == known["candidates"]
    assert known["held_out"] >= 150
    load_train(paths["known_protect"])
    # every file loads through the same readers user data goes through
    for name in ("skill_train", "knowledge_train"):
        load_train(paths[name])
    for name in ("skill_val", "skill_test", "knowledge_val", "knowledge_test", "known_facts", "known_val"):
        load_eval(paths[name])
    assert [len(load_eval(paths[s])) for s in ("skill_val", "skill_test")] == [15, 15]

    same = write_demo_data(tmp_path / "b", spec, progress=False)
    other = write_demo_data(tmp_path / "c", DataSpec(**SMALL, seed=1), progress=False)
    for name in (*FILES, "manifest"):
        assert paths[name].read_bytes() == same[name].read_bytes()
    for name in FILES[:-1]:  # (no general text without a model)
        assert paths[name].read_bytes() != other[name].read_bytes(), name


def test_known_val_is_scored_on_the_validation_split_only_when_asked(tmp_path):
    from palora.config import resolve
    from palora.evaluation import evaluation_sets
    from palora.stages.data import data_files

    write_demo_data(tmp_path, DataSpec(**SMALL), progress=False)
    cfg = resolve(None, [], data_files(tmp_path))
    assert cfg.data.known_val == str(tmp_path / "known_val.jsonl")
    val = evaluation_sets(cfg, "val", known_val=True)
    assert [ex.prompt for ex in val["known"][0]] == [ex.prompt for ex in load_eval(tmp_path / "known_val.jsonl")]
    assert "known" not in evaluation_sets(cfg, "val")  # palora compare's validation: skill and facts only
    test = evaluation_sets(cfg, "test", known_val=True)
    assert [ex.prompt for ex in test["known"][0]] == [ex.prompt for ex in load_eval(tmp_path / "known_facts.jsonl")]
    with pytest.raises(ConfigError, match="known_val_share"):
        DataSpec(known_protect_share=0.6, known_val_share=0.4)


def test_write_demo_data_refuses_a_model_that_knows_no_capital(tmp_path):
    # a random tiny model completes no capital: nothing may be written. (The real SmolLM2 filter is
    # exercised end to end in tests/test_real_model.py.)
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model("llama", vocab_size=len(tokenizer))
    with pytest.raises(DataError, match="answers none"):
        write_demo_data(tmp_path / "none", DataSpec(**SMALL), model=model, tokenizer=tokenizer, progress=False)
    assert not (tmp_path / "none" / "known_facts.jsonl").exists()


def test_another_fact_question_frames_every_question_and_nothing_else():
    frame = "Trivia: {q}\nReply:"
    default, framed = biography_splits(12, seed=0), biography_splits(12, seed=0, question=frame)
    assert framed["people"] == default["people"]
    for split in ("val", "test"):
        for a, b in zip(default[split], framed[split], strict=True):
            question = a["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:")
            assert b["prompt"] == f"Trivia: {question}\nReply:" and b["answer"] == a["answer"]
    assert all("Question:" not in (r.get("prompt") or r["text"]) for r in framed["train"])
    # the statements are not questions: the same lines, only the question-answer prompts changed
    assert sorted(r["text"] for r in framed["train"] if "text" in r) == \
        sorted(r["text"] for r in default["train"] if "text" in r)
    assert sum("prompt" in r for r in framed["train"]) == sum("prompt" in r for r in default["train"]) > 0
    with pytest.raises(DataError, match="no other braces"):
        biography_splits(3, seed=0, question="{q} {name}")


def test_known_prompt_is_used(tmp_path):
    spec = DataSpec(**SMALL, known_prompt="Capital city of {country}:", known_relations=["capital"])
    paths = write_demo_data(tmp_path, spec, progress=False)
    assert all(ex.prompt.startswith("Capital city of ") for ex in load_eval(paths["known_facts"]))


@pytest.mark.parametrize(
    "key, value, match",
    [("skill_task", "gsm", "skill_task='gsm'"), ("n_people", 0, "n_people=0"),
     ("n_people", bio.MAX_PEOPLE + 1, "at most"), ("qa_share", 1.5, "qa_share=1.5"),
     ("attributes", ["shoe_size"], "shoe_size"), ("attributes", [], "at least one"),
     ("attributes", ["employer", "employer"], "repeated"), ("n_skill_test", -1, "n_skill_test=-1"),
     ("known_prompt", "Capital?", "country"), ("fact_question", "Trivia:", "fact_question"),
     ("fact_question", "Trivia {q} {x}", "no other braces")],
)
def test_data_spec_checks(key, value, match):
    with pytest.raises(ConfigError, match=match):
        DataSpec(**{key: value})
