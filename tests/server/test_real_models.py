"""The server with real local models (the 0.5B GGUF as SLM, and as "llm" to keep it fast), through the
official OpenAI SDK on loopback."""

from __future__ import annotations

import time

import httpx
import pytest

from shepherd.server import create_app

from .support import LiveServer, make_config

pytestmark = pytest.mark.slow

SLM_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
QUESTION = [{"role": "user", "content": "What is 17 * 23? Answer briefly."}]


@pytest.fixture(scope="module")
def real():
    pytest.importorskip("llama_cpp")
    from shepherd.models.llamacpp import LlamaCppBackend
    from shepherd.models.sources import ModelNotFound, resolve_model

    try:
        path = resolve_model(SLM_NAME, download=False)
    except ModelNotFound as exc:
        pytest.skip(f"{SLM_NAME} unavailable: {exc}")
    slm = LlamaCppBackend(path, model_id=SLM_NAME + "-as-slm", n_ctx=1024, n_threads=1)
    llm = LlamaCppBackend(path, model_id=SLM_NAME + "-as-llm", n_ctx=1024, n_threads=1)
    cfg = make_config({"warmup": True, "models": {"shepherd": {"policy": "fixed-hint", "settings": {"tokens": 8}}}},
                      llm_price={"input": 0.59, "output": 0.79})
    with LiveServer(create_app(cfg, {"slm": slm, "llm": llm})) as srv:
        srv.slm, srv.llm = slm, llm
        yield srv


def test_non_streaming_hint_with_real_models(real):
    resp = real.openai(timeout=120).chat.completions.create(model="shepherd", messages=QUESTION, max_tokens=24)
    text, sh = resp.choices[0].message.content, resp.shepherd
    assert sh["decision"] == "hint(8)" and sh["hint_tokens"] == 8 and sh["hint_mode"] == "prefix"
    assert sh["usage"]["llm"]["completion_tokens"] == 8
    assert sh["hint_text"] and text.startswith(sh["hint_text"]) and len(text) > len(sh["hint_text"])
    assert resp.usage.completion_tokens <= 24 + 8
    assert 0 < sh["cost_usd"] < sh["llm_only_cost_usd"]


def test_streaming_hint_with_real_models(real):
    client = real.openai(timeout=120)
    whole = client.chat.completions.create(model="shepherd", messages=QUESTION, max_tokens=24)
    chunks = list(client.chat.completions.create(model="shepherd", messages=QUESTION, max_tokens=24, stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [(c.choices[0].delta.content, c.shepherd["source"]) for c in chunks
              if c.choices and c.choices[0].delta.content]
    hint = "".join(p for p, s in pieces if s == "llm")
    rest = "".join(p for p, s in pieces if s == "slm")
    assert hint == whole.shepherd["hint_text"]  # greedy: the same 8 LLM tokens, streamed as they came
    assert rest.strip()
    assert [s for _, s in pieces] == sorted((s for _, s in pieces), key=lambda s: s != "llm")  # llm, then slm
    final = chunks[-1]
    assert final.choices == [] and final.shepherd["hint_tokens"] == 8 and final.usage.total_tokens > 0


def test_disconnect_stops_the_local_generation(real):
    with httpx.stream("POST", real.url + "/v1/chat/completions", timeout=120, json={
            "model": "slm", "stream": True, "max_tokens": 300,
            "messages": [{"role": "user", "content": "Count from 1 to 100, one number per line."}]}) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: {")
            if seen >= 3:
                break
    # 300 tokens take over 4 s here (at most ~63 tokens/s on 2 threads): a lock free within 2.5 s means
    # the generation was stopped, not finished
    deadline = time.monotonic() + 2.5
    while real.slm._run_lock.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not real.slm._run_lock.locked(), "llama.cpp kept generating after the client left"
    real.settle()
    resp = real.openai(timeout=120).chat.completions.create(model="slm", messages=QUESTION, max_tokens=4)
    assert resp.choices[0].message.content
