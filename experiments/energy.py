"""How much of the skill's (and the facts') input energy does the protected subspace hold?

    python experiments/energy.py --data DATA_DIR --run OUT/seed0 [--fraction 0.5]

For every target of the SVF expert and a probe selecting ``S`` by the ``activation`` score, the
share of ``E‖x‖²`` (over skill-training inputs, then over knowledge-training inputs) that lies in
``span(V_S)`` and in ``span(V)`` (all r components; for a wide matrix such as ``down_proj``,
n > r, the rest of the input space is W's null space, which the input-side projection cannot
protect). Averaged per kind of matrix. Writes ``<run>/energy.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import torch

from palora.config import resolve
from palora.core.probe import SelectionRule, component_scores, select
from palora.core.svf import add_svf, effective_scale, load_svf_state, svf_layers
from palora.io.artifacts import RunDir, load_svf_expert
from palora.io.data import TrainCollator, batches, load_train, tokenize_train
from palora.io.models import load_model_and_tokenizer


def input_energy(model, items, collate, n_batches=16) -> dict[str, tuple[torch.Tensor, float]]:
    """Per SVF layer: E[(v_iᵀx)²] (r,) and E‖x‖², over non-padding tokens."""
    layers = svf_layers(model)
    proj = {n: torch.zeros_like(layer.sigma) for n, layer in layers.items()}
    total = defaultdict(float)
    mask = {}

    def hook(name):
        def fn(module, inputs, output):
            x = inputs[0].float() * mask["m"][..., None]
            proj[name] += ((x @ module.V.float()) ** 2).sum(dim=(0, 1))
            total[name] += float((x**2).sum())
        return fn

    hs = [layer.register_forward_hook(hook(n)) for n, layer in layers.items()]
    tokens = 0
    with torch.no_grad():
        for b in itertools.islice(batches(items, 16, seed=0), n_batches):
            batch = collate(b)
            mask["m"] = batch["attention_mask"].float()
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            tokens += int(batch["attention_mask"].sum())
    for h in hs:
        h.remove()
    return {n: (proj[n] / tokens, total[n] / tokens) for n in layers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--fraction", type=float, default=0.5)
    args = ap.parse_args()
    rd = RunDir(args.run)
    cfg = resolve(rd.config if rd.config.is_file() else None)
    state, meta = load_svf_expert(rd.svf_expert, None)
    model, tok = load_model_and_tokenizer(cfg.model)
    add_svf(model, meta["parametrization"], progress=False)
    load_svf_state(model, state)
    collate = TrainCollator(tok.pad_token_id)
    sets = {name: tokenize_train(load_train(args.data / f"{name}_train.jsonl"), tok, 256, False)
            for name in ("skill", "knowledge")}
    energy = {name: input_energy(model, items, collate) for name, items in sets.items()}
    layers = svf_layers(model)
    scores = {n: component_scores(effective_scale(layer.z, layer.sigma, meta["parametrization"]), layer.sigma, "activation",
                                  energy["skill"][n][0]) for n, layer in layers.items()}
    chosen = select(scores, SelectionRule("fraction", fraction=args.fraction))
    out = defaultdict(lambda: defaultdict(list))
    for n in layers:
        kind = n.rpartition(".")[2]
        for data_name, e in energy.items():
            per_comp, tot = e[n]
            out[kind][f"{data_name}: share in span(V_S)"].append(float(per_comp[chosen[n]].sum()) / tot)
            out[kind][f"{data_name}: share in span(V)"].append(float(per_comp.sum()) / tot)
    summary = {k: {m: sum(v) / len(v) for m, v in d.items()} for k, d in out.items()}
    print(json.dumps(summary, indent=1))
    (rd.root / "energy.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
