"""How much input energy do the top skill-covariance directions hold, for the skill and the facts?

    python experiments/covariance_share.py --data DATA_DIR --expert OUT/seed0/expert_model

For every target of the expert, ``C_skill = E[x xᵀ]`` over skill-training inputs and ``C_facts``
over knowledge-training inputs (16 batches of 16 each, through the expert); ``Q_f`` = the top
``f`` share of ``C_skill``'s eigenvectors. Prints, per kind of matrix and budget ``f``, the mean
over layers of ``tr(Q_fᵀ C_skill Q_f) / tr(C_skill)`` (the skill's energy the protection holds)
and ``tr(Q_fᵀ C_facts Q_f) / tr(C_facts)`` (the facts' energy it blocks). Writes
``<expert>/../covariance_share.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import torch

from palora.config import resolve
from palora.core.statistics import input_covariance
from palora.core.targets import find_targets
from palora.io.data import TrainCollator, batches, load_train, tokenize_train
from palora.io.models import load_model, load_tokenizer

BUDGETS = (0.02, 0.05, 0.1, 0.25, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--expert", type=Path, required=True)
    args = ap.parse_args()
    cfg = resolve(None, [], {})
    tok = load_tokenizer(str(args.expert))
    model = load_model(cfg.model, path=str(args.expert))
    targets = find_targets(model, cfg.model.target_modules)
    names = [t.name for t in targets]

    def covariance(file: str) -> dict[str, torch.Tensor]:
        items = tokenize_train(load_train(args.data / file), tok, cfg.data.max_length, cfg.data.chat_template)
        collate = TrainCollator(tok.pad_token_id)
        return input_covariance(model, [collate(b) for b in itertools.islice(batches(items, 16, seed=0), 16)],
                                names, progress=False)

    skill, facts = covariance("skill_train.jsonl"), covariance("knowledge_train.jsonl")
    shares: dict[str, dict[float, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for t in targets:
        lam, Q = torch.linalg.eigh(skill[t.name].double())
        lam, Q = lam.flip(0), Q.flip(1)
        Cf = facts[t.name].double()
        for f in BUDGETS:
            q = Q[:, : int(f * Q.shape[0])]
            shares[t.name.rsplit(".", 1)[1]][f].append(
                (float(lam[: q.shape[1]].sum() / lam.sum()), float(torch.trace(q.T @ Cf @ q) / torch.trace(Cf))))
    out = {kind: {str(f): {"skill": sum(s for s, _ in v) / len(v), "facts": sum(x for _, x in v) / len(v)}
                  for f, v in by_f.items()} for kind, by_f in shares.items()}
    for kind, by_f in out.items():
        print(kind, " ".join(f"{f}: skill {v['skill']:.4f} facts {v['facts']:.4f}" for f, v in by_f.items()))
    (args.expert.parent / "covariance_share.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
