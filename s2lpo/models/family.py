"""The offline toy model family: Qwen3-architecture causal LMs of several sizes sharing one tokenizer.

Built from a recipe (seed, task splits, architectures, supervised warm-up) with nothing downloaded,
and cached on disk under a hash of the recipe, so a second build costs nothing. A build happens in a
temporary directory renamed into place, under a file lock, so concurrent callers build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from s2lpo.data.toy import Problem, ToySplits, arithmetic_drills, make_splits, warmup_solutions
from s2lpo.models.tokenizer import build_tokenizer, tokenizer_digest

FAMILY_FORMAT = 1  # bump when the build procedure changes in a way the recipe does not capture


@dataclass(frozen=True)
class Arch:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int


DEFAULT_SIZES: dict[str, Arch] = {
    "xs": Arch(48, 2, 2, 1, 24, 128),
    "s": Arch(64, 4, 4, 2, 16, 192),
    "m": Arch(128, 4, 4, 2, 32, 256),
    "l": Arch(256, 6, 8, 4, 32, 512),
}


@dataclass(frozen=True)
class FamilyRecipe:
    seed: int = 0
    n_operands: int = 3
    n_sft: int = 2000
    n_rl: int = 1024
    n_eval: int = 128
    vocab_size: int = 272
    sizes: dict[str, Arch] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    sft_epochs: int = 13
    sft_batch_size: int = 64
    sft_lr: float = 3e-3
    max_position_embeddings: int = 128
    # the task's mix: the share of precedence-sensitive problems in every split (None: uniform, about 20 %)
    precedence_share: float | None = None
    # per size, the share of its precedence-sensitive warm-up problems taught left to right (a misconception)
    left_to_right: dict[str, float] = field(default_factory=dict)
    # per size, the share of its sensitive warm-up problems taught left to right *instead* of worked
    left_to_right_only: dict[str, float] = field(default_factory=dict)
    # every size is also taught each distinct step of the task as a one-step problem (data.toy.arithmetic_drills),
    # this many times per epoch (0: never)
    drills: int = 0

    def key(self) -> str:
        d = asdict(self)
        for k, default in (("precedence_share", None), ("left_to_right", {}), ("left_to_right_only", {}), ("drills", 0)):  # unset: the keys of before
            if d[k] == default:
                del d[k]
        payload = json.dumps({"format": FAMILY_FORMAT, **d}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]

    def splits(self) -> ToySplits:
        """The task's SFT, RL and evaluation splits this recipe draws."""
        return make_splits(self.seed, self.n_sft, self.n_rl, self.n_eval, self.n_operands, self.precedence_share)

    @classmethod
    def from_dict(cls, d: dict) -> FamilyRecipe:
        d = dict(d)
        if "sizes" in d and d["sizes"] is not None:
            d["sizes"] = {k: v if isinstance(v, Arch) else Arch(**v) for k, v in d["sizes"].items()}
        return cls(**d)


@dataclass(frozen=True)
class Family:
    root: Path
    recipe: FamilyRecipe
    manifest: dict

    def model_dir(self, size: str) -> Path:
        if size not in self.recipe.sizes:
            raise ValueError(f"size={size!r} is not in the toy family; sizes: {', '.join(self.recipe.sizes)}")
        return self.root / "models" / size

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / "tokenizer"

    def splits(self) -> ToySplits:
        return self.recipe.splits()


def param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_model(arch: Arch, vocab_size: int, tok, max_pos: int) -> Qwen3ForCausalLM:
    cfg = Qwen3Config(
        vocab_size=vocab_size,
        max_position_embeddings=max_pos,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
        **asdict(arch),
    )
    return Qwen3ForCausalLM(cfg)


def encode_sft(tok, problems: list[Problem]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``prompt + solution + eos`` ids with a loss mask on the completion tokens."""
    seqs, masks = [], []
    for p in problems:
        pi = tok(p.prompt, add_special_tokens=False)["input_ids"]
        ci = tok(p.solution, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append(pi + ci)
        masks.append([0] * len(pi) + [1] * len(ci))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.long)
    lm = torch.zeros((len(seqs), width), dtype=torch.bool)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, m) in enumerate(zip(seqs, masks)):
        ids[i, : len(s)] = torch.tensor(s)
        lm[i, : len(m)] = torch.tensor(m, dtype=torch.bool)
        att[i, : len(s)] = 1
    return ids, att, lm


def sft_steps(n_problems: int, epochs: int, batch_size: int) -> int:
    return epochs * math.ceil(n_problems / batch_size)


def sft_warmup(model, tok, problems: list[Problem], epochs: int, batch_size: int, lr: float, seed: int,
               tick: Callable[[], None] | None = None) -> float:
    """Supervised warm-up on worked solutions; returns the last epoch's mean loss (``tick()`` per step)."""
    ids, att, lm = encode_sft(tok, problems)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(problems) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    last = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(problems), generator=g)
        tot, n = 0.0, 0
        for b in range(0, len(problems), batch_size):
            idx = perm[b : b + batch_size]
            x, a, m = ids[idx], att[idx], lm[idx]
            w = int(a.sum(1).max())
            x, a, m = x[:, :w], a[:, :w], m[:, :w]
            logits = model(input_ids=x, attention_mask=a, use_cache=False).logits[:, :-1]
            loss = torch.nn.functional.cross_entropy(logits[m[:, 1:]], x[:, 1:][m[:, 1:]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            tot, n = tot + loss.item(), n + 1
            if tick:
                tick()
        last = tot / n
    model.eval()
    return last


def weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.safetensors")):
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def warmup_pools(recipe: FamilyRecipe, splits: ToySplits) -> dict[str, list[Problem]]:
    """Each size's warm-up pool: the worked problems of the SFT split, the share of its precedence-sensitive
    ones the recipe also (or only) teaches it left to right, and ``recipe.drills`` copies of every arithmetic
    step."""
    drills = arithmetic_drills(recipe.n_operands) * recipe.drills
    return {size: warmup_solutions(splits.sft, recipe.left_to_right.get(size, 0.0), recipe.seed * 1000 + i,
                                   recipe.left_to_right_only.get(size, 0.0)) + drills
            for i, size in enumerate(recipe.sizes)}


def _build(recipe: FamilyRecipe, out: Path, log: Callable[[str], None],
           progress: Callable[[int, int, str], None] | None = None) -> dict:
    splits = recipe.splits()
    tok = build_tokenizer([p.prompt + p.solution for p in splits.sft], recipe.vocab_size)
    tok.save_pretrained(out / "tokenizer")
    manifest: dict = {"key": recipe.key(), "recipe": asdict(recipe), "tokenizer": tokenizer_digest(tok), "models": {}}
    pools = warmup_pools(recipe, splits)
    total = sum(sft_steps(len(pool), recipe.sft_epochs, recipe.sft_batch_size) for pool in pools.values())
    done = [0]
    for i, (size, arch) in enumerate(recipe.sizes.items()):
        t0 = time.time()
        torch.manual_seed(recipe.seed * 1000 + i)
        model = make_model(arch, len(tok), tok, recipe.max_position_embeddings)
        what = f"size {size} ({param_count(model) / 1e6:.2f}M params, {i + 1}/{len(recipe.sizes)})"

        def tick(what: str = what) -> None:
            done[0] += 1
            if progress:
                progress(done[0], total, what)

        loss = sft_warmup(model, tok, pools[size], recipe.sft_epochs, recipe.sft_batch_size, recipe.sft_lr,
                          recipe.seed * 1000 + i, tick)
        d = out / "models" / size
        model.save_pretrained(d)
        tok.save_pretrained(d)
        manifest["models"][size] = {
            "params": param_count(model),
            "sft_loss": round(loss, 6),
            "digest": weights_digest(d),
            "build_s": round(time.time() - t0, 1),
        }
        log(f"toy family: built size {size} ({param_count(model) / 1e6:.2f}M params, "
            f"sft loss {loss:.3f}) in {time.time() - t0:.0f}s")
    return manifest


def build_family(
    recipe: FamilyRecipe, cache_dir: str | Path, log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None,
) -> Family:
    """Return the family for ``recipe``, building it once under ``cache_dir/family/<key>`` (``progress(done,
    total, what)`` per warm-up step of the build: minutes on a CPU)."""
    root = Path(cache_dir) / "family" / recipe.key()
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{recipe.key()}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "manifest.json").exists():
            tmp = root.parent / f".tmp-{recipe.key()}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            torch_threads = torch.get_num_threads()
            try:
                manifest = _build(recipe, tmp, log, progress)
                (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
                shutil.rmtree(root, ignore_errors=True)
                os.replace(tmp, root)
            finally:
                torch.set_num_threads(torch_threads)
                shutil.rmtree(tmp, ignore_errors=True)
    manifest = json.loads((root / "manifest.json").read_text())
    return Family(root, recipe, manifest)
