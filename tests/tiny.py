"""Tiny random causal LMs of every supported family, for fast tests (a helper, not a test file).

Every model has 2 layers, hidden size 64, 4 attention heads (head dim 16) and an MLP
intermediate size of 96, so each MLP matrix is non-square (96 x 64 or 64 x 96) and an
orientation bug (``W`` vs ``Wᵀ``, GPT-2's ``Conv1D`` storing ``(in, out)``) fails loudly.
Token ids follow the tiny tokenizer: pad 0, bos 1, eos 2.

MLP matrices per family (``model.named_modules()`` suffixes):

=========================  ===========================================  ===================
family                     MLP modules                                  class
=========================  ===========================================  ===================
llama, mistral, qwen2,     ``mlp.gate_proj``, ``mlp.up_proj``,           ``nn.Linear``
gemma                      ``mlp.down_proj``
gpt2                       ``mlp.c_fc``, ``mlp.c_proj``                 ``pytorch_utils.Conv1D``
gpt_neox                   ``mlp.dense_h_to_4h``, ``mlp.dense_4h_to_h``  ``nn.Linear``
opt                        ``fc1``, ``fc2`` (directly on the layer)     ``nn.Linear``
phi                        ``mlp.fc1``, ``mlp.fc2``                     ``nn.Linear``
=========================  ===========================================  ===================
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import PreTrainedModel

from tiny_tokenizer import make_tiny_tokenizer

FAMILIES = ("llama", "mistral", "qwen2", "gemma", "gpt2", "gpt_neox", "opt", "phi")

HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, POSITIONS = 64, 96, 2, 4, 2, 128
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2

_SPECIAL = {"pad_token_id": PAD_ID, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID}
# Llama-style decoders share their field names.
_LLAMA_LIKE = {
    "hidden_size": HIDDEN,
    "intermediate_size": INTERMEDIATE,
    "num_hidden_layers": LAYERS,
    "num_attention_heads": HEADS,
    "num_key_value_heads": KV_HEADS,  # grouped-query attention, as in the real models
    "max_position_embeddings": POSITIONS,
}

# family -> (config class, model class, family-specific config fields)
_FAMILY_SPECS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _LLAMA_LIKE),
    "mistral": ("MistralConfig", "MistralForCausalLM", _LLAMA_LIKE),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", _LLAMA_LIKE),
    # Gemma's default head_dim is 256, independent of hidden_size.
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**_LLAMA_LIKE, "head_dim": HIDDEN // HEADS}),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": HIDDEN, "n_inner": INTERMEDIATE, "n_layer": LAYERS, "n_head": HEADS, "n_positions": POSITIONS},
    ),
    "gpt_neox": (
        "GPTNeoXConfig",
        "GPTNeoXForCausalLM",
        {
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": POSITIONS,
        },
    ),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        {
            "hidden_size": HIDDEN,
            "word_embed_proj_dim": HIDDEN,
            "ffn_dim": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "max_position_embeddings": POSITIONS,
        },
    ),
    "phi": (
        "PhiConfig",
        "PhiForCausalLM",
        {
            "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": LAYERS,
            "num_attention_heads": HEADS,
            "num_key_value_heads": HEADS,
            "max_position_embeddings": POSITIONS,
        },
    ),
}


def make_tiny_model(family: str, vocab_size: int = 128, seed: int = 0) -> PreTrainedModel:
    """A random fp32 causal LM of ``family`` with tiny dims, in eval mode; same seed, same weights."""
    if family not in _FAMILY_SPECS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    config_name, model_name, fields = _FAMILY_SPECS[family]
    config = getattr(transformers, config_name)(vocab_size=vocab_size, **fields, **_SPECIAL)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).to(torch.float32)
    return model.eval()


def save_tiny_checkpoint(directory: str | Path, family: str = "llama", seed: int = 0) -> Path:
    """Save a tiny model and the tiny tokenizer to ``directory`` (``save_pretrained`` layout).

    The model's vocabulary is the tokenizer's 300 tokens. Note that for ``qwen2`` transformers'
    ``AutoTokenizer`` reloads the tokenizer as ``Qwen2Tokenizer``, which appends ``<|endoftext|>``
    (id 300, never produced by byte-level text), so there ``len(tokenizer)`` is 301.
    """
    directory = Path(directory)
    tokenizer = make_tiny_tokenizer()
    model = make_tiny_model(family, vocab_size=len(tokenizer), seed=seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def tiny_train_items(n: int, length: int = 10, prompt: int = 4, seed: int = 0) -> list[dict[str, list[int]]]:
    """``n`` tokenised training items of random non-special ids, the first ``prompt`` tokens unlabelled."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, 128, (length,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [-100] * prompt + ids[prompt:]})
    return out
