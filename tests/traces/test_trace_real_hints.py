"""With a real model: a hint cut from the stored full answer is what an n-token LLM call would return."""

import asyncio
from dataclasses import replace

import pytest

from shepherd.models.base import GenerationRequest

SLM_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"


@pytest.mark.slow
def test_cut_hint_equals_a_live_n_token_generation():
    pytest.importorskip("llama_cpp")
    from shepherd.models.llamacpp import LlamaCppBackend
    from shepherd.models.sources import ModelNotFound, resolve_model
    from shepherd.traces.hints import token_cutter
    from shepherd.traces.prefix import FreshContext

    try:
        path = resolve_model(SLM_NAME, download=False)
    except ModelNotFound as exc:
        pytest.skip(str(exc))
    model = FreshContext(LlamaCppBackend(path, model_id=SLM_NAME, n_ctx=1024))
    request = GenerationRequest.create("Natalia sold clips to 48 of her friends in April, and then she sold half as "
                                       "many clips in May. How many clips did Natalia sell altogether?",
                                       max_tokens=32)
    (full,) = asyncio.run(model.agenerate(request))
    cut = token_cutter(model, full.text)
    assert cut.method == "tokenize"
    assert cut.length == full.completion_tokens == 32
    for n in (3, 10, 19):
        (live,) = asyncio.run(model.agenerate(replace(request, max_tokens=n)))
        assert cut.cut(n) == live.text, n
        assert model.inner.count_tokens(cut.cut(n)) == n
