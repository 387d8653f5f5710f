"""What each algorithm is. A run labelled GRPO must be plain GRPO: a config whose settings contradict its
``algorithm.name`` (set on the command line, by an experiment or by a sweep axis) is rejected, never run under
the wrong label."""

from __future__ import annotations

from omegaconf import DictConfig

from s2lpo.algo.labels import METHOD_LABELS as LABELS


def check_identity(cfg: DictConfig, this_machine: bool = True) -> list[str]:
    a = cfg.algorithm
    name, guided = a.name, bool(a.guidance.enabled)
    if name not in LABELS:
        return []  # check_algorithm names the unknown algorithm
    label, errs = LABELS[name], []
    if name != "s2lpo" and isinstance(a.t_mix, int) and a.t_mix > 0:
        errs.append(f"algorithm={name} with algorithm.t_mix={a.t_mix}: explorer rows make the run S2L-PO, not "
                    f"{label}; use algorithm=s2lpo, or add algorithm.t_mix=0 for the {label} baseline (an experiment= "
                    "or sweep axis may have set t_mix)")
    if name in ("grpo", "token_temp") and guided:
        errs.append(f"algorithm={name} with algorithm.guidance.enabled=true is G²RPO-A, not {label}; use "
                    "algorithm=g2rpo_a")
    if name == "g2rpo_a" and not guided:
        errs.append("algorithm=g2rpo_a with algorithm.guidance.enabled=false is plain GRPO; use algorithm=grpo or "
                    "enable the guidance")
    t = a.temperature
    if name == "token_temp" and isinstance(t, (int, float)) and not isinstance(t, bool) and t <= 1.0:
        errs.append(f"algorithm=token_temp with algorithm.temperature={t} is not a high-temperature baseline "
                    "(its identity is sampling above T=1); set algorithm.temperature>1 (the paper: 1.3) or use "
                    "algorithm=grpo")
    return errs
