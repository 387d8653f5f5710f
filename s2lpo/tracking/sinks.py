"""The trainer's one tracking object: the journal (source of truth) plus replicas delivered off the
training thread.

``Tracker.log`` appends to the journal (flushed and fsynced); each replica's delivery thread tails
it. Training never waits on a network. ``Tracker.close`` gives the replicas a bounded time to catch
up, marks their remote runs, and returns what is left for ``s2lpo sync``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from s2lpo.algo.labels import run_label
from s2lpo.tracking.delivery import Delivery
from s2lpo.tracking.journal import Journal
from s2lpo.tracking.replica import Replica


class Tracker:
    def __init__(self, run_dir: Path, replicas: list[Replica], warn: Callable[[str], None] = print,
                 retry_max_s: float = 10.0, close_timeout_s: float = 30.0, interval_s: float = 2.0,
                 on_open: Callable[[str, dict], None] | None = None):
        self.run_dir, self.warn, self.close_timeout_s = Path(run_dir), warn, close_timeout_s
        self.journal = Journal(run_dir)
        self.deliveries = [Delivery(r, run_dir, warn, retry_max_s=retry_max_s, interval_s=interval_s,
                                     on_open=on_open).start()
                           for r in replicas]

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.journal.log(step, metrics)  # the delivery threads pick it up from the file

    def close(self, status: str = "finished") -> dict[str, int]:
        """Returns ``{replica: points left undelivered}``."""
        self.journal.close()
        left = {d.replica.name: d.close(status, self.close_timeout_s) for d in self.deliveries}
        late = {k: v for k, v in left.items() if v}
        if late:
            self.warn(f"warning: not yet delivered: {late}; they are in {self.run_dir / 'metrics.jsonl'}; "
                      f"run `s2lpo sync {self.run_dir}` when the tracking server is reachable")
        return left


def run_tags(cfg: dict, rid: str) -> dict[str, str]:
    """Tags on every run, so dashboards can group and filter: the method and models, ``family``, ``kind``
    (train | eval), ``config`` (the config without the seed: runs sharing it are seeds of one setting) and
    ``label`` (the method's display name, as tables and figures show it)."""
    from s2lpo.tracking.run import config_id, git_commit

    a = cfg["algorithm"]
    explorer = cfg["explorer"]["name"] if a["t_mix"] else "none"
    return {
        "method": a["name"], "learner": cfg["learner"]["name"], "family": str(cfg["learner"].get("family") or ""),
        "config": config_id(cfg), "label": run_label(a["name"], explorer),
        "explorer": explorer, "t_mix": str(a["t_mix"]),
        "schedule": a["schedule"], "temperature": str(a["temperature"]),
        "temperature_mode": a["temperature_mode"],
        "guidance": a["guidance"]["kind"] if a["guidance"]["enabled"] else "none", "seed": str(cfg["seed"]),
        "correction": a["offpolicy_correction"],
        "sweep": str(cfg.get("sweep") or ""), "git_commit": git_commit(), "backend": cfg["trainer"]["backend"],
        "kind": str(cfg.get("kind") or "train"),
        **({"evaluated_run": str(cfg.get("evaluated_run") or ""), "scorer": str(cfg["eval"].get("scorer", ""))}
           if cfg.get("kind") == "eval" and cfg.get("eval") else {}),
        **({"policy": str(cfg["policy"])} if cfg.get("policy") else {}),  # a diversity run's sampled policy
    }


def run_name(cfg: dict, tags: dict[str, str]) -> str:
    """The name dashboards list: the study's label (``run_name``) or the learner and method label, then the
    seed (``S2L-PO · toy-s · seed 0``); eval runs say so. The run id stays a tag (``s2lpo.run_id``)."""
    base = cfg.get("run_name") or f"{tags['learner']} · {tags['label']}"
    return ("eval · " if tags.get("kind") == "eval" else "") + f"{base} · seed {tags['seed']}"


def dashboard_params(cfg: dict) -> dict[str, str]:
    """Few, flat params: the semantic config (what the run computes: no paths, logger, launcher, device or
    SLURM requests), without verl's mapped tree, the toy family's architecture and file locations; the
    ``config.yaml`` artifact holds the whole resolved config."""
    from s2lpo.tracking.run import semantic_config

    sem = semantic_config(cfg)
    if isinstance(sem.get("trainer"), dict):
        sem["trainer"] = {k: v for k, v in sem["trainer"].items() if k != "verl"}
    if isinstance(sem.get("family"), dict):
        sem["family"] = {"name": sem["family"].get("name")}
    return {k: v for k, v in flatten(sem).items() if not k.endswith((".path", ".tokenizer", "_file", "_files"))}


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)
    return out


def make_replicas(container: dict, run_dir: Path, rid: str, mlflow_uri: str | None = None,
                  wandb_mode_override: str | None = None) -> list[Replica]:
    """The replicas the run's ``logger`` config asks for (the journal is always written)."""
    from s2lpo.tracking.mlflow_replica import MlflowReplica
    from s2lpo.tracking.wandb_replica import WandbReplica, wandb_mode

    lg = container["logger"]  # checked by s2lpo.config.validate
    tags, sweep = run_tags(container, rid), container.get("sweep") or None
    out: list[Replica] = []
    if "mlflow" in lg["sinks"]:
        m = lg["mlflow"]
        out.append(MlflowReplica(mlflow_uri or m["tracking_uri"], m["experiment"], rid, run_name(container, tags),
                                 tags, dashboard_params(container), sweep, config=container))
    if "wandb" in lg["sinks"]:
        w = lg["wandb"]
        mode = wandb_mode(wandb_mode_override or w["mode"])
        if mode != "disabled":
            out.append(WandbReplica(run_dir, rid, w["project"], w.get("entity"), sweep, tags["method"], container,
                                    tags, mode, name=run_name(container, tags)))
    return out


def make_tracker(container: dict, run_dir: Path, rid: str, warn=print, on_open=None) -> Tracker:
    d = container["logger"]["delivery"]
    return Tracker(run_dir, make_replicas(container, run_dir, rid), warn, d["retry_max_s"], d["close_timeout_s"],
                   d["interval_s"], on_open)
