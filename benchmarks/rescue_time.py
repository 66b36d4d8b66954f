"""Wall-clock per answer of `rescue` against LLM-only, live on the local pair (docs/rescue.md).

The replay's seconds add stored latencies, and a rescue's parts were recorded under other conditions than
the study's LLM answers (a batched, concurrent sweep beside other jobs). This runs the policies live, one
answer at a time, on the same items and interleaved (LLM-only, then each rescue setting, per item), so
every policy sees the same machine load; it reports the mean seconds per answer and, per rescue, the time
of each leg (the SLM's whole answer, the LLM's rescue, the SLM's continuation).

    python benchmarks/rescue_time.py --ids @runs/gsm8k_seed0_20.ids --n 6 --rescues=-0.35:32,-0.5:16 \
        --json runs/rescue_time.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", required=True, help="GSM8K test ids: comma-separated or @file")
    ap.add_argument("--n", type=int, default=6, help="items (the first n of --ids)")
    ap.add_argument("--rescues", default="-0.35:32", help="threshold:tokens settings, comma-separated")
    ap.add_argument("--threads", type=int, default=None, help="threads per model (default: llama.cpp's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shepherd.api import Shepherd
    from shepherd.config import ModelConfig
    from shepherd.policies.registry import make_policy
    from shepherd.runner import RunSettings
    from shepherd.tasks import get_task

    ids = (Path(args.ids[1:]).read_text().split() if args.ids.startswith("@")
           else [i.strip() for i in args.ids.split(",") if i.strip()])[: args.n]
    task = get_task("gsm8k")
    items = task.load("test", ids=ids)
    slm = ModelConfig(model="qwen2.5-coder-0.5b-instruct-q4_k_m", n_threads=args.threads)
    llm = ModelConfig(model="qwen2.5-coder-1.5b-instruct-q4_k_m", n_threads=args.threads)
    sh = Shepherd(slm=slm, llm=llm, settings=RunSettings(max_tokens=512))
    settings = [tuple(float(x) for x in s.split(":")) for s in args.rescues.split(",") if s.strip()]
    policies = {"llm-only": make_policy("llm-only")}
    for t, n in settings:
        policies[f"rescue threshold={t:g} n={int(n)}"] = make_policy("rescue", threshold=t, tokens=int(n))
    rows: dict[str, list[dict]] = {k: [] for k in policies}
    sh.answer("What is 2 + 2?", policy=policies["llm-only"])  # load both models before timing
    sh.answer("What is 2 + 2?", policy="slm-only")
    for it in items:
        msgs = task.messages(it)
        for name, pol in policies.items():
            t0 = time.perf_counter()
            ans = sh.answer(msgs, policy=pol)
            wall = time.perf_counter() - t0
            legs = [(role, g.latency_s, g.completion_tokens) for role, g in ans.generations]
            rows[name].append({"item": it.id, "seconds": wall, "correct": bool(task.grade(it, ans.text).correct),
                               "legs": legs, "rescued": len(ans.segments) > 1})
            print(f"{it.id} {name}: {wall:.1f}s {legs}", file=sys.stderr, flush=True)
    report = {"items": ids, "policies": {}}
    base = mean(r["seconds"] for r in rows["llm-only"])
    for name, rs in rows.items():
        legs = {"slm_own": mean(r["legs"][0][1] if r["legs"][0][0] == "slm" else 0.0 for r in rs),
                "llm": mean(sum(s for role, s, _ in r["legs"] if role == "llm") for r in rs),
                "slm_after": mean(sum(s for role, s, _ in r["legs"][1:] if role == "slm") for r in rs)}
        report["policies"][name] = {"seconds_per_answer": mean(r["seconds"] for r in rs),
                                    "over_llm_only": mean(r["seconds"] for r in rs) / base,
                                    "legs": legs, "rescued": sum(r["rescued"] for r in rs),
                                    "correct": sum(r["correct"] for r in rs), "rows": rs}
        print(f"{name:32s} {report['policies'][name]['seconds_per_answer']:.1f} s/answer "
              f"({report['policies'][name]['over_llm_only']:.2f}x LLM-only), legs "
              + ", ".join(f"{k} {v:.1f}s" for k, v in legs.items())
              + f", rescued {report['policies'][name]['rescued']}/{len(rs)}, correct {report['policies'][name]['correct']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
