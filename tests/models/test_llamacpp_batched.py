"""The batched engine with the real 0.5B model: concurrent calls decoded together give the sequential
backend's results (greedy texts, sampled draws for a seed when alone, token counts, log-probabilities),
share their prompt's cells, and handle stop strings, cancellation, overflow and too-long prompts."""

import asyncio

import pytest

from shepherd.models.base import GenerationRequest, PromptTooLong
from shepherd.models.llamacpp import LlamaCppBackend
from shepherd.models.llamacpp_batched import BatchedLlamaCppBackend

pytestmark = pytest.mark.slow

Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for her "
     "friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh duck "
     "egg. How much in dollars does she make every day at the farmers' market?")
MSG = [{"role": "user", "content": Q}]


def _run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sequential(slm_path):
    return LlamaCppBackend(slm_path, model_id="q05", n_ctx=2048, n_threads=2)


def _greedy_requests():
    return [GenerationRequest.create(MSG, max_tokens=40),
            GenerationRequest.create(MSG, prefix="Janet's ducks lay 16 eggs", max_tokens=40),
            GenerationRequest.create(MSG, prefix="To find out how much Janet makes, we first", max_tokens=40),
            GenerationRequest.create("Count from 1 to 30, separated by commas.", max_tokens=40)]


def test_concurrent_greedy_calls_equal_the_sequential_backend(slm_path, sequential):
    reqs = _greedy_requests()
    want = [sequential.generate(r)[0] for r in reqs]
    batched = BatchedLlamaCppBackend(slm_path, model_id="q05", n_ctx=2048, n_threads=2, slots=4)

    async def go():
        try:
            return await asyncio.gather(*(batched.agenerate(r) for r in reqs))
        finally:
            await batched.aclose()

    got = [g[0] for g in _run(go())]
    diverged = 0
    for w, g in zip(want, got):
        assert g.prompt_tokens == w.prompt_tokens and g.logprobs is not None
        if g.text != w.text:
            # which calls share a decode depends on timing, and a batch of another shape rounds the logits
            # differently in the last bits: greedy decoding may then part ways, but only where the sequential
            # backend itself was nearly undecided between its two best tokens (seen once on a loaded CI run)
            diverged += 1
            k = next((i for i, (x, y) in enumerate(zip(w.text, g.text)) if x != y), min(len(w.text), len(g.text)))
            at = next((j for j, end in enumerate(w.logprobs.ends) if end > k), len(w.logprobs.ends) - 1)
            assert w.logprobs.margins[at] < 1.0, (w.text, g.text, w.logprobs.margins[at])
            continue
        assert (g.completion_tokens, g.finish_reason) == (w.completion_tokens, w.finish_reason)
        assert len(g.logprobs.logprobs) == len(w.logprobs.logprobs)
        assert abs(g.mean_logprob - w.mean_logprob) < 0.02
    assert diverged <= 1, "batched greedy decoding parted from the sequential backend's on most calls"
    # the three calls on the Janet prompt evaluated its shared prefix once
    assert batched.stats["prompt_copied"] > 50
    assert batched.stats["decodes"] < sum(g.completion_tokens for g in got)  # tokens of several calls per decode


def test_a_sampled_call_alone_draws_what_the_sequential_backend_draws(slm_path):
    """Same sampler chain, same seed: in a one-slot context of the same size with the sequential backend's
    attention (flash attention off), the logits are bit for bit the sequential backend's and so is the
    draw (other kernels round differently in the last bits, and a draw near a boundary follows them)."""
    req = GenerationRequest.create(MSG, max_tokens=32, temperature=0.7, seed=5)
    (want,) = LlamaCppBackend(slm_path, model_id="q05", n_ctx=2048, n_threads=2).generate(req)
    batched = BatchedLlamaCppBackend(slm_path, model_id="q05", n_ctx=2048, n_threads=2, slots=1, flash_attn=False)

    async def go():
        try:
            (alone,) = await batched.agenerate(req)
            two = await batched.agenerate(req, n=2)  # seeds 5 and 6
            return alone, two
        finally:
            await batched.aclose()

    alone, (five, six) = _run(go())
    assert alone.text == want.text
    assert six.text != five.text  # another seed, another draw


def test_stop_strings_more_calls_than_slots_cancel_and_bad_input(slm_path):
    batched = BatchedLlamaCppBackend(slm_path, model_id="q05", n_ctx=512, n_threads=2, slots=2)

    async def go():
        try:
            stop = GenerationRequest.create("Count from 1 to 30, separated by commas.", max_tokens=40, stop=[", 5"])
            many = [GenerationRequest.create(f"Write a long story about the number {i}.", max_tokens=6) for i in range(5)]
            out = await asyncio.gather(batched.agenerate(stop), *(batched.agenerate(r) for r in many))
            (s,) = out[0]
            (want,) = await LlamaCppBackend(slm_path, model_id="q05", n_ctx=512, n_threads=2).agenerate(stop)
            assert (s.text, s.finish_reason) == (want.text, want.finish_reason)
            assert s.finish_reason == "stop" and s.text.rstrip().endswith("4") and ", 5" not in s.text
            assert all(o[0].completion_tokens == 6 and o[0].finish_reason == "length" for o in out[1:])
            # a cancelled call frees its slot within a step: the next calls still run
            long = asyncio.ensure_future(batched.agenerate(GenerationRequest.create("Write a long essay.",
                                                                                    max_tokens=400)))
            await asyncio.sleep(1.0)
            long.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long
            (after,) = await asyncio.wait_for(batched.agenerate(GenerationRequest.create("Say hi.", max_tokens=4)), 60)
            assert after.completion_tokens == 4
            with pytest.raises(PromptTooLong):
                await batched.agenerate(GenerationRequest.create("word " * 600, max_tokens=4))
            (empty,) = await batched.agenerate(GenerationRequest.create("Say hi.", max_tokens=0))
            assert empty.text == "" and empty.completion_tokens == 0
        finally:
            await batched.aclose()

    _run(go())
