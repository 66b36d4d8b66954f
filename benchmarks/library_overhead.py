"""Time the library adds per answer outside model calls (issue 2; target: under 1 ms per answer).

Two measurements:
  * instant backends (ScriptedBackend, no delay): the whole answer() minus the time spent inside the
    backends' agenerate, over many answers: the pure orchestration + accounting cost;
  * the real local pair (llama.cpp): answer latency minus the time inside llama.cpp's completion call,
    which adds chat-template rendering, thread hand-off and the LLM-only counterfactual count.

    python benchmarks/library_overhead.py [--real N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from shepherd.models.base import Backend
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies import FixedHint, SLMOnly
from shepherd.runner import Runner, RunSettings


class Timed(Backend):
    """Wraps a backend and adds up the wall time spent inside it."""

    def __init__(self, inner: Backend):
        self.inner = inner
        self.model_id = inner.model_id
        self.inside = 0.0

    async def agenerate(self, request, n=1):
        t0 = time.perf_counter()
        try:
            return await self.inner.agenerate(request, n)
        finally:
            self.inside += time.perf_counter() - t0

    def count_tokens(self, text):
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, request):
        return self.inner.count_prompt_tokens(request)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def overhead(runner: Runner, slm: Timed, llm: Timed, policy, query: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        slm.inside = llm.inside = 0.0
        t0 = time.perf_counter()
        await runner.answer(query, policy)
        out.append(time.perf_counter() - t0 - slm.inside - llm.inside)
    return out


def report(label: str, xs: list[float]) -> None:
    ms = [x * 1000 for x in xs]
    print(f"{label:<44} n={len(ms):>5}  p50 {statistics.median(ms):7.3f} ms  p99 {pct(ms, 0.99):7.3f} ms  "
          f"mean {statistics.fmean(ms):7.3f} ms")


async def main(real: int) -> None:
    q = "A farmer has 17 cows and buys 8 more, then sells 5. How many cows are left?"
    slm = Timed(ScriptedBackend("I think there are 20 cows . The answer is 20.", model_id="slm"))
    llm = Timed(ScriptedBackend("He has 17 + 8 = 25 cows , then 25 - 5 = 20 . The answer is 20.", model_id="llm"))
    runner = Runner(slm, llm)
    await overhead(runner, slm, llm, FixedHint(tokens=6), q, 200)  # warm-up
    report("instant backends, fixed hint(6)", await overhead(runner, slm, llm, FixedHint(tokens=6), q, 5000))
    report("instant backends, slm-only", await overhead(runner, slm, llm, SLMOnly(), q, 5000))
    if real:
        from shepherd.models.llamacpp import LlamaCppBackend
        from shepherd.models.sources import resolve_model

        s = LlamaCppBackend(resolve_model("qwen2.5-coder-0.5b-instruct-q4_k_m"), n_ctx=2048)
        l_ = LlamaCppBackend(resolve_model("qwen2.5-coder-1.5b-instruct-q4_k_m"), n_ctx=2048)
        s.load(), l_.load()
        rs, rl = Timed(s), Timed(l_)
        runner = Runner(rs, rl, settings=RunSettings(max_tokens=24))
        # time inside the model = time llama.cpp reports for its completion call (Generation.latency_s)
        xs = []
        for _ in range(real):
            t0 = time.perf_counter()
            ans = await runner.answer(q, FixedHint(tokens=8))
            xs.append(time.perf_counter() - t0 - sum(g.latency_s for _, g in ans.generations))
        report("local llama.cpp pair, hint(8), 24 tokens", xs)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=int, default=0, help="also measure N answers with the local pair")
    asyncio.run(main(ap.parse_args().real))
