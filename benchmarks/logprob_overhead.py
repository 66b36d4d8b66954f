"""What recording token log-probabilities costs the in-process backend, and how fast stored texts score.

Generation: the same greedy requests (GSM8K test questions in the task's prompt, a fixed token budget so
both sides generate the same number of tokens) with recording on and off, interleaved per request so
drift in the machine's load hits both sides alike. The prompt is evaluated once beforehand and reused from
the KV cache by both sides, so what is timed is token generation, where the recorder works; each side runs
`--repeats` times and its fastest run counts. Reported as milliseconds per generated token and the ratio
on / off with a 95% bootstrap interval over requests. Scoring: tokens per second of `score` over the
generated texts (teacher forcing, batched), the rate `shepherd sweep score` adds log-probabilities to
stored traces at.

    python benchmarks/logprob_overhead.py --n 12 --tokens 128 [--model qwen2.5-coder-0.5b-instruct-q4_k_m]

The target (issue 21): recording costs at most 10% of generation time.
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
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4_k_m")
    ap.add_argument("--n", type=int, default=12, help="requests")
    ap.add_argument("--tokens", type=int, default=128, help="tokens generated per request")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=2, help="runs per side and request (the fastest counts)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from shepherd.models.base import GenerationRequest
    from shepherd.models.llamacpp import LlamaCppBackend
    from shepherd.models.sources import resolve_model
    from shepherd.tasks import get_task

    task = get_task("gsm8k")
    items = task.load("test", limit=args.n)
    backend = LlamaCppBackend(resolve_model(args.model, download=False), model_id=args.model,
                              n_threads=args.threads)
    backend.load()
    # warm-up: first-call allocations are not the recorder's
    backend.generate(GenerationRequest.create(task.messages(items[0]), max_tokens=8))
    per_on, per_off, score_rates, texts = [], [], [], []
    for i, item in enumerate(items):
        # min_tokens is not a llama.cpp option: a stop-free budget and a count check keep the sides equal
        req = GenerationRequest.create(task.messages(item), max_tokens=args.tokens)
        sides = ([True, False] if i % 2 == 0 else [False, True]) * args.repeats
        backend.record_logprobs = False
        backend.generate(GenerationRequest.create(task.messages(item), max_tokens=1))  # the prompt, cached
        got: dict[bool, tuple[float, object]] = {}
        for on in sides:
            backend.record_logprobs = on
            t0 = time.perf_counter()
            (gen,) = backend.generate(req)
            took = time.perf_counter() - t0
            if on not in got or took < got[on][0]:
                got[on] = (took, gen)
        (t_on, g_on), (t_off, g_off) = got[True], got[False]
        assert g_on.text == g_off.text, "recording changed the generated text"
        per_on.append(t_on / max(1, g_on.completion_tokens))
        per_off.append(t_off / max(1, g_off.completion_tokens))
        backend._llama.reset()
        t0 = time.perf_counter()
        lp = backend.score(req, g_on.text)
        score_rates.append(len(lp) / (time.perf_counter() - t0))
        texts.append(g_on.completion_tokens)
        print(f"{i + 1}/{len(items)}: {g_on.completion_tokens} tokens, on {t_on:.2f}s, off {t_off:.2f}s, "
              f"score {score_rates[-1]:.0f} tok/s", file=sys.stderr, flush=True)

    ratios = [a / b for a, b in zip(per_on, per_off)]
    rng = random.Random(0)
    boots = sorted(statistics.fmean(rng.choice(ratios) for _ in ratios) for _ in range(1000))
    report = {
        "model": args.model, "requests": len(items), "tokens_per_request": statistics.fmean(texts),
        "threads": backend.n_threads,
        "ms_per_token_off": 1000 * statistics.median(per_off), "ms_per_token_on": 1000 * statistics.median(per_on),
        "ratio_on_off_mean": statistics.fmean(ratios), "ratio_ci95": [boots[25], boots[974]],
        "score_tokens_per_s_median": statistics.median(score_rates),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
