"""The offline toy model family: Qwen3-architecture causal LMs of several sizes sharing one tokenizer.

Built from a recipe (seed, task splits, architectures, supervised warm-up) with nothing downloaded,
and cached on disk under a hash of the recipe, so a second build costs nothing. The family's directory (its
tokenizer) is made once; each size is built when first asked for, in a temporary directory moved into place
under a lock of its own, and entered in the manifest last: concurrent callers build each size once, and one
that needs only built sizes waits for nobody.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from s2lpo.data.toy import Problem, ToySplits, arithmetic_drills, make_splits, warmup_solutions
from s2lpo.models.sft import sft_steps, sft_warmup
from s2lpo.models.tokenizer import build_tokenizer, load_tokenizer, tokenizer_digest

FAMILY_FORMAT = 2  # bump when the build procedure changes in a way the recipe does not capture (2: packed warm-up)


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
        if size not in self.manifest["models"]:
            raise ValueError(f"size {size!r} of family {self.root.name} is not built yet; ask build_family for it "
                             f"(sizes=[...]); built: {', '.join(self.manifest['models'])}")
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


def _build_size(recipe: FamilyRecipe, size: str, tok, pool: list[Problem], out: Path, log: Callable[[str], None],
                tick: Callable[[str], None], of: str) -> dict:
    """Warm one size up from its seeded initialisation and save it under ``out/models/<size>``; its manifest entry.
    The weights depend on the recipe and the size alone (not on which other sizes were built, or in what order)."""
    t0 = time.time()
    i = list(recipe.sizes).index(size)
    torch.manual_seed(recipe.seed * 1000 + i)
    model = make_model(recipe.sizes[size], len(tok), tok, recipe.max_position_embeddings)
    what = f"size {size} ({param_count(model) / 1e6:.2f}M params, {of})"
    loss = sft_warmup(model, tok, pool, recipe.sft_epochs, recipe.sft_batch_size, recipe.sft_lr,
                      recipe.seed * 1000 + i, lambda: tick(what))
    d = out / "models" / size
    model.save_pretrained(d)
    tok.save_pretrained(d)
    log(f"toy family: built size {size} ({param_count(model) / 1e6:.2f}M params, sft loss {loss:.3f}) in "
        f"{time.time() - t0:.0f}s")
    return {"params": param_count(model), "sft_loss": round(loss, 6), "digest": weights_digest(d),
            "build_s": round(time.time() - t0, 1)}


@contextmanager
def _locked(path: Path, wait: bool = True):
    """Hold ``path``'s lock (yields True); with ``wait=False`` yield False at once when another process has it."""
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def _read_manifest(root: Path) -> dict | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except FileNotFoundError:
        return None


def family_root(recipe: FamilyRecipe, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / "family" / recipe.key()


def built_sizes(recipe: FamilyRecipe, cache_dir: str | Path) -> list[str]:
    """The sizes of ``recipe``'s family already built under ``cache_dir`` (its manifest read; nothing built)."""
    try:
        return list((_read_manifest(family_root(recipe, cache_dir)) or {"models": {}})["models"])
    except (OSError, ValueError, KeyError):
        return []


def _new_family(recipe: FamilyRecipe, root: Path) -> dict:
    """The family's directory with its tokenizer and a manifest of no sizes, in one rename."""
    tmp = root.parent / f".tmp-{recipe.key()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tok = build_tokenizer([p.prompt + p.solution for p in recipe.splits().sft], recipe.vocab_size)
        tok.save_pretrained(tmp / "tokenizer")
        manifest = {"key": recipe.key(), "recipe": asdict(recipe), "tokenizer": tokenizer_digest(tok), "models": {}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        shutil.rmtree(root, ignore_errors=True)  # what a build killed before this rename left
        os.replace(tmp, root)
        return manifest
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_size(recipe: FamilyRecipe, size: str, pool: list[Problem], root: Path, log: Callable[[str], None],
              tick: Callable[[str], None], of: str) -> None:
    """Build ``size`` in a temporary directory, move it into ``root/models`` and enter it in the manifest (under
    the family's lock, re-read: sizes built at the same time by other processes are kept)."""
    tmp = root.parent / f".tmp-{recipe.key()}-{size}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    torch_threads = torch.get_num_threads()
    try:
        entry = _build_size(recipe, size, load_tokenizer(root / "tokenizer"), pool, tmp, log, tick, of)
        shutil.rmtree(root / "models" / size, ignore_errors=True)
        (root / "models").mkdir(exist_ok=True)
        os.replace(tmp / "models" / size, root / "models" / size)
        with _locked(root.parent / f".{recipe.key()}.lock"):
            manifest = _read_manifest(root)
            models = {**manifest["models"], size: entry}
            manifest["models"] = {s: models[s] for s in recipe.sizes if s in models}  # the recipe's order
            (root / ".manifest.json.tmp").write_text(json.dumps(manifest, indent=2))
            os.replace(root / ".manifest.json.tmp", root / "manifest.json")
    finally:
        torch.set_num_threads(torch_threads)
        shutil.rmtree(tmp, ignore_errors=True)


def build_family(
    recipe: FamilyRecipe, cache_dir: str | Path, log: Callable[[str], None] = print,
    progress: Callable[[int, int, str], None] | None = None, sizes: list[str] | None = None,
) -> Family:
    """Return the family for ``recipe`` with ``sizes`` built (default: every size of the recipe), building what is
    missing under ``cache_dir/family/<key>`` (``progress(done, total, what)`` per warm-up step: minutes on a CPU).
    Sizes are built when first asked for, each under a lock of its own: a run of the learner and one explorer does
    not wait for the others, nor for another process building a size it does not need."""
    unknown = [s for s in sizes or [] if s not in recipe.sizes]
    if unknown:
        raise ValueError(f"sizes {unknown} are not in the toy family; sizes: {', '.join(recipe.sizes)}")
    want = [s for s in recipe.sizes if sizes is None or s in sizes]
    root = family_root(recipe, cache_dir)
    root.parent.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(root)
    if manifest is None:
        with _locked(root.parent / f".{recipe.key()}.lock"):
            manifest = _read_manifest(root) or _new_family(recipe, root)
    missing = [s for s in want if s not in manifest["models"]]
    if missing:
        pools = warmup_pools(recipe, recipe.splits())
        total, done = sum(sft_steps(len(pools[s]), recipe.sft_epochs, recipe.sft_batch_size) for s in missing), [0]

        def tick(what: str) -> None:
            done[0] += 1
            if progress:
                progress(done[0], total, what)

        # first the sizes no other process is building, then wait for the others' locks: two runs that start on
        # an unbuilt family build a size each instead of one waiting while the other builds both
        left = list(missing)
        for wait in (False, True):
            for size in list(left):
                with _locked(root.parent / f".{recipe.key()}-{size}.lock", wait=wait) as held:
                    if not held:
                        continue
                    if size not in _read_manifest(root)["models"]:  # not built by another process meanwhile
                        _add_size(recipe, size, pools[size], root, log, tick,
                                  f"{len(missing) - len(left) + 1}/{len(missing)}")
                    left.remove(size)
        manifest = _read_manifest(root)
    return Family(root, recipe, manifest)
