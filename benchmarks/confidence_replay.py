"""Does deciding from the SLM's own answer make shepherding cheaper than the best baseline? A replay.

Replays the policies that read the SLM's answer (`confidence`, `confidence-3band`, `confidence-cascade`,
the k-of-m agreement gates) beside today's shepherding and the baselines on a scored trace store (its SLM
answers carry token log-probabilities: `shepherd sweep score`), and reports, at >= 90% and >= 100% of
LLM-only accuracy, the cheapest shepherding point, the cheapest baseline point, and their cost ratio with a
95% bootstrap interval over items (both sides' cheapest point chosen anew on each resample, as the study's
headline). Knob values are picked on the reported items for every policy alike; a family with more knob
points (confidence-3band has hundreds) gains more from that choice, so read small ratios as no difference.

Beside it, knobs chosen out of sample (`metrics.crossfit_matched_cost`): on random halves of the items each
side, and each family, picks its cheapest point reaching the target on one half and is scored on the other
half; reported are the held-out cost, the share of held-out halves still meeting the target, and the
held-out cost ratio baseline / shepherding.

Prices: the two scenarios of the study (SLM free, SLM priced) and `slm-free-cached-half`, the paper's LLM
price with cached input at half the input rate (a provider's prompt cache): what a hint extended a piece at
a time (`confidence-ladder`) pays for re-reading the prompt and its earlier hint.

    python benchmarks/confidence_replay.py --test runs/scored/gsm8k-test.sqlite --train runs/gsm8k-train.sqlite \
        --predictor docs/results/artifacts/predictor --limit 195 --json out.json

FrugalGPT is left out unless `--frugalgpt`: its scorer reads the SLM answer's mean log-probability, so it
must be trained on scored training traces to be compared fairly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

POLICIES = ["slm-only", "llm-only", "fixed-ratio", "routellm-classifier", "routellm-mf", "graphrouter", "abc",
            "abc+greedy", "proactive", "reactive", "reactive-fixed", "reactive-fixed+vote", "confidence",
            "confidence-3band", "confidence-ladder", "confidence-cascade"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--test", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--predictor", default=str(REPO / "docs/results/artifacts/predictor"))
    ap.add_argument("--baselines", default=None, help="learned baselines of an earlier run (artifacts/)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--featurizer", default="minilm")
    ap.add_argument("--frugalgpt", action="store_true")
    ap.add_argument("--out", default="runs/confidence_replay")
    ap.add_argument("--policies", default=None, help="comma-separated policies (default: the list above)")
    ap.add_argument("--splits", type=int, default=100, help="random halvings for the out-of-sample choice")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shepherd.evaluation.study import _ratio_ci
    from shepherd.evaluation.suite import EvalConfig, run_eval

    cfg = EvalConfig(test=args.test, out=args.out, train=args.train, train_tasks=["gsm8k"],
                     featurizer=args.featurizer, predictor=args.predictor, baselines=args.baselines,
                     policies=(args.policies.split(",") if args.policies else POLICIES)
                     + (["frugalgpt"] if args.frugalgpt else []), limit=args.limit)
    ev = run_eval(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    from shepherd.costs import FREE, PAPER_LLM_PRICE, Price
    from shepherd.evaluation.evaluate import Scenario

    half = Price(input=PAPER_LLM_PRICE.input, output=PAPER_LLM_PRICE.output, cached_input=PAPER_LLM_PRICE.input / 2)
    scens = list(ev.scenarios) + [Scenario("slm-free-cached-half", half, FREE)]
    report = {}
    for res in ev.results:
        for sc in scens:
            out = {}
            for key, frac in (("at90", 0.9), ("at100", 1.0)):
                out[key] = _cheapest(res, sc, frac)
                out[key]["ratio_ci"] = _ratio_ci(res, sc, frac, seed=0)
                out[key]["crossfit"] = _crossfit(res, sc, frac, args.splits)
            report[f"{res.task}/{sc.name}"] = out
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def _crossfit(res, scen, fraction: float, splits: int) -> dict:
    """Out-of-sample choice: per side (shepherding, baseline) and per family."""
    from shepherd.evaluation.metrics import crossfit_matched_cost
    from shepherd.evaluation.study import _side

    order = list(res.item_ids)

    def vec(p):
        by = {o.item_id: o for o in p.outcomes}
        return [float(by[i].correct) for i in order], [by[i].cost(scen) for i in order]

    llm = vec(next(p for p in res.family("llm-only").points if p.ok))[0]
    sides: dict[str, list] = {"shepherding": [], "baseline": []}
    families: dict[str, list] = {}
    for fam in res.families:
        side = _side(fam.name, fam.group)
        pts = [vec(p) for p in fam.points if p.ok and len(p.outcomes) == len(order)]
        if side is None or not pts:
            continue
        sides[side] += pts
        families[fam.name] = pts
    both = crossfit_matched_cost(llm, sides, fraction, splits=splits)
    per = crossfit_matched_cost(llm, families, fraction, splits=splits)
    return {"sides": both and both["sides"], "baseline_over_shepherding": both and both["ratio_over_shepherding"],
            "families": per and per["sides"]}


def _cheapest(res, scen, fraction: float) -> dict:
    """The cheapest shepherding and the cheapest baseline point reaching `fraction` of LLM-only accuracy."""
    from shepherd.evaluation.study import _side

    llm = next(p for p in res.family("llm-only").points if p.ok)
    target = fraction * llm.accuracy.value - 1e-12
    best: dict[str, tuple[float, str, float]] = {}
    for fam in res.families:
        side = _side(fam.name, fam.group)
        if side is None:
            continue
        for p in fam.points:
            if p.ok and p.accuracy.value >= target:
                c = sum(o.cost(scen) for o in p.outcomes) / len(p.outcomes)
                if side not in best or c < best[side][0]:
                    best[side] = (c, p.label, p.accuracy.value)
    llm_cost = sum(o.cost(scen) for o in llm.outcomes) / len(llm.outcomes)
    out = {side: {"label": lab, "accuracy": acc, "cost_per_1k": 1000 * c, "cost_reduction": 1 - c / llm_cost}
           for side, (c, lab, acc) in best.items()}
    if "shepherding" in best and "baseline" in best:
        out["baseline_over_shepherding_cost"] = best["baseline"][0] / best["shepherding"][0]
    return out


if __name__ == "__main__":
    main()
