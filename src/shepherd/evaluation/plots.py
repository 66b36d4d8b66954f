"""Figures for the report: cost-accuracy curves of every policy, and accuracy against hint fraction.

matplotlib is imported lazily, with the Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .evaluate import TaskResult

_STYLE = {"reference": ("--", "o"), "baseline": ("-", "s"), "shepherding": ("-", "D"), "oracle": ("", "*")}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def cost_accuracy(result: TaskResult, scenario: str, path: str | Path, *, title: str | None = None) -> Path:
    """Every family's operating points (accuracy vs $ per 1,000 queries), joined in cost order;
    single-point policies as markers; SLM-only and LLM-only accuracy as horizontal guides."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.5, 6.0))
    cmap = plt.get_cmap("tab20")
    fams = [f for f in result.families if any(p.ok for p in f.points)]
    markers = "osD^v<>phX8"
    for i, f in enumerate(fams):
        pts = sorted((p.cost[scenario] * 1000, p.accuracy.value) for p in f.points if p.ok)
        ls, _mk = _STYLE.get(f.group, ("-", "o"))
        color = "black" if f.name == "llm-only" else ("dimgray" if f.name == "slm-only" else cmap(i % 20))
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        lw = 2.4 if f.group == "shepherding" else 1.3
        if len(pts) == 1:
            ax.plot(xs, ys, linestyle="", marker="*" if f.group == "oracle" else "o", markersize=12 if
                    f.group == "oracle" else 8, color=color, label=f.name, zorder=5)
        else:
            ax.plot(xs, ys, linestyle=ls or "-", marker=markers[i % len(markers)], markersize=4, linewidth=lw,
                    color=color, label=f.name, alpha=0.85)
    ref = result.references.get(scenario)
    if ref:
        ax.axhline(ref["llm"]["accuracy"], color="black", linestyle=":", linewidth=0.8)
        ax.axhline(ref["slm"]["accuracy"], color="dimgray", linestyle=":", linewidth=0.8)
    ax.set_xlabel(f"cost, USD per 1,000 queries ({scenario})")
    ax.set_ylabel("accuracy")
    ax.set_title(title or f"{result.task}: cost vs accuracy, {len(result.item_ids)} items ({scenario})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def hint_fraction(result: TaskResult, path: str | Path) -> Path:
    """Accuracy against the hint fraction of the LLM's answer (the sweep's grid; 1.0 = the LLM)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    c = result.hint_curve
    xs = [r["fraction"] for r in c]
    ax.plot(xs, [r["greedy_accuracy"] for r in c], marker="o", label="SLM continuation, greedy (trial 0)")
    if any(r["majority_accuracy"] != r["greedy_accuracy"] for r in c):
        ax.plot(xs, [r["majority_accuracy"] for r in c], marker="s", linestyle="--", label="majority of trials")
    if c:
        ax.axhline(c[-1]["greedy_accuracy"], color="black", linestyle=":", linewidth=0.8, label="LLM alone")
        ax.axhline(c[0]["greedy_accuracy"], color="dimgray", linestyle=":", linewidth=0.8, label="SLM alone")
    ax.set_xlabel("hint fraction of the LLM's answer")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{result.task}: accuracy vs hint fraction ({len(result.item_ids)} items)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def figure_names(task: str, scenarios: tuple[str, ...] = ("slm-free", "slm-priced")) -> dict[str, str]:
    """File names of a task's figures (the report and the study link them by these names)."""
    names = {f"cost_accuracy_{s}": f"{task}_cost_accuracy_{s}.png" for s in scenarios}
    names["hint_fraction"] = f"{task}_hint_fraction.png"
    return names


def all_figures(result: TaskResult, out: Path, scenarios: list[Any]) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    names = figure_names(result.task, tuple(s.name for s in scenarios))
    for s in scenarios:
        cost_accuracy(result, s.name, out / names[f"cost_accuracy_{s.name}"])
    hint_fraction(result, out / names["hint_fraction"])
    return names


def hint_curves(curves: dict[str, list[dict[str, Any]]], path: str | Path) -> Path:
    """Accuracy against hint fraction for several benchmarks in one figure (1.0 = the LLM alone)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for name, c in curves.items():
        n = c[-1]["items"] if c else 0
        ax.plot([r["fraction"] for r in c], [r["greedy_accuracy"] for r in c], marker="o", label=f"{name} ({n} items)")
    ax.set_xlabel("hint fraction of the LLM's answer (1.0 = the LLM's own answer)")
    ax.set_ylabel("accuracy of SLM + hint (greedy)")
    ax.set_title("Accuracy vs hint fraction")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
