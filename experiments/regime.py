"""E3, step one: which skill does the base model already partly have?

    python experiments/regime.py --n 100 --out runs/e3/regime.json
    python experiments/regime.py --shots 3 --data runs/e3/data-cs --out runs/e3/data-cs3

The paper's experts refine a skill their base already has (Transformer² on Llama-3-8B: GSM8K
75.9 → 79.2), so "95 % of the expert" there is about not eroding the base's skill. This measures
the base model (``--model``, default the packaged SmolLM2-135M-Instruct) on every named skill task
of :data:`palora.datasets.skills.SKILL_TASKS`, on ``--n`` questions of the validation split
(data seed 0), by greedy generation and the task's checker, in three prompt forms:

* ``plain``: the project's prompt ``Question: {q}\\nAnswer:``;
* ``chat``: that prompt as one user turn of the tokenizer's chat template;
* ``3-shot``: three solved training items in front of the plain prompt.

A task and form where the base scores 20–40 % is a regime like the paper's (on SmolLM2 none
does in ``plain``; ``chain_sum_2`` does three-shot, 36 ± 5 %, and ``letter_counting`` in the chat
template, 30 ± 5 %, but 57 % of its answers are "1"); prints a table (accuracy ± binomial
standard error) and writes ``--out``.

With ``--shots K --data D``, writes a copy of the data folder ``D`` (``palora data``) into
``--out`` in which every skill prompt, train, val and test, starts with the same ``K`` solved
training items (the first ``K`` lines of ``skill_train.jsonl``: fixed exemplars, as in k-shot
evaluation; val and test hold no training question, so no test question is among them). The
other files are copied byte for byte; ``manifest.json`` gives way to ``shots.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from palora.config import ModelConfig
from palora.datasets.skills import SKILL_TASKS, skill_splits
from palora.evaluation import evaluate
from palora.io.data import EvalExample, read_jsonl
from palora.io.models import load_model_and_tokenizer

FORMS = ("plain", "chat", "3-shot")


def examples(splits: dict[str, list[dict]], form: str) -> list[EvalExample]:
    """The validation questions of ``splits`` (:func:`skill_splits`) in prompt form ``form``."""
    lead = shot_lead(splits["train"], 3) if form == "3-shot" else ""
    return [EvalExample(prompt=lead + line["prompt"], answer=line["answer"]) for line in splits["val"]]


def shot_lead(train: list[dict], k: int) -> str:
    """The first ``k`` training lines, solved, each followed by a blank line."""
    return "".join(f"{line['prompt']}{line['completion']}\n\n" for line in train[:k])


def write_shots(data: Path, k: int, out: Path) -> None:
    """``data`` copied into ``out`` with :func:`shot_lead` in front of every skill prompt."""
    if out.exists():
        raise SystemExit(f"regime.py: {out} exists; remove it or pick another --out")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(data, tmp)
    lead = shot_lead(read_jsonl(data / "skill_train.jsonl"), k)
    for split in ("train", "val", "test"):
        rows = [{**row, "prompt": lead + row["prompt"]} for row in read_jsonl(data / f"skill_{split}.jsonl")]
        (tmp / f"skill_{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    # the source's manifest hashes the source's skill files: replaced by a record of what changed
    (tmp / "manifest.json").unlink(missing_ok=True)
    (tmp / "shots.json").write_text(json.dumps({"source": str(data), "shots": k, "lead": lead}, indent=1))
    tmp.rename(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=ModelConfig().name, help="model name or folder (default: the packaged one)")
    ap.add_argument("--tasks", default=",".join(SKILL_TASKS), help="comma-separated task names")
    ap.add_argument("--n", type=int, default=100, help="validation questions per task")
    ap.add_argument("--forms", default=",".join(FORMS), help="comma-separated prompt forms (a base model without "
                    "a chat template: plain,3-shot)")
    ap.add_argument("--n-train", type=int, default=3,
                    help="training questions drawn before the validation ones (3: as in docs/e3-base.json; the "
                         "data stage's 2000 gives the validation split a run would have)")
    ap.add_argument("--out", type=Path, required=True, help="the table's JSON, or with --shots the new data folder")
    ap.add_argument("--shots", type=int, help="write --data with this many solved exemplars in every skill prompt")
    ap.add_argument("--data", type=Path, help="a data folder of `palora data` (with --shots)")
    args = ap.parse_args()
    if args.shots is not None:
        if args.data is None or args.shots <= 0:
            raise SystemExit("regime.py: --shots K needs K > 0 and --data")
        write_shots(args.data, args.shots, args.out)
        return
    model, tokenizer = load_model_and_tokenizer(ModelConfig(name=args.model))
    rows = []
    for task in args.tasks.split(","):
        checker = SKILL_TASKS[task].checker
        splits = skill_splits(SKILL_TASKS[task], n_train=args.n_train, n_val=args.n, n_test=1, seed=0)
        for form in args.forms.split(","):
            if form not in FORMS:
                raise SystemExit(f"regime.py: unknown form {form}; known: {', '.join(FORMS)}")
            result = evaluate(model, tokenizer, examples(splits, form), checker,
                              chat_template=form == "chat", max_new_tokens=12, batch_size=25,
                              desc=f"{task} {form}", progress=False)
            rows.append({"task": task, "form": form, "accuracy": result.accuracy, "stderr": result.stderr,
                         "n": result.n, "outputs": result.outputs[:5]})
            print(f"{task:22s} {form:7s} {100 * result.accuracy:5.1f} ± {100 * result.stderr:4.1f} %  "
                  f"e.g. {result.outputs[0]!r}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "n": args.n, "rows": rows}, indent=1))
    forms = args.forms.split(",")
    print(f"\n| task | {' | '.join(forms)} |\n|---|{'---|' * len(forms)}")
    for task in args.tasks.split(","):
        cells = [f"{100 * r['accuracy']:.1f} ± {100 * r['stderr']:.1f}" for r in rows if r["task"] == task]
        print(f"| {task} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
