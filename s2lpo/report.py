"""The mini study's results: a Markdown table and a pass@1-vs-step figure, read from run journals."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from s2lpo.tracking.journal import read_history


def _last(h: dict[str, dict[int, float]], key: str) -> float | None:
    series = h.get(key)
    return series[max(series)] if series else None


def study_rows(runs: dict[str, list[Path]], benchmark: str) -> list[dict]:
    """One row per method: final pass@1 / pass@8 (mean ± std over seeds) and generated tokens per source."""
    rows = []
    for label, dirs in runs.items():
        hs = [read_history(d) for d in dirs]
        p1 = [v for h in hs if (v := _last(h, f"eval/{benchmark}/pass@1")) is not None]
        p8 = [v for h in hs if (v := _last(h, f"eval/{benchmark}/pass@8")) is not None]
        tok = {s: float(np.mean([_last(h, f"compute/{s}/tokens_cum") or 0 for h in hs]))
               for s in ("explorer", "learner", "guided")}
        rows.append({"method": label, "seeds": len(hs), "pass@1": p1, "pass@8": p8, "tokens": tok})
    return rows


def fmt_percent(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals, ddof=1):.1f}"


def markdown_table(rows: list[dict]) -> str:
    head = ("| method | seeds | pass@1 (%) | pass@8 (%) | explorer tokens | learner tokens | guided tokens |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['method']} | {r['seeds']} | {fmt_percent(r['pass@1'])} | {fmt_percent(r['pass@8'])} | "
        f"{r['tokens']['explorer']:,.0f} | {r['tokens']['learner']:,.0f} | {r['tokens']['guided']:,.0f} |\n"
        for r in rows
    )
    return head + body


def plot_pass1(runs: dict[str, list[Path]], benchmark: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    key = f"eval/{benchmark}/pass@1"
    for label, dirs in runs.items():
        series = [read_history(d).get(key, {}) for d in dirs]
        steps = sorted(set.intersection(*(set(s) for s in series))) if series else []
        if not steps:
            continue
        vals = np.array([[s[t] for t in steps] for s in series]) * 100
        ax.plot(steps, vals.mean(0), marker="o", ms=3, label=label)
        if len(series) > 1:
            ax.fill_between(steps, vals.min(0), vals.max(0), alpha=0.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"pass@1 on {benchmark} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
