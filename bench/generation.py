"""Generation rows: the merged PALoRA model against the base, and batched evaluation throughput.

The merged model is what PALoRA ends with: the SVF expert merged into the weights (``W_z``),
then the orthogonal LoRA baked (``A' = A P_in``, ``B' = P_out B``) and merged (``W_z + ΔW``).
It is a stock model of the same architecture, so its generation speed must be the base's
(``ratio = 1`` within the noise of the measurement).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.nn.utils import parametrize

from palora.config import EvalConfig
from palora.core.linalg import SVD
from palora.core.orthogonal import add_orthogonal_lora, bake_projections, lora_layer
from palora.core.subspace import Subspace
from palora.core.svf import SVFLinear, add_svf, merge_svf
from palora.evaluation import generate
from palora.io.data import format_prompt
from table import Row
from timer import alternate, median, relative_spread

#: a merged model's speed is "the base's" when the ratio is within this or twice the noise
MIN_TOLERANCE = 0.03


def precomputed(svds: dict[str, SVD]) -> Callable:
    """A ``decompose`` for :func:`palora.core.svf.add_svf` that hands out decompositions made already."""
    return lambda targets: ((t, svds[t.name]) for t in targets)


@torch.no_grad()
def build_merged(base: nn.Module, svds: dict[str, SVD], subspaces: dict[str, Subspace], rank: int = 16,
                 alpha: float = 32.0, seed: int = 0) -> nn.Module:
    """A copy of ``base`` through the whole method: SVF expert (random z near 1) merged, orthogonal
    LoRA (random A, B) baked and merged. ``base`` is left as it was."""
    model = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    for layer in add_svf(model, "linear", progress=False, decompose=precomputed(svds)).values():
        layer.z.add_(0.05 * torch.randn(layer.z.shape, generator=g).to(layer.z))
    merge_svf(model)
    torch.manual_seed(seed)
    peft_model = add_orthogonal_lora(model, subspaces, rank=rank, alpha=alpha)
    for name in subspaces:
        B = lora_layer(peft_model, name).lora_B["default"]
        raw = B.parametrizations.weight.original if parametrize.is_parametrized(B, "weight") else B.weight
        raw.copy_(1e-3 * torch.randn(raw.shape, generator=g).to(raw))
    bake_projections(peft_model)
    return peft_model.merge_and_unload()


def is_stock_copy(model: nn.Module, base: nn.Module) -> bool:
    """Same parameter names, shapes, dtypes and contiguity as ``base``, and no adapter module left."""
    if any(isinstance(m, (SVFLinear, LoraLayer)) for m in model.modules()):
        return False
    a, b = model.state_dict(), base.state_dict()
    return list(a) == list(b) and all(
        a[k].shape == b[k].shape and a[k].dtype == b[k].dtype and a[k].is_contiguous() == b[k].is_contiguous()
        for k in a)


def merged_generation_row(base: nn.Module, merged: nn.Module, ids: torch.Tensor, new_tokens: int,
                          reps: int, warmup: int, device: torch.device) -> Row:
    """Seconds per greedy ``generate`` of ``new_tokens`` for every row of ``ids`` (KV cache), both
    forced to the same length (``min_new_tokens``) so that an early eos changes nothing."""
    mask = torch.ones_like(ids)
    options = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "use_cache": True,
               "pad_token_id": 0}

    def run(model: nn.Module) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return model.generate(input_ids=ids, attention_mask=mask, **options)
        return call

    # the baseline is a copy of the base made like the merged model (deepcopy), so that the two
    # differ only in what the method changed, not in where their tensors were allocated
    twin = copy.deepcopy(base).eval()
    merged.eval()
    times = alternate({"base": run(twin), "merged": run(merged)}, device, reps, warmup)
    del twin
    ours, baseline = median(times["merged"]), median(times["base"])
    noise = max(relative_spread(times["base"]), relative_spread(times["merged"]))
    tolerance = max(MIN_TOLERANCE, 2 * noise)
    stock = is_stock_copy(merged, base)
    row = Row("merged_generation", ours, baseline, f"1.00 within noise (±{tolerance:.3f})", "s/generate",
              device.type, note=f"batch {ids.shape[0]}, prompt {ids.shape[1]}, {new_tokens} new tokens, greedy, KV "
              f"cache; merged = SVF expert + PALoRA merged; stock architecture: {stock}",
              extra={"noise": noise, "stock": stock})
    row.ok = stock and abs(row.ratio - 1) <= tolerance
    return row


def eval_prompts(tokenizer, n: int) -> list[str]:
    """``n`` short arithmetic questions as evaluation prompts (chat template when the tokenizer has one)."""
    g = torch.Generator().manual_seed(0)
    pairs = torch.randint(10, 99, (n, 2), generator=g).tolist()
    return [format_prompt(tokenizer, f"What is {a} + {b}? Answer with the number only.", chat_template=True)
            for a, b in pairs]


def eval_throughput_row(model: nn.Module, tokenizer, n_items: int, max_new_tokens: int, reps: int,
                        warmup: int, device: torch.device, batch_size: int | None = None) -> Row:
    """Items per second of :func:`palora.evaluation.generate` (greedy, KV cache, left padding) at
    the evaluation's batch size against one prompt at a time."""
    batch = min(batch_size or EvalConfig().batch_size, n_items)
    prompts = eval_prompts(tokenizer, n_items)

    def run(size: int) -> Callable[[], object]:
        return lambda: generate(model, tokenizer, prompts, max_new_tokens, size, progress=False)

    times = alternate({"one": run(1), "batched": run(batch)}, device, reps, warmup)
    ours, baseline = n_items / median(times["batched"]), n_items / median(times["one"])
    row = Row("eval_throughput", ours, baseline, ">= 1 (batched faster than one at a time)", "items/s",
              device.type, note=f"palora.evaluation.generate, {n_items} prompts, up to {max_new_tokens} new tokens, "
              f"batch size {batch} (EvalConfig default {EvalConfig().batch_size}) vs 1, KV cache on",
              extra={"batch_size": batch, "items": n_items})
    row.ok = row.ratio >= 1
    return row
