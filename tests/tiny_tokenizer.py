"""A tiny byte-level BPE tokenizer trained in memory: no download, a fraction of a second.

Special tokens ``<pad>`` (id 0), ``<s>`` (bos, id 1, put in front by ``add_special_tokens=True``)
and ``</s>`` (eos, id 2), the ids ``tests/tiny.py`` builds its models with; 300 tokens in all
(256 bytes, the specials, a few dozen merges of digits and English).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
VOCAB_SIZE = 300

_CORPUS = [
    "Question: what is 12 + 30? Answer: 42",
    "Question: what is 7 times 8? Answer: 56",
    "The capital of France is Paris.",
    "The capital of Italy is Rome.",
    "Alice has 3 apples and Bob has 5 apples, so they have 8 apples.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1,234 3.14",
    "the quick brown fox jumps over the lazy dog",
    "a model answers the question with a number",
]


def make_tiny_tokenizer(save_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train the tiny tokenizer, wrap it for transformers, and save it to ``save_dir`` if given."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer
