"""The toy family's tokenizer: byte-level BPE with single-digit pre-tokenization, built offline."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

PAD, EOS = "<pad>", "<eos>"


def build_tokenizer(texts: Iterable[str], vocab_size: int = 272) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    tok.padding_side = "left"
    return tok


def tokenizer_digest(tok: PreTrainedTokenizerFast) -> str:
    """Content hash of the vocabulary and special tokens: equal digests mean interchangeable token ids."""
    payload = json.dumps(
        {"vocab": sorted(tok.get_vocab().items()), "eos": tok.eos_token_id, "pad": tok.pad_token_id},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
