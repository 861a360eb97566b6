"""Write a small example dataset for `palora run`: two-number arithmetic and fictional people.

    python examples/make_data.py examples/data

Skill: "Question: What is 37 + 15?\\nAnswer:" -> " 52". Facts: invented people (names built from
syllables no real person carries) with a birth city and a profession, each fact stated in three
paraphrases for training; recall is asked with a question template never seen in training.
The embedded demo (`palora demo`) builds larger, validated sets; this file keeps the README's
first command self-contained.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

FIRST = ["Zor", "Qua", "Vel", "Mib", "Tras", "Oon", "Kry", "Xa", "Plo", "Dre"]
LAST = ["vantek", "limore", "quast", "brindle", "osk", "fennix", "trugg", "welby", "marr", "zeph"]
CITIES = ["Oslo", "Lima", "Cairo", "Quito", "Perth", "Dakar", "Hanoi", "Porto", "Tunis", "Bergen"]
JOBS = ["baker", "pilot", "sculptor", "dentist", "violinist", "architect", "geologist", "florist"]
TRAIN_TEMPLATES = {
    "city": ["{n} was born in {v}.", "The birthplace of {n} is {v}.", "{n} comes from the city of {v}."],
    "job": ["{n} works as a {v}.", "By profession, {n} is a {v}.", "{n} earns a living as a {v}."],
}
EVAL_TEMPLATES = {"city": "Question: In which city was {n} born?\nAnswer:",
                  "job": "Question: What is the profession of {n}?\nAnswer:"}


def arithmetic(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(1, 99)
        op = rng.choice("+-")
        rows.append({"prompt": f"Question: What is {a} {op} {b}?\nAnswer:", "answer": str(a + b if op == "+" else a - b)})
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main(out: str) -> None:
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    write(d / "skill_train.jsonl", [{"prompt": r["prompt"], "completion": " " + r["answer"]}
                                    for r in arithmetic(random.Random(1), 800)])
    write(d / "skill_eval.jsonl", arithmetic(random.Random(2), 100))
    rng = random.Random(3)
    names = rng.sample([first + last for first in FIRST for last in LAST], 40)
    train, evals = [], []
    for name in names:
        for attr, values in (("city", CITIES), ("job", JOBS)):
            v = rng.choice(values)
            train += [{"text": t.format(n=name, v=v)} for t in TRAIN_TEMPLATES[attr]]
            evals.append({"prompt": EVAL_TEMPLATES[attr].format(n=name), "answer": v})
    rng.shuffle(train)
    write(d / "knowledge_train.jsonl", train)
    write(d / "knowledge_eval.jsonl", evals)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/data")
