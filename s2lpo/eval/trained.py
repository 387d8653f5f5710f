"""The weights of a trained run, for evaluation: the local backend's last ``.pt`` checkpoint, or the last
verl checkpoint merged into a Hugging Face folder by verl's own model merger (``verl.model_merger``, FSDP
backend), written once beside the checkpoint (``<step dir>/actor/merged_hf``) and reused."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from s2lpo.models.checkpoint import CheckpointError, load_latest
from s2lpo.tracking.run import Manifest


class TrainedRunError(ValueError):
    pass


@dataclass
class TrainedRun:
    run_id: str
    run_dir: Path
    config: dict  # the trained run's resolved config (its manifest's)
    step: int
    hf_dir: Path | None = None  # verl: merged weights (a Hugging Face folder)
    state: dict | None = None  # local backend: the checkpoint's state dict


def latest_verl_checkpoint(run_dir: Path) -> Path | None:
    steps = [(int(m.group(1)), p) for p in (Path(run_dir) / "verl_checkpoints").glob("global_step_*")
             if (m := re.fullmatch(r"global_step_(\d+)", p.name)) and (p / "actor").is_dir()]
    return max(steps)[1] if steps else None


def merge_verl_checkpoint(step_dir: Path, log=print) -> Path:
    """``<step dir>/actor`` (FSDP shards) → ``<step dir>/actor/merged_hf`` with verl's model merger."""
    from verl.model_merger.base_model_merger import ModelMergerConfig
    from verl.model_merger.fsdp_model_merger import FSDPModelMerger

    actor = Path(step_dir) / "actor"
    target = actor / "merged_hf"
    if (target / "config.json").exists():
        return target
    tmp = actor / ".merged_hf.tmp"
    log(f"merging verl checkpoint {actor} into a Hugging Face folder (verl.model_merger)")
    cfg = ModelMergerConfig(operation="merge", backend="fsdp", local_dir=str(actor), target_dir=str(tmp),
                            hf_model_config_path=str(actor / "huggingface"))
    FSDPModelMerger(cfg).merge_and_save()
    tmp.rename(target)
    return target


def load_trained(run_dir: Path, log=print) -> TrainedRun:
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise TrainedRunError(f"eval.run_dir={run_dir} is not a run directory (no manifest.json); pass runs/<run id>")
    m = Manifest(run_dir).data
    cfg, rid = m.get("config") or {}, m.get("run_id", run_dir.name)
    if (cfg.get("trainer") or {}).get("backend") == "verl":
        step_dir = latest_verl_checkpoint(run_dir)
        if step_dir is None:
            raise TrainedRunError(f"eval.run_dir={run_dir}: the verl run has no checkpoint under verl_checkpoints/ "
                                  "(trainer.checkpoint_every sets how often it saves)")
        step = int(step_dir.name.removeprefix("global_step_"))
        return TrainedRun(rid, run_dir, cfg, step, hf_dir=merge_verl_checkpoint(step_dir, log))
    try:
        ckpt = load_latest(run_dir)
    except CheckpointError as e:
        raise TrainedRunError(f"eval.run_dir={run_dir}: {e}") from None
    if ckpt is None:
        raise TrainedRunError(f"eval.run_dir={run_dir} has no checkpoint to evaluate")
    for path, why in ckpt.skipped:
        log(f"warning: checkpoint {path} is damaged ({why}); evaluating {ckpt.path.name} instead")
    return TrainedRun(rid, run_dir, cfg, int(ckpt.state["step"]), state=ckpt.state)


def export_hf(trained: TrainedRun, base_weights: Path, tok) -> Path:
    """A local run's checkpoint as a Hugging Face folder (``<run dir>/hf_step_<k>``), for backends that load
    weights from disk (vLLM)."""
    import torch
    from transformers import AutoModelForCausalLM

    out = trained.run_dir / f"hf_step_{trained.step}"
    if not (out / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(base_weights, dtype=torch.float32)
        model.load_state_dict(trained.state["model"])
        tmp = out.with_name(out.name + ".tmp")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(out)
    return out
