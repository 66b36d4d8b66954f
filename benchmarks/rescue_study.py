"""Rescue at the point of doubt, measured beside start-of-answer shepherding, the confidence cascade and the
best baseline (issue 24, part 4; docs/rescue.md). A replay: no model is called.

On a trace store swept with rescues (`benchmarks/rescue_sweeps.sh`: the committed GSM8K test traces
unpacked, the SLM's no-hint answers scored, rescues recorded for a named subset), every policy is replayed
on the subset's items, and reported:

- per family, the cheapest point reaching >= 90% and >= 100% of LLM-only accuracy, knobs chosen on the
  reported items (in-sample) and out of sample (`metrics.crossfit_matched_cost`: chosen on a random half,
  scored on the other, 100 splits x 2);
- the ratio of each comparison group's cheapest cost over rescue's cheapest, with a 95% bootstrap interval
  over items (both sides' points chosen anew on each resample, `metrics.matched_cost_ratio_ci`) and the
  cross-fitted ratio;
- per rescue point: rescues per answer, the share of the answer's output tokens the LLM wrote (of the final
  text, and of every token paid for), and the wall-clock per answer against LLM-only, split into the SLM's
  own answer, the LLM's rescue and the SLM's continuation (the stored latencies; see the doc for what they
  were measured under).

    python benchmarks/rescue_study.py runs/rescue_gsm8k.sqlite --train runs/rescue_gsm8k_train.sqlite \
        --ids @runs/gsm8k_seed0_60.ids --json runs/rescue_study.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from statistics import mean, median

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

#: prompt tokens per second on the 2-core machine, one model at a time (docs/scaling.md, sweep_sizing)
PREFILL = {"slm": 300.0, "llm": 160.0}

#: the replayed policies: references, start-of-answer shepherding, answer-side shepherding, baselines
POLICIES = ["slm-only", "llm-only", "fixed-ratio", "proactive", "reactive", "reactive-fixed", "reactive-fixed+vote",
            "confidence", "confidence-3band", "abc", "abc+greedy", "routellm-classifier", "routellm-mf",
            "graphrouter", "knn", "confidence-cascade", "rescue"]

#: comparison groups: rescue against the hint-at-the-start shepherding policies, the confidence cascade
#: alone, and every baseline (the cascade included)
START = {"fixed-ratio", "proactive", "reactive", "reactive-fixed", "reactive-fixed+vote", "confidence",
         "confidence-3band"}
BASELINES = {"abc", "abc+greedy", "routellm-classifier", "routellm-mf", "graphrouter", "knn", "confidence-cascade"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="test store swept with rescues")
    ap.add_argument("--train", required=True, help="GSM8K train store (learned baselines)")
    ap.add_argument("--ids", required=True, help="the subset: comma-separated ids or @file, one a line")
    ap.add_argument("--task", default="gsm8k", help="the test store's task (humaneval-completion: the second "
                    "benchmark of docs/rescue.md); the learned baselines train on GSM8K either way")
    ap.add_argument("--predictor", default=str(REPO / "docs/results/artifacts/predictor"))
    ap.add_argument("--featurizer", default="minilm")
    ap.add_argument("--policies", default=None, help="comma-separated (default: the list above)")
    ap.add_argument("--splits", type=int, default=100, help="random halvings for the out-of-sample choice")
    ap.add_argument("--out", default="runs/rescue_study")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", action="store_true", help="print docs/rescue.md's tables instead")
    args = ap.parse_args()
    ids = (Path(args.ids[1:]).read_text().split() if args.ids.startswith("@")
           else [i.strip() for i in args.ids.split(",") if i.strip()])

    from shepherd.evaluation.suite import EvalConfig, run_eval

    cfg = EvalConfig(test=args.store, out=args.out, train=args.train, train_tasks=["gsm8k"],
                     featurizer=args.featurizer, predictor=args.predictor,
                     policies=args.policies.split(",") if args.policies else POLICIES,
                     test_items={args.task: ids}, tasks=[args.task])
    ev = run_eval(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    (res,) = ev.results
    report = {"items": len(res.item_ids), "item_ids": list(res.item_ids), "scenarios": {}}
    for sc in ev.scenarios:
        report["scenarios"][sc.name] = {key: compare(res, sc, frac, args.splits)
                                        for key, frac in (("at90", 0.9), ("at100", 1.0))}
    rp = rescue_points(res, args.store, ev.scenarios[0])
    report["timing_model"] = rp[0]["timing_model"] if rp else None
    report["rescue_points"] = rp[1:]
    report["llm_only"] = reference(res, "llm-only", ev.scenarios[0])
    report["slm_only"] = reference(res, "slm-only", ev.scenarios[0])
    report["at_rescue_cost"] = at_rescue_cost(res, ev.scenarios[0])
    report["families"] = {f.name: {"group": f.group, "points": len([p for p in f.points if p.ok])}
                          for f in res.families}
    text = json.dumps(report, indent=1)
    if args.json:
        args.json.write_text(text)
    print(markdown(report) if args.markdown else "", end="")
    if not args.markdown:
        print_tables(report)


def _vectors(res, scen):
    order = list(res.item_ids)

    def vec(p):
        by = {o.item_id: o for o in p.outcomes}
        if any(i not in by for i in order):
            return None
        return [float(by[i].correct) for i in order], [by[i].cost(scen) for i in order]

    fams = {}
    for fam in res.families:
        pts = [(p.label, v) for p in fam.points if p.ok and (v := vec(p)) is not None]
        if pts:
            fams[fam.name] = pts
    return fams


def compare(res, scen, fraction: float, splits: int) -> dict:
    """Cheapest point per family and per group at `fraction` of LLM-only accuracy, in-sample and
    cross-fitted; each group's cost over rescue's with a bootstrap interval."""
    from shepherd.evaluation import metrics as M

    fams = _vectors(res, scen)
    llm = fams["llm-only"][0][1][0]
    llm_cost = mean(fams["llm-only"][0][1][1])
    target = fraction * mean(llm) - 1e-12
    groups = {"rescue": [v for _, v in fams.get("rescue", [])],
              "start-of-answer shepherding": [v for n, pts in fams.items() if n in START for _, v in pts],
              "confidence-cascade": [v for _, v in fams.get("confidence-cascade", [])],
              "best baseline": [v for n, pts in fams.items() if n in BASELINES for _, v in pts]}

    def cheapest(pts):
        best = None
        for label, (acc, cost) in pts:
            if mean(acc) >= target and (best is None or mean(cost) < best[2]):
                best = (label, mean(acc), mean(cost))
        return None if best is None else {"label": best[0], "accuracy": best[1], "cost_per_1k": 1000 * best[2],
                                          "cost_reduction": 1 - best[2] / llm_cost}

    labelled = {"rescue": fams.get("rescue", []),
                "start-of-answer shepherding": [x for n, pts in fams.items() if n in START for x in pts],
                "confidence-cascade": fams.get("confidence-cascade", []),
                "best baseline": [x for n, pts in fams.items() if n in BASELINES for x in pts]}
    out = {"llm_accuracy": mean(llm), "llm_cost_per_1k": 1000 * llm_cost,
           "families": {n: cheapest(pts) for n, pts in fams.items()},
           "groups": {g: cheapest(pts) for g, pts in labelled.items()}}
    # the group's cheapest cost over rescue's: > 1 means rescue is cheaper (`p_shepherding_cheaper`: the
    # share of resamples in which rescue is strictly cheaper)
    out["ratio_over_rescue"] = {}
    for g, pts in groups.items():
        if g == "rescue":
            continue
        a, b = out["groups"]["rescue"], out["groups"][g]
        ci = (M.matched_cost_ratio_ci(llm, groups["rescue"], pts, fraction, seed=0)
              if groups["rescue"] and pts else None)
        out["ratio_over_rescue"][g] = {"ratio": b["cost_per_1k"] / a["cost_per_1k"] if a and b and a["cost_per_1k"]
                                       else None, "ci": ci}
    cf = M.crossfit_matched_cost(llm, {g: v for g, v in groups.items() if v}, fraction, splits=splits)
    out["crossfit"] = cf and {"sides": cf["sides"], "ratio_over_rescue": cf.get("ratio_over_rescue")}
    fam_cf = M.crossfit_matched_cost(llm, {n: [v for _, v in pts] for n, pts in fams.items()}, fraction,
                                     splits=splits)
    out["crossfit_families"] = fam_cf and fam_cf["sides"]
    return out


def at_rescue_cost(res, scen) -> list[dict]:
    """Where rescue cannot reach the accuracy targets: per rescue point, the most accurate point of each other
    group that costs no more (in-sample, SLM free): what the same money buys elsewhere."""
    fams = _vectors(res, scen)
    grouped = {"start-of-answer shepherding": [x for n, pts in fams.items() if n in START for x in pts],
               "confidence-cascade": fams.get("confidence-cascade", []),
               "best baseline": [x for n, pts in fams.items() if n in BASELINES for x in pts]}
    out = []
    for label, (acc, cost) in fams.get("rescue", []):
        row = {"rescue": label, "accuracy": mean(acc), "cost_per_1k": 1000 * mean(cost), "others": {}}
        for g, pts in grouped.items():
            ok = [(mean(a), mean(c), lab) for lab, (a, c) in pts if mean(c) <= mean(cost) + 1e-12]
            best = max(ok, key=lambda x: (x[0], -x[1]), default=None)
            row["others"][g] = None if best is None else {"label": best[2], "accuracy": best[0],
                                                          "cost_per_1k": 1000 * best[1]}
        out.append(row)
    return out


def reference(res, name: str, scen) -> dict:
    p = next(p for p in res.family(name).points if p.ok)
    n = len(p.outcomes)
    return {"accuracy": p.accuracy.to_dict(), "cost_per_1k": 1000 * sum(o.cost(scen) for o in p.outcomes) / n,
            "seconds_per_answer": p.seconds_per_query(),
            "llm_completion_tokens": sum(o.llm_completion for o in p.outcomes) / n,
            "slm_completion_tokens": sum(o.slm_completion for o in p.outcomes) / n}


def rescue_points(res, store_path: str, scen) -> list[dict]:
    """Per (threshold, n): what the replay measured, and from the store the parts of each answer: where
    the SLM's answer was cut, how many tokens each model wrote into the final text, and where the time went."""
    from shepherd.confidence import doubt_cut
    from shepherd.hinting import continuation_request, rescue_request
    from shepherd.traces.store import TraceStore

    fam = res.family("rescue")
    if fam is None:
        return []
    store = TraceStore(store_path, readonly=True)
    sweep = res.sweep
    info = store.resolve_sweep(None, sweep)
    own_key = {r["item_id"]: r["key"] for r in store._query(
        "SELECT item_id, key FROM rows WHERE sweep = ? AND kind = 'hint' AND fraction = 0 AND trial = 0", (sweep,))}
    full_key = {r["item_id"]: r["key"] for r in store._query(
        "SELECT item_id, key FROM rows WHERE sweep = ? AND kind = 'llm_full'", (sweep,))}
    # One footing for every leg: prefill at this machine's measured rates (docs/scaling.md), decode at each
    # model's rate in the study's own recorded answers on these items (SLM: its no-hint answers; LLM: its
    # full answers), so the rescue legs the batched sweep recorded under other load are timed as the study's.
    order = [o.item_id for o in fam.points[0].outcomes]
    owns = [store.get(own_key[i]) for i in order]
    fulls = [store.get(full_key[i]) for i in order]
    decode = {m: max(1e-3, sum(g.latency_s - g.prompt_tokens / PREFILL[m] for g in gs) / sum(g.completion_tokens for g in gs))
              for m, gs in (("slm", owns), ("llm", fulls))}
    llm_only_model = mean(g.prompt_tokens / PREFILL["llm"] + g.completion_tokens * decode["llm"] for g in fulls)
    out = [{"timing_model": {"prefill_tokens_per_s": PREFILL, "decode_seconds_per_token": decode,
                             "llm_only_seconds": llm_only_model,
                             "llm_only_seconds_recorded": mean(g.latency_s for g in fulls)}}]
    for p in fam.points:
        if not p.ok:
            continue
        thr, n = p.policy["threshold"], p.policy["tokens"]
        window = int(p.policy.get("window", 8))
        parts = {"slm_own": [], "llm_rescue": [], "slm_after": []}
        model = {"slm_own": [], "llm_rescue": [], "slm_after": []}
        final_llm, final_all, rescued, cut_at = [], [], 0, []
        for o in p.outcomes:
            k0 = own_key[o.item_id]
            own, base = store.get(k0), store.get_request(k0)
            c = doubt_cut(own.text, own.logprobs, thr, window)
            t_llm = t_after = m_llm = m_after = 0.0
            if c is None or not 0 <= c < len(own.text):
                final_llm.append(0)
                final_all.append(own.completion_tokens)
            else:
                rescued += 1
                t = sum(1 for e in own.logprobs.ends if e <= c)
                cut_at.append(t / max(1, own.completion_tokens))
                hint = store.get(rescue_request(base, own.text[:c], t, n).key(info.llm))
                t_llm = hint.latency_s
                m_llm = hint.prompt_tokens / PREFILL["llm"] + hint.completion_tokens * decode["llm"]
                after = 0
                done = t + hint.completion_tokens
                if not (hint.finished or (base.max_tokens is not None and done >= base.max_tokens)):
                    cont = store.get(continuation_request(base, own.text[:c] + hint.text, done).key(info.slm))
                    t_after, after = cont.latency_s, cont.completion_tokens
                    # live, the SLM's cache holds the question and its own text: only the LLM's tokens are new
                    m_after = hint.completion_tokens / PREFILL["slm"] + after * decode["slm"]
                final_llm.append(hint.completion_tokens)
                final_all.append(t + hint.completion_tokens + after)
            parts["slm_own"].append(own.latency_s)
            parts["llm_rescue"].append(t_llm)
            parts["slm_after"].append(t_after)
            model["slm_own"].append(own.prompt_tokens / PREFILL["slm"] + own.completion_tokens * decode["slm"])
            model["llm_rescue"].append(m_llm)
            model["slm_after"].append(m_after)
        k = len(p.outcomes)
        paid_llm = sum(o.llm_completion for o in p.outcomes)
        paid_all = paid_llm + sum(o.slm_completion for o in p.outcomes)
        out.append({
            "label": p.label, "threshold": thr, "n": n, "accuracy": p.accuracy.to_dict(),
            "cost_per_1k": 1000 * sum(o.cost(scen) for o in p.outcomes) / k,
            "rescues_per_answer": sum(o.llm_calls for o in p.outcomes) / k,
            "rescued_share": rescued / k,
            "cut_at_share_of_answer_median": median(cut_at) if cut_at else None,
            # cut back to the answer's first line: the rescue is then a start-of-answer hint of n tokens
            "rescues_at_start": sum(1 for x in cut_at if x == 0),
            "llm_share_of_final_tokens": sum(final_llm) / max(1, sum(final_all)),
            "llm_share_of_final_tokens_rescued": (sum(x for x in final_llm if x) /
                                                  max(1, sum(a for a, x in zip(final_all, final_llm) if x))),
            "llm_share_of_paid_output_tokens": paid_llm / max(1, paid_all),
            "seconds_per_answer": p.seconds_per_query(),
            "seconds_parts": {k2: sum(v) / k for k2, v in parts.items()},
            "seconds_model_parts": {k2: sum(v) / k for k2, v in model.items()},
            "seconds_model": sum(sum(v) for v in model.values()) / k,
            "seconds_model_over_llm_only": sum(sum(v) for v in model.values()) / k / llm_only_model,
            "decisions": p.decisions(),
        })
    store.close()
    return out


def _pct(x):
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(a: dict) -> str:
    return f"{100 * a['value']:.0f}% [{100 * a['low']:.0f}, {100 * a['high']:.0f}]"


def markdown(r: dict) -> str:
    """The tables of docs/rescue.md."""
    lines = []
    for sc in ("slm-free", "slm-priced"):
        lines += ["", (f"Cheapest point reaching the target, {sc} (in-sample: knobs chosen on these items; held out: "
                  "chosen on a random half, scored on the other, 100 splits x 2):"), "",
                  ("| target | group | in-sample point | accuracy | $/1k queries | vs LLM-only | held out $/1k | "
                  "held-out halves meeting the target | group / rescue cost |"), "|---|---|---|---|---|---|---|---|---|"]
        for key in ("at90", "at100"):
            c = r["scenarios"][sc][key]
            cf = (c.get("crossfit") or {}).get("sides") or {}
            for g, v in c["groups"].items():
                side = cf.get(g)
                ratio = c["ratio_over_rescue"].get(g) if g != "rescue" else None
                lines.append(
                    f"| {key[2:]}% | {g} | " + ("not reached | - | - | - | " if v is None else
                                                 f"`{v['label']}` | {_pct(v['accuracy'])} | {v['cost_per_1k']:.3f} | "
                                                 f"{-100 * v['cost_reduction']:+.0f}% | ")
                    + ("- | - | " if not side else f"{1000 * side['cost_per_query']:.3f} | {_pct(side['target_met_share'])} | ")
                    + ("-" if not ratio or not ratio["ratio"] else f"{ratio['ratio']:.2f}") + " |")
    lines += ["", ("Every rescue point (SLM free; seconds: recorded = the stored latencies, model = one footing for "
              "every leg, see below):"), "",
              ("| threshold | n | accuracy [95% CI] | $/1k | rescues / answer | rescues cut back to the first line | "
              "LLM share of the answer's tokens (rescued answers) | LLM share of output tokens paid | s / answer "
              "recorded | s / answer model (x LLM-only): SLM answer + LLM rescue + SLM after |"),
              "|---|---|---|---|---|---|---|---|---|---|"]
    for p in r["rescue_points"]:
        m = p["seconds_model_parts"]
        lines.append(f"| {p['threshold']:g} | {p['n']} | {_ci(p['accuracy'])} | {p['cost_per_1k']:.3f} | "
                     f"{p['rescues_per_answer']:.2f} | {p['rescues_at_start']} | "
                     f"{_pct(p['llm_share_of_final_tokens'])} ({_pct(p['llm_share_of_final_tokens_rescued'])}) | "
                     f"{_pct(p['llm_share_of_paid_output_tokens'])} | {p['seconds_per_answer']:.1f} | "
                     f"{p['seconds_model']:.1f} ({p['seconds_model_over_llm_only']:.2f}x): {m['slm_own']:.1f} + "
                     f"{m['llm_rescue']:.1f} + {m['slm_after']:.1f} |")
    lines += ["", "At rescue's cost (SLM free): the most accurate point of each other group that costs no more:", "",
              "| rescue point | accuracy | $/1k | start-of-answer shepherding | confidence cascade | best baseline |",
              "|---|---|---|---|---|---|"]
    for row in r["at_rescue_cost"]:
        cells = ["-" if v is None else f"{_pct(v['accuracy'])} (`{v['label']}`, {v['cost_per_1k']:.3f})"
                 for v in row["others"].values()]
        lines.append(f"| `{row['rescue']}` | {_pct(row['accuracy'])} | {row['cost_per_1k']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def print_tables(r: dict) -> None:
    print(f"items: {r['items']}; LLM-only {_pct(r['llm_only']['accuracy']['value'])}, "
          f"{r['llm_only']['seconds_per_answer']:.1f} s/answer; SLM-only {_pct(r['slm_only']['accuracy']['value'])}")
    for sc, by in r["scenarios"].items():
        for key, c in by.items():
            print(f"\n== {sc} {key} (LLM-only ${c['llm_cost_per_1k']:.3f}/1k)")
            cf = (c.get("crossfit") or {}).get("sides") or {}
            for g, v in c["groups"].items():
                ratio = c["ratio_over_rescue"].get(g) if g != "rescue" else None
                cr = ((c.get("crossfit") or {}).get("ratio_over_rescue") or {}).get(g) if g != "rescue" else None
                side = cf.get(g) or {}
                print(f"  {g:30s} " + ("not reached" if v is None else
                      f"{v['label']:45s} acc {_pct(v['accuracy'])} ${v['cost_per_1k']:.3f}/1k "
                      f"({-100 * v['cost_reduction']:+.0f}%)")
                      + (f" | ratio/rescue {ratio['ratio']:.2f}" if ratio and ratio["ratio"] else "")
                      + (f" [{ratio['ci']['low']:.2f}, {ratio['ci']['high']:.2f}] p_rescue_cheaper "
                         f"{ratio['ci']['p_shepherding_cheaper']:.2f}" if ratio and ratio["ci"] else "")
                      + (f" | held-out ${1000 * side['cost_per_query']:.3f}/1k met {_pct(side['target_met_share'])}"
                         if side else "")
                      + (f" | cf ratio {cr['median']:.2f} [{cr['low']:.2f}, {cr['high']:.2f}]" if cr else ""))
    print("\nat rescue's cost (slm-free): the most accurate point of each group costing no more")
    for row in r["at_rescue_cost"]:
        print(f"  {row['rescue']:32s} {_pct(row['accuracy'])} ${row['cost_per_1k']:.3f}/1k | " + " | ".join(
            f"{g}: " + ("-" if v is None else f"{_pct(v['accuracy'])} ({v['label']}, ${v['cost_per_1k']:.3f})")
            for g, v in row["others"].items()))
    tm = r["timing_model"]
    if tm:
        print(f"\ntiming model: {tm}")
    print("\nrescue points:")
    for p in r["rescue_points"]:
        print(f"  {p['label']:32s} acc {_pct(p['accuracy']['value'])} ${p['cost_per_1k']:.3f}/1k "
              f"rescues {p['rescues_per_answer']:.2f} llm share {_pct(p['llm_share_of_final_tokens'])} "
              f"(rescued {_pct(p['llm_share_of_final_tokens_rescued'])}, paid {_pct(p['llm_share_of_paid_output_tokens'])}) "
              f"{p['seconds_per_answer']:.1f} s = " + " + ".join(f"{k} {v:.1f}" for k, v in p["seconds_parts"].items())
              + f" | model {p['seconds_model']:.1f} s ({p['seconds_model_over_llm_only']:.2f}x LLM-only) = "
              + " + ".join(f"{k} {v:.1f}" for k, v in p["seconds_model_parts"].items()))


if __name__ == "__main__":
    main()
