"""The in-process GGUF backend with the real Qwen2.5-Coder models."""

import pytest

from shepherd.models.base import GenerationRequest
from shepherd.policies import FixedHint, SLMOnly
from shepherd.runner import Runner, RunSettings

pytestmark = pytest.mark.slow

COUNT = [{"role": "user", "content": "Count from 1 to 30, separated by commas. Output only the numbers."}]


def test_prefix_really_continues_the_assistant_turn(slm_backend):
    req = GenerationRequest.create(COUNT, prefix="1, 2, 3, 4, 5, 6, 7,", max_tokens=8)
    (gen,) = slm_backend.generate(req)
    assert gen.text.lstrip().startswith("8"), gen.text
    # without the prefix the model starts from the beginning
    (fresh,) = slm_backend.generate(GenerationRequest.create(COUNT, max_tokens=4))
    assert fresh.text.lstrip().startswith("1"), fresh.text


def test_max_tokens_is_exact_and_prompt_counts_match(slm_backend):
    for n in (1, 3, 11):
        req = GenerationRequest.create("Explain what a hash map is.", max_tokens=n)
        (gen,) = slm_backend.generate(req)
        assert gen.completion_tokens == n
        assert gen.finish_reason == "length"
        assert gen.prompt_tokens == slm_backend.count_prompt_tokens(req)


def test_greedy_is_deterministic_and_sampling_varies_by_seed(slm_backend):
    req = GenerationRequest.create("Name a fruit.", max_tokens=8)
    a, = slm_backend.generate(req)
    b, = slm_backend.generate(req)
    assert a.text == b.text
    hot = GenerationRequest.create("Write a random word.", max_tokens=8, temperature=1.2, seed=1)
    texts = {g.text for g in slm_backend.generate(hot, n=4)}
    assert len(texts) > 1


@pytest.mark.parametrize("n", [1, 7, 20, 45])
async def test_hint_length_is_exact_with_the_real_pair(slm_backend, llm_backend, n):
    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=80))
    q = "A farmer has 17 cows and buys 8 more, then sells 5. How many cows are left? Finish with 'The answer is N.'"
    ans = await runner.answer(q, FixedHint(tokens=n))
    llm_gen = next(g for r, g in ans.generations if r == "llm")
    slm_gen = next(g for r, g in ans.generations if r == "slm")
    assert ans.hint_tokens == n == llm_gen.completion_tokens
    assert ans.text.startswith(ans.hint_text) and ans.hint_text
    # the two Qwen models share a tokenizer: the hint costs exactly n tokens in the SLM's prompt too
    assert slm_gen.prompt_tokens == llm_gen.prompt_tokens + n
    assert llm_backend.count_tokens(ans.hint_text) == n
    assert ans.cost.llm_output == pytest.approx(0.79 * n / 1e6)


async def test_stream_matches_generate(slm_backend):
    req = GenerationRequest.create("Say hello in three languages.", max_tokens=16)
    pieces, final = [], None
    async for chunk in slm_backend.astream(req):
        pieces.append(chunk.text)
        final = chunk.generation or final
    (whole,) = await slm_backend.agenerate(req)
    assert "".join(pieces) == final.text == whole.text
    assert len([p for p in pieces if p]) > 3


async def test_slm_only_counterfactual_uses_llm_tokenizer(slm_backend, llm_backend):
    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=24))
    ans = await runner.answer("What is 2+2?", SLMOnly())
    assert ans.usage["llm"].calls == 0
    assert ans.llm_only_cost_usd > 0


async def test_prompt_longer_than_the_context_window_is_refused_clearly(slm_path):
    from shepherd.models.base import PromptTooLong
    from shepherd.models.llamacpp import LlamaCppBackend

    small = LlamaCppBackend(slm_path, n_ctx=256, n_batch=64, n_threads=1)
    long_prompt = GenerationRequest.create("word " * 400, max_tokens=8)
    with pytest.raises(PromptTooLong, match="context window holds 256"):
        await small.agenerate(long_prompt)
    with pytest.raises(PromptTooLong):
        async for _ in small.astream(long_prompt):
            pass
    (ok,) = await small.agenerate(GenerationRequest.create("Say hi.", max_tokens=4))  # still serves short ones
    assert ok.completion_tokens <= 4


async def test_cancelling_a_generation_frees_the_model_within_a_token(slm_backend):
    import asyncio

    req = GenerationRequest.create(COUNT[0]["content"].replace("30", "5000"), prefix="1, 2, 3,", max_tokens=160)
    (full,) = await slm_backend.agenerate(req)
    assert full.completion_tokens == 160 and full.finish_reason == "length"  # it would run to the limit

    task = asyncio.create_task(slm_backend.agenerate(req))
    while not slm_backend._run_lock.locked():  # the worker thread is decoding
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(slm_backend._run_lock.acquire)  # the thread gives the model back ...
    slm_backend._run_lock.release()
    decoded = slm_backend.load().n_tokens - full.prompt_tokens
    assert decoded < 160 // 2  # ... long before max_tokens
    (again,) = await slm_backend.agenerate(req)  # and the next call is served whole
    assert again.text == full.text


# -- token log-probabilities ------------------------------------------------------------------------

MATH = "Natalia sold clips to 48 of her friends in April, and half as many in May. How many clips in all?"


def _close(a: list[float], b: list[float]) -> tuple[float, float]:
    diffs = sorted(abs(x - y) for x, y in zip(a, b, strict=True))
    return diffs[len(diffs) // 2], diffs[-1]


def test_recorded_logprobs_equal_teacher_forced_scores_token_by_token(slm_backend, monkeypatch):
    """What a generation records is the log-probability of each token it drew, at its own position: scoring
    the same text afterwards gives the same numbers token by token. They agree up to the rounding of
    llama.cpp's kernels, which depends on how positions are batched (exactly, with a fresh cache and one
    position a step); a one-position shift, the bug reported for llama-cpp-python's own logprobs, is far
    outside that."""
    from shepherd.models import llamacpp

    for req in (GenerationRequest.create(MATH, max_tokens=48),
                GenerationRequest.create(MATH, max_tokens=48, temperature=0.7, seed=5),
                GenerationRequest.create(MATH, prefix="April: 48 clips. May:", max_tokens=24)):
        (gen,) = slm_backend.generate(req)
        lp = gen.logprobs
        assert lp is not None and len(lp) == gen.completion_tokens
        assert gen.mean_logprob == pytest.approx(sum(lp.logprobs) / len(lp))
        assert lp.ends[-1] == len(gen.text) and lp.ends == sorted(lp.ends)
        assert all(x <= 0 for x in lp.logprobs) and all(m >= 0 for m in lp.margins)
        for chunk in (1, 64):  # one position a step (as generation), and the batched path for stored traces
            monkeypatch.setattr(llamacpp, "_SCORE_CHUNK", chunk)
            scored = slm_backend.score(req, gen.text)
            assert scored.ends == lp.ends
            median, worst = _close(scored.logprobs, lp.logprobs)
            assert median < 0.01 and worst < 0.3, (chunk, median, worst)
            assert _close(scored.entropies, lp.entropies)[0] < 0.01
            shifted, _ = _close(scored.logprobs[1:], lp.logprobs[:-1])
            assert shifted > 10 * max(median, 1e-3)


def test_greedy_tokens_are_the_most_likely_and_sampled_ones_need_not_be(slm_backend):
    (greedy,) = slm_backend.generate(GenerationRequest.create(MATH, max_tokens=40))
    # the greedy token is the top-1: its log-probability is the row's maximum, so the margin is top-1 - top-2
    # and a confident token has log-probability near 0 where the entropy is near 0
    for lp, ent in zip(greedy.logprobs.logprobs, greedy.logprobs.entropies):
        assert lp <= 0 and ent >= 0
        if ent < 1e-3:
            assert lp > -1e-2
    hot = GenerationRequest.create(MATH, max_tokens=40, temperature=1.5, seed=2)
    sampled = [g.logprobs for g in slm_backend.generate(hot, n=3)]
    assert min(min(s.logprobs) for s in sampled) < min(greedy.logprobs.logprobs)


def test_scoring_a_text_the_model_would_not_write_gives_low_logprobs(slm_backend):
    req = GenerationRequest.create(MATH, max_tokens=40)
    (gen,) = slm_backend.generate(req)
    own = slm_backend.score(req, gen.text)
    other = slm_backend.score(req, "Bananas are yellow because the moon is made of cheese, so 7.")
    assert other.mean < own.mean - 1.0
    with pytest.raises(ValueError):
        slm_backend.score(req)


async def test_streamed_generation_carries_the_same_logprobs(slm_backend):
    req = GenerationRequest.create(MATH, max_tokens=24)
    final = None
    async for chunk in slm_backend.astream(req):
        final = chunk.generation or final
    (whole,) = await slm_backend.agenerate(req)
    assert final.logprobs.logprobs == pytest.approx(whole.logprobs.logprobs, abs=1e-5)


def test_logprobs_can_be_switched_off(slm_path):
    from shepherd.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(slm_path, n_ctx=1024, logprobs=False)
    (gen,) = backend.generate(GenerationRequest.create(MATH, max_tokens=8))
    assert gen.logprobs is None and gen.mean_logprob is None
