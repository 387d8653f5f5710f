"""The toy family as verl sees a Qwen3 checkpoint: a view of a toy model directory for the verl backend.

The toy models are Qwen3-architecture (``model_type: qwen3``), so verl's agent loops pick their Qwen
Continuous Token builder, which needs the ChatML boundary token ``<|im_end|>``. The view links the weights
and config, and saves the toy tokenizer with ``<|im_start|>``/``<|im_end|>`` added (ids past the model's
vocabulary: single-turn prompts never contain them and the model never samples them) and a chat template
that renders a message's content unchanged, so verl's prompt ids equal the local trainer's and both backends
share one explorer cache.
"""

from __future__ import annotations

from pathlib import Path

PLAIN_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
LINKED = ("model.safetensors", "config.json", "generation_config.json")


def verl_view(model_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        src, dst = Path(model_dir) / name, out / name
        if src.exists() and not dst.exists():
            dst.symlink_to(src.resolve())
    if not (out / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = PLAIN_TEMPLATE
        tok.save_pretrained(out)
    return out
