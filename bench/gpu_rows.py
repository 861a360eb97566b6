"""The rows of ``--device cuda``: 8B-shaped layers and models with random weights.

* bench/layer_rows.py on one 14336 x 4096 bf16 matrix and 8192 tokens;
* bench/decomposition.py on the 96 MLP matrices of Llama-3.1-8B;
* ``merged_generation`` on a Llama-3.1-8B-shaped model cut to ``gen_layers`` decoder layers
  (full width, full vocabulary): the base against the same model through SVF and PALoRA, merged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from decomposition import decomposition_row
from generation import build_merged, merged_generation_row
from layer_rows import LayerSettings, layer_rows
from model_rows import decompose, spread_subspaces
from table import Row


def llama_8b_shaped(layers: int, device: torch.device, dtype: torch.dtype = torch.bfloat16) -> LlamaForCausalLM:
    """Llama-3.1-8B's widths (hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocabulary 128256), random."""
    config = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def gpu_rows(quick: bool, log: Callable[[str], None]) -> list[Row]:
    device = torch.device("cuda")
    rows: list[Row] = []
    log("8B-shaped layer: dense, LoRA, PALoRA, SVF")
    s = LayerSettings(reps=3, warmup=1, inner=2) if quick else LayerSettings()
    rows += layer_rows(s, device)
    torch.cuda.empty_cache()
    log("decomposition of the 96 MLP matrices")
    rows.append(decomposition_row(device, measured_matrices=3 if quick else None, baseline_matrices=1 if quick else 2))
    torch.cuda.empty_cache()
    log("merged_generation")
    base = llama_8b_shaped(1 if quick else 2, device)
    svds = decompose(base)
    subspaces = spread_subspaces(svds, 8)  # k = 512 of 4096
    merged = build_merged(base, svds, subspaces)
    del svds
    g = torch.Generator(device=device).manual_seed(0)
    batch, prompt, new = (2, 16, 4) if quick else (16, 128, 64)
    ids = torch.randint(3, base.config.vocab_size, (batch, prompt), generator=g, device=device)
    rows.append(merged_generation_row(base, merged, ids, new, 3 if quick else 10, 1 if quick else 2, device))
    return rows
