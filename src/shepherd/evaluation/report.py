"""Write an evaluation as files a reader can open without running anything:

  report.md       the summary: setup, per-benchmark tables, figures, notes, every operating point
  manifest.json   everything the run used (items, models, prices, policy settings, artifact
                  fingerprints, the command), so another person can rerun it exactly
  results.json    every operating point with its per-item outcomes and usage
  figures/*.png   cost-accuracy curves (SLM free, SLM priced) and accuracy vs hint fraction
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import metrics as M
from .evaluate import FamilyResult, Point, TaskResult
from .suite import EvalRun


def _pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _usd(x: float | None) -> str:
    """Dollars per 1,000 queries."""
    return "n/a" if x is None else f"${1000 * x:.4f}"


def _saving(red: float | None) -> str:
    """A cost reduction as a signed change of cost: 0.25 -> "cost −25.0%", -0.1 -> "cost +10.0%"."""
    if red is None:
        return "cost n/a"
    return f"cost −{100 * red:.1f}%" if red >= 0 else f"cost +{-100 * red:.1f}%"


def _acc(p: Point) -> str:
    a = p.accuracy
    return f"{100 * a.value:.1f}% [{100 * a.low:.1f}, {100 * a.high:.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def _point_at(fam: FamilyResult, value: Any) -> Point | None:
    if value is None:
        return next((p for p in fam.points if p.ok), None)
    if isinstance(value, (tuple, list)):  # a knob of several values (threshold, scale): that very point
        return next((p for p in fam.points if p.ok and isinstance(p.knob, (tuple, list))
                     and tuple(p.knob) == tuple(value)), None)
    cands = [p for p in fam.points if p.ok and isinstance(p.knob, (int, float))]
    if not cands:
        return None
    return min(cands, key=lambda p: abs(float(p.knob) - float(value)))


def _reference_rows(res: TaskResult, scen_names: list[str]) -> list[list[str]]:
    rows = []
    for f in res.families:
        if f.group not in ("reference", "oracle") or len(f.points) != 1 or not f.points[0].ok:
            continue
        p = f.points[0]
        row = [f.name, _acc(p)]
        for s in scen_names:
            ref = res.references.get(s)
            c = p.cost[s]
            red = None if not ref or ref["llm"]["cost_per_query"] == 0 else 1 - c / ref["llm"]["cost_per_query"]
            ace = None if not ref else M.ace(p.accuracy.value, c, ref["slm"]["accuracy"], ref["slm"]["cost_per_query"],
                                             ref["llm"]["accuracy"], ref["llm"]["cost_per_query"])
            row += [_usd(c), _pct(red), _num(ace, 2)]
        row.append(", ".join(f"{k} {v}" for k, v in sorted(p.decisions().items())))
        rows.append(row)
    return rows


def _curve_rows(res: TaskResult, scen: str) -> list[list[str]]:
    rows = []
    for f in res.families:
        m = f.metrics.get(scen)
        if not m or len([p for p in f.points if p.ok]) < 1 or f.knob == "-":
            continue

        def at(key: str, m: dict[str, Any] = m) -> str:
            v = m.get(key)
            if not v:
                return "not reached"
            return (f"{_pct(v['accuracy'])} at {_usd(v['cost_per_query'])} ({_saving(v['cost_reduction'])}, "
                    f"ACE {_num(v['ace'], 2)})")

        rows.append([f"**{f.name}**" if f.group == "shepherding" else f.name, f.group, str(m.get("points")),
                     _num(m.get("apgr")), _pct(m.get("cpt50")), _pct(m.get("cpt80")), _num(m.get("aiq")),
                     at("at90"), at("at100")])
    return rows


def _default_rows(res: TaskResult, scen_names: list[str]) -> list[list[str]]:
    """The learned policies at their configured knob (what a deployment would run without tuning)."""
    rows = []
    for f in res.families:
        if f.default is None:
            continue
        p = _point_at(f, f.default)
        if p is None:
            continue
        row = [f.name, _num(float(p.knob), 3) if isinstance(p.knob, (int, float)) else str(p.knob), _acc(p)]
        row += [_usd(p.cost[s]) for s in scen_names]
        row.append(", ".join(f"{k} {v}" for k, v in sorted(p.decisions().items())))
        rows.append(row)
    return rows


def headline(res: TaskResult, scen: str) -> list[str]:
    """One line per accuracy target: the cheapest shepherding point vs the cheapest baseline and
    reference (oracles aside) on the same queries and prices."""
    ref = res.references.get(scen)
    if not ref:
        return []
    out = []
    for key, share in (("at100", "100%"), ("at90", "90%")):
        best: dict[str, tuple[str, dict[str, Any]]] = {}
        for f in res.families:
            if f.group == "oracle" or f.name == "llm-only":
                continue
            v = f.metrics.get(scen, {}).get(key)
            if v and (f.group not in best or v["cost_per_query"] < best[f.group][1]["cost_per_query"]):
                best[f.group] = (f.name, v)
        parts = []
        for g in ("shepherding", "baseline", "reference"):
            if g in best:
                name, v = best[g]
                parts.append(f"{g}: `{name}` {_pct(v['accuracy'])} at {_usd(v['cost_per_query'])} "
                             f"({_saving(v['cost_reduction'])}, ACE {_num(v['ace'], 2)})")
            else:
                parts.append(f"{g}: none reaches it")
        out.append(f"- ≥ {share} of LLM-only accuracy ({_pct(ref['llm']['accuracy'])} at "
                   f"{_usd(ref['llm']['cost_per_query'])}), cheapest — " + "; ".join(parts))
    return out


def write_report(run: EvalRun, out: str | Path | None = None, *, item_outcomes: bool = True) -> Path:
    """Write report.md, manifest.json, results.json and figures/ (see the module docstring).
    `item_outcomes=False` leaves the per-item outcomes out of results.json (they grow with items x
    operating points; `shepherd eval --rerun manifest.json` writes them again)."""
    from . import plots

    out = Path(out or run.config.out)
    out.mkdir(parents=True, exist_ok=True)
    figs_dir = out / "figures"
    scen = run.scenarios
    scen_names = [s.name for s in scen]
    figures = {r.task: plots.all_figures(r, figs_dir, scen) for r in run.results}

    # -- JSON ----------------------------------------------------------------------------------------
    manifest = dict(run.manifest)
    manifest["outputs"] = {"report": "report.md", "results": "results.json",
                           "figures": {t: {k: f"figures/{v}" for k, v in f.items()} for t, f in figures.items()}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=_json_default), encoding="utf-8")
    results = {"tasks": [{
        "task": r.task, "sweep": r.sweep, "items": r.item_ids, "seconds": round(r.seconds, 2), "notes": r.notes,
        "references": r.references, "hint_curve": r.hint_curve,
        "families": [{"name": f.name, "group": f.group, "knob": f.knob, "note": f.note, "default": f.default,
                      "metrics": f.metrics, "points": [p.to_dict(outcomes=item_outcomes) for p in f.points]}
                     for f in r.families],
    } for r in run.results]}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=_json_default), encoding="utf-8")

    # -- Markdown ------------------------------------------------------------------------------------
    cfg = run.config
    mf = run.manifest
    L: list[str] = []
    tasks = ", ".join(r.task for r in run.results) or "(none)"
    L.append(f"# Shepherding vs baselines: {tasks}")
    L.append("")
    L.append(f"Generated {mf['created_at']} by `{' '.join(mf.get('command') or ['shepherd', 'eval'])}`. "
             "Every number is replayed from stored traces (no model was called); `manifest.json` beside this "
             "file records all inputs, `results.json` every per-item outcome.")
    L.append("")
    L.append("## Setup")
    L.append("")
    models = "; ".join(f"SLM `{m['slm']}`, LLM `{m['llm']}`" for m in mf.get("models", []))
    L.append(f"- **Models**: {models or 'n/a'}")
    test_items = ", ".join(f"{t} {len(v['items'])} items" for t, v in mf["test"]["tasks"].items())
    L.append(f"- **Test traces**: `{cfg.test}` ({test_items})")
    if mf.get("train"):
        tr = ", ".join(f"{t} {len(v['items'])} items" for t, v in mf["train"]["tasks"].items())
        L.append(f"- **Training traces** (learned baselines and the shepherding predictor): `{cfg.train}` ({tr})")
        if mf["train"].get("same_store_split"):
            L.append(f"- **Split**: {mf['train']['same_store_split']}")
    else:
        L.append("- **Training traces**: none given (learned policies come from "
                 f"{'artifacts' if (cfg.baselines or cfg.predictor) else 'nowhere: only references are shown'})")
    for s in scen:
        L.append(f"- **Prices ({s.name})**: LLM ${s.llm.input}/{s.llm.output} per 1M input/output tokens; "
                 f"SLM ${s.slm.input}/{s.slm.output}")
    L.append(f"- **Features** of the learned baselines: `{mf.get('featurizer')}`")
    arts = mf.get("artifacts", {})
    if arts:
        L.append("- **Artifacts** (JSON + .npz; fingerprint = sha256 over the directory):")
        for k, a in arts.items():
            if "error" in a:
                L.append(f"  - {k}: not trained ({a['error']})")
            else:
                fp = (a.get("fingerprint") or "")[:16]
                L.append(f"  - {k}: `{a.get('artifact')}` (sha256 {fp}…)")
    L.append(f"- Accuracy intervals: 95% percentile bootstrap over items ({cfg.n_boot} resamples, seed {cfg.seed}). "
             "Costs are USD per 1,000 queries.")
    L.append("")
    L.append("Policies (each with the knob that traces its curve):")
    L.append("")
    seen = set()
    for r in run.results:
        for f in r.families:
            if f.name not in seen:
                seen.add(f.name)
                L.append(f"- `{f.name}` ({f.group}): {f.note}")
    L.append("")

    for r in run.results:
        L.append(f"## {r.task} ({len(r.item_ids)} test items, sweep `{r.sweep}`)")
        L.append("")
        for n in r.notes:
            L.append(f"> {n}")
            L.append("")
        if not r.references:
            L.append("No SLM-only / LLM-only reference: metrics skipped.")
            continue
        for s in scen_names:
            L.append(f"**Headline ({s})**")
            L.append("")
            L += headline(r, s)
            L.append("")
        L.append("### Single-point policies")
        L.append("")
        hdr = ["policy", "accuracy [95% CI]"]
        for s in scen_names:
            hdr += [f"$/1k q ({s})", f"cost reduction vs LLM ({s})", f"ACE ({s})"]
        hdr.append("decisions")
        L += _table(hdr, _reference_rows(r, scen_names))
        L.append("")
        for s in scen_names:
            ref = r.references[s]
            L.append(f"### Curves, {s} (LLM-only: {_pct(ref['llm']['accuracy'])} at {_usd(ref['llm']['cost_per_query'])}"
                     f"; SLM-only: {_pct(ref['slm']['accuracy'])} at {_usd(ref['slm']['cost_per_query'])})")
            L.append("")
            L += _table(["policy", "group", "points", "APGR", "CPT(50%)", "CPT(80%)", "AIQ",
                         "cheapest ≥ 90% of LLM acc", "cheapest ≥ 100% of LLM acc"], _curve_rows(r, s))
            L.append("")
            L.append(f"![cost vs accuracy, {s}](figures/{figures[r.task][f'cost_accuracy_{s}']})")
            L.append("")
        d = _default_rows(r, scen_names)
        if d:
            L.append("### Learned policies at their configured knob")
            L.append("")
            L += _table(["policy", "knob", "accuracy [95% CI]"] + [f"$/1k q ({s})" for s in scen_names] + ["decisions"], d)
            L.append("")
        L.append("### Accuracy vs hint fraction (from the sweep)")
        L.append("")
        L += _table(["hint fraction", "mean hint tokens", "accuracy (greedy)", "accuracy (majority of trials)",
                     "greedy answers cut off at the token cap"],
                    [[f"{c['fraction']:.2f}", f"{c['mean_hint_tokens']:.1f}", _pct(c["greedy_accuracy"]),
                      _pct(c["majority_accuracy"]), _pct(c.get("cut_off_share"))] for c in r.hint_curve])
        L.append("")
        L.append(f"![accuracy vs hint fraction](figures/{figures[r.task]['hint_fraction']})")
        L.append("")

    L.append("## How to read the metrics")
    L.append("")
    L += [
        "- **Cost reduction** = 1 − C / C_LLM-only on the same queries and prices.",
        ("- **ACE** = ((A − A_slm)/(C − C_slm)) / ((A_llm − A_slm)/(C_llm − C_slm)): accuracy bought per dollar "
        "relative to LLM-only (1 for LLM-only and for random mixing; > 1 is more efficient)."),
        ("- **APGR** (RouteLLM): the mean performance gap recovered, PGR = (A − A_slm)/(A_llm − A_slm), over "
        "normalised cost x = (C − C_slm)/(C_llm − C_slm) in [0, 1]; each curve's ends are filled by random "
        "mixing with SLM-only / LLM-only so that curves with different knob ranges compare. Random mixing ≈ 0.5."),
        "- **CPT(p)**: the smallest normalised cost x at which the curve recovers p of the gap.",
        ("- **AIQ** (RouterBench): area under the non-decreasing convex hull of the cost-accuracy points over "
        "[0, LLM-only cost], divided by that range (0 below a policy's cheapest point)."),
        ("- **Knob values** of the learned policies sit at the scores the policy itself gives the test queries "
        "(label-free: no grade is looked at), so each point is a distinct split of the queries; the value a "
        "policy uses as configured (trained default or calibrated threshold) is always one of them."),
        ("- **cheapest ≥ 90% / 100%**: the cheapest measured point whose accuracy reaches that share of the "
        "LLM-only accuracy (with its cost reduction and ACE). With few test items, read it with the intervals "
        "in the appendix: a point 'reaching' 100% may be within noise of it."),
        "",
    ]

    L.append("## Appendix: every operating point")
    L.append("")
    for r in run.results:
        L.append(f"### {r.task}")
        L.append("")
        rows = []
        for f in r.families:
            for p in f.points:
                if not p.ok:
                    rows.append([p.label, "error", "", "", (p.error or "")[:160].replace("|", "/"), ""])
                    continue
                rows.append([p.label, _acc(p)] + [_usd(p.cost[s]) for s in scen_names] +
                            [", ".join(f"{k} {v}" for k, v in sorted(p.decisions().items())), str(p.mapped())])
        L += _table(["policy setting", "accuracy [95% CI]"] + [f"$/1k q ({s})" for s in scen_names] +
                    ["decisions", "hints mapped up"], rows)
        L.append("")
    L.append(f"_Run took {mf.get('seconds')} s. Rerun: `{' '.join(mf.get('command') or [])}`._")
    L.append("")
    path = out / "report.md"
    path.write_text("\n".join(L), encoding="utf-8")
    return path


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, (np.floating, np.integer)):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, (set, tuple)):
        return list(o)
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "to_dict"):
        return o.to_dict()
    return str(o)
