"""A planned sweep for people (``s2lpo sweep submit --dry-run``) and for programs (``--json``)."""

from __future__ import annotations

import json

from s2lpo.sweep.submit import PlannedRun


def _si(x: float) -> str:
    for unit, scale in (("Z", 1e21), ("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def plan_json_lines(planned: list[PlannedRun]) -> list[str]:
    """One JSON object per run: ``run_id``, ``overrides``, ``config`` (resolved), ``verl`` (the mapped verl
    config, resolved; verl runs only), ``cost``, ``explorer_cache`` (its group key) and ``warnings``."""
    out = []
    for r in planned:
        obj = {"run_id": r.run_id, "overrides": r.overrides, "config": r.config}
        verl = r.verl()
        if verl is not None:
            obj["verl"] = verl
        obj.update(cost=r.cost.as_dict(), explorer_cache=r.cache_key, warnings=r.warnings)
        out.append(json.dumps(obj, default=str))
    return out


def cache_groups(planned: list[PlannedRun]) -> dict[str, list[PlannedRun]]:
    groups: dict[str, list[PlannedRun]] = {}
    for r in planned:
        if r.cache_key:
            groups.setdefault(r.cache_key, []).append(r)
    return groups


def print_plan(console, planned: list[PlannedRun]) -> None:
    from rich.table import Column, Table

    table = Table(Column("run", overflow="fold"), "learner", "explorer", "method", "G", "T_mix", "steps", "prompts", "GPUs x h",
                  "rollout tok", "train tok", "FLOPs", title="planned runs (tokens: upper bounds at max length)")
    for r in planned:
        c, k = r.config, r.cost
        a = c["algorithm"]
        table.add_row(r.run_id, c["learner"]["name"], c["explorer"]["name"], r.method, str(a["group_size"]),
                      str(a["t_mix"]), str(r.total_steps), str(c["data"]["prompts_per_step"]),
                      f"{k.gpus} x {k.gpu_hours / max(k.gpus, 1):.0f}", _si(k.learner_rollout_tokens),
                      _si(k.train_tokens), _si(k.learner_flops))
    console.print(table)
    groups = cache_groups(planned)
    explorer_flops, explorer_hours = 0.0, 0.0
    for key, runs in groups.items():
        k, c = runs[0].cost, runs[0].config
        s, req = c["explorer"]["sampling"], runs[0].explorer_request or {}
        hours = int(req.get("gpus_per_node") or 0) * int(req.get("timeout_min") or 0) / 60
        explorer_flops, explorer_hours = explorer_flops + k.explorer_flops, explorer_hours + hours
        console.print(f"explorer-cache job {key}: {c['explorer']['name']} (T {s['temperature']}, top-p {s['top_p']}, "
                      f"{s['samples_per_prompt']} samples per prompt, {s['max_new_tokens']} tokens) for {len(runs)} "
                      f"run(s); {_si(k.explorer_tokens)} tokens, {_si(k.explorer_flops)} FLOPs, "
                      f"{req.get('gpus_per_node', 0)} GPU(s) x {int(req.get('timeout_min') or 0) / 60:.0f} h")
    flops = sum(r.cost.learner_flops for r in planned) + explorer_flops
    hours = sum(r.cost.gpu_hours for r in planned) + explorer_hours
    console.print(f"sweep cost: {len(planned)} runs + {len(groups)} explorer-cache job(s); "
                  f"{_si(sum(r.cost.learner_rollout_tokens for r in planned))} learner rollout tokens, "
                  f"{_si(sum(r.cost.train_tokens for r in planned))} training tokens, {_si(flops)} FLOPs, "
                  f"{hours:,.0f} GPU-hours requested")
    warned: dict[str, int] = {}
    for r in planned:
        for w in r.warnings:
            warned[w] = warned.get(w, 0) + 1
    for w, n in warned.items():
        console.print(f"[yellow]warning ({n} run(s)): {w}[/yellow]", soft_wrap=True)
