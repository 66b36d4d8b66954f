"""What extending a hint costs in time on the local LLM, against buying the longer hint afresh.

A hint bought a piece at a time (the `confidence-ladder` policy) first buys n1 tokens; if the SLM's
continuation is doubted, the LLM extends its own hint to n2. Between the two LLM calls only the SLM runs
(its own model instance), so the LLM's KV cache still holds the prompt and the n1 tokens it wrote:
llama.cpp reuses that prefix and the extension decodes only n2 - n1 new tokens. Buying the n2-token hint
afresh (what a policy without extension would do) evaluates the prompt again and decodes all n2 tokens.

Per GSM8K test item, with the LLM's cache emptied before each side:
- fresh: a hint of n2 tokens, timed;
- extended: a hint of n1 tokens (not timed), then its extension to n2 (timed);
and the texts are checked equal (the extension continues the LLM's own greedy answer). Reported: median
seconds per side, the ratio extended / fresh with a 95% bootstrap interval over items, and what the
extension is billed (n2 - n1 output tokens; prompt + n1 as cached input) against the fresh hint.

    python benchmarks/hint_extension.py --n 10 --n1 16 --n2 48 [--model qwen2.5-coder-1.5b-instruct-q4_k_m]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b-instruct-q4_k_m")
    ap.add_argument("--n", type=int, default=10, help="GSM8K test items")
    ap.add_argument("--n1", type=int, default=16, help="the first hint's tokens")
    ap.add_argument("--n2", type=int, default=48, help="the extended hint's tokens")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shepherd.costs import PAPER_LLM_PRICE, Price
    from shepherd.hinting import extension_request, hint_request
    from shepherd.models.base import GenerationRequest
    from shepherd.models.llamacpp import LlamaCppBackend
    from shepherd.models.sources import resolve_model
    from shepherd.tasks import get_task

    task = get_task("gsm8k")
    items = task.load("test", limit=args.n)
    llm = LlamaCppBackend(resolve_model(args.model, download=False), model_id=args.model, n_threads=args.threads,
                          logprobs=False)
    llm.load()
    llm.generate(GenerationRequest.create("warm up", max_tokens=4))
    fresh_s, ext_s, prompts, same = [], [], [], 0
    for i, item in enumerate(items):
        req = GenerationRequest.create(task.messages(item), max_tokens=512)
        llm._llama.reset()
        t0 = time.perf_counter()
        (fresh,) = llm.generate(hint_request(req, args.n2))
        fresh_s.append(time.perf_counter() - t0)
        llm._llama.reset()
        (first,) = llm.generate(hint_request(req, args.n1))
        t0 = time.perf_counter()
        (ext,) = llm.generate(extension_request(req, first.text, first.completion_tokens, args.n2))
        ext_s.append(time.perf_counter() - t0)
        same += (first.text + ext.text) == fresh.text
        prompts.append(first.prompt_tokens)
        print(f"{i + 1}/{len(items)}: fresh {fresh_s[-1]:.2f}s, extension {ext_s[-1]:.2f}s, "
              f"texts {'equal' if (first.text + ext.text) == fresh.text else 'DIFFER'}", file=sys.stderr, flush=True)

    ratios = [e / f for e, f in zip(ext_s, fresh_s)]
    rng = random.Random(0)
    boots = sorted(statistics.fmean(rng.choice(ratios) for _ in ratios) for _ in range(1000))
    P = statistics.fmean(prompts)
    cached = Price(input=PAPER_LLM_PRICE.input, output=PAPER_LLM_PRICE.output,
                   cached_input=PAPER_LLM_PRICE.input / 2)  # e.g. a provider that halves cached input
    report = {
        "model": args.model, "items": len(items), "n1": args.n1, "n2": args.n2, "threads": llm.n_threads,
        "prompt_tokens_mean": P,
        "fresh_hint_s_median": statistics.median(fresh_s), "extension_s_median": statistics.median(ext_s),
        "ratio_extension_over_fresh_mean": statistics.fmean(ratios), "ratio_ci95": [boots[25], boots[974]],
        "texts_equal": f"{same}/{len(items)}",
        "usd_per_1k": {
            "fresh_hint_n2": 1000 * PAPER_LLM_PRICE.cost(P, args.n2),
            "first_hint_n1_plus_extension_paper_price": 1000 * (PAPER_LLM_PRICE.cost(P, args.n1)
                                                              + PAPER_LLM_PRICE.cost(P + args.n1, args.n2 - args.n1)),
            "first_hint_n1_plus_extension_cached_half": 1000 * (cached.cost(P, args.n1)
                                                              + cached.cost(P + args.n1, args.n2 - args.n1, P + args.n1)),
        },
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
