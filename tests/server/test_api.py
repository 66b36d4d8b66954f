"""The server through the official OpenAI SDK on loopback, with scripted models (fast)."""

from __future__ import annotations

import httpx
import openai
import pytest

from shepherd.server import create_app

from .support import LLM_ANSWER, QUESTION, SLM_ANSWER, make_config, scripted


def streamed_pieces(chunks) -> list[tuple[str, str]]:
    """(text, source) of every chunk that carries text."""
    return [(c.choices[0].delta.content, c.shepherd["source"]) for c in chunks
            if c.choices and c.choices[0].delta.content]


@pytest.fixture
def server(live):
    slm, llm = scripted()
    srv = live(create_app(make_config(), {"slm": slm, "llm": llm}))
    srv.slm, srv.llm = slm, llm
    return srv


def test_non_streaming_hint_answer_carries_usage_and_shepherd(server):
    client = server.openai()
    resp = client.chat.completions.create(model="shepherd", messages=QUESTION)
    text = resp.choices[0].message.content
    # hint(5): the first 5 LLM words, then the SLM's continuation
    assert text.startswith("Step one add three and")
    assert server.llm.calls[0].max_tokens == 5
    assert server.slm.calls[0].prefix == "Step one add three and"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.object == "chat.completion" and resp.model == "shepherd"
    sh = resp.shepherd
    assert sh["decision"] == "hint(5)" and sh["decision_kind"] == "hint" and sh["hint_tokens"] == 5
    assert sh["hint_mode"] == "prefix"
    # LLM: 3 prompt words at $1 + 5 hint tokens at $2
    assert sh["cost_usd"] == pytest.approx(13.0)
    assert sh["llm_only_cost_usd"] > sh["cost_usd"]
    assert sh["degraded"] is False
    u = resp.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert u.completion_tokens == sh["usage"]["llm"]["completion_tokens"] + sh["usage"]["slm"]["completion_tokens"]


def test_streaming_sends_hint_then_slm_and_ends_with_usage(server):
    client = server.openai()
    chunks = list(client.chat.completions.create(model="shepherd", messages=QUESTION, stream=True))
    pieces = streamed_pieces(chunks)
    text = "".join(p for p, _ in pieces)
    whole = client.chat.completions.create(model="shepherd", messages=QUESTION)
    assert text == whole.choices[0].message.content
    sources = [s for _, s in pieces]
    assert sources[:5] == ["llm"] * 5 and set(sources[5:]) == {"slm"}
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage.total_tokens == whole.usage.total_tokens
    assert last.shepherd["decision"] == "hint(5)"
    assert last.shepherd["cost_usd"] == pytest.approx(whole.shepherd["cost_usd"])


def test_streaming_include_usage_sends_a_usage_chunk(server):
    client = server.openai()
    chunks = list(client.chat.completions.create(model="shepherd", messages=QUESTION, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert chunks[-1].shepherd["hint_tokens"] == 5 and chunks[-1].shepherd["hint_mode"] == "prefix"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-2].usage is None


def test_stream_ends_with_done_marker(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions",
                      json={"model": "shepherd", "messages": QUESTION, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in lines)


@pytest.mark.parametrize("model,expected", [("slm", SLM_ANSWER), ("small", SLM_ANSWER), ("llm", LLM_ANSWER),
                                            ("big", LLM_ANSWER), ("shepherd-llm", LLM_ANSWER)])
def test_model_names_pass_through_to_one_model(server, model, expected):
    resp = server.openai().chat.completions.create(model=model, messages=QUESTION)
    assert resp.choices[0].message.content == expected
    assert resp.shepherd["decision"] in ("slm", "llm")


def test_llm_passthrough_counterfactual_equals_cost(server):
    resp = server.openai().chat.completions.create(model="llm", messages=QUESTION)
    assert resp.shepherd["llm_only_cost_usd"] == pytest.approx(resp.shepherd["cost_usd"])


def test_models_endpoint_lists_policies_and_models(server):
    client = server.openai()
    ids = {m.id for m in client.models.list()}
    assert {"shepherd", "shepherd-llm", "slm", "llm", "small", "big"} <= ids
    assert client.models.retrieve("shepherd").id == "shepherd"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_unknown_model_is_404_naming_the_choices(server):
    with pytest.raises(openai.NotFoundError) as err:
        server.openai().chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert err.value.code == "model_not_found"
    assert "shepherd" in err.value.message


def test_hint_override_through_extra_body(server):
    resp = server.openai().chat.completions.create(model="shepherd", messages=QUESTION,
                                                   extra_body={"shepherd": {"hint_tokens": 2}})
    assert resp.shepherd["decision"] == "hint(2)"
    assert resp.choices[0].message.content.startswith("Step one I think")


def test_max_tokens_limits_the_answer(server):
    resp = server.openai().chat.completions.create(model="slm", messages=QUESTION, max_tokens=3)
    assert resp.choices[0].message.content == "I think it"
    assert resp.choices[0].finish_reason == "length"


def test_health_and_metrics(server):
    client = server.openai()
    client.chat.completions.create(model="shepherd", messages=QUESTION)
    list(client.chat.completions.create(model="slm", messages=QUESTION, stream=True))
    health = httpx.get(server.url + "/health").json()
    assert health["status"] == "ok" and health["models"] == {"slm": "small", "llm": "big"}
    text = httpx.get(server.url + "/metrics").text
    assert 'shepherd_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in text
    assert 'shepherd_decisions_total{kind="hint",model="shepherd"} 1.0' in text
    assert 'shepherd_decisions_total{kind="slm",model="slm"} 1.0' in text
    assert 'shepherd_hint_tokens_total{model="shepherd"} 5.0' in text
    assert 'shepherd_cost_usd_total{key="anonymous",model="shepherd"} 13.0' in text
    assert "shepherd_answer_latency_seconds_bucket" in text
    assert "shepherd_time_to_first_token_seconds_bucket" in text


def test_api_keys(live):
    slm, llm = scripted()
    cfg = make_config({"keys": [{"name": "alice", "key": "sk-alice-123456"},
                                {"name": "bob", "key_sha256": __import__("hashlib").sha256(
                                    b"sk-bob-abcdefgh").hexdigest()}]})
    srv = live(create_app(cfg, {"slm": slm, "llm": llm}))
    with pytest.raises(openai.AuthenticationError) as err:
        srv.openai(api_key="sk-wrong-000000").chat.completions.create(model="slm", messages=QUESTION)
    assert err.value.code == "invalid_api_key"
    r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "slm", "messages": QUESTION})
    assert r.status_code == 401 and "Bearer" in r.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        srv.openai(api_key="sk-wrong-000000").models.list()
    for key in ("sk-alice-123456", "sk-bob-abcdefgh"):
        assert srv.openai(api_key=key).chat.completions.create(model="slm", messages=QUESTION).choices
    assert httpx.get(srv.url + "/health").status_code == 200  # health stays open for probes


def test_a_hint_bought_a_piece_at_a_time_streams_only_what_stands(live):
    """confidence-ladder through the server: the scripted SLM gives no log-probabilities, so its answer and
    each continuation are doubted and never streamed; the LLM's hint is extended rung by rung and it finishes
    its answer. The client sees exactly the LLM's answer; the cost breakdown has a cached-input line."""
    slm, llm = scripted()
    cfg = make_config({"models": {"ladder": {"policy": "confidence-ladder",
                                             "settings": {"threshold": 0.0, "rungs": [0.1, 0.3],
                                                          "expected_tokens": 20}}}})
    srv = live(create_app(cfg, {"slm": slm, "llm": llm}))
    client = srv.openai()
    chunks = list(client.chat.completions.create(model="ladder", messages=QUESTION, stream=True))
    pieces = streamed_pieces(chunks)
    assert {s for _, s in pieces} == {"llm"} and "".join(p for p, _ in pieces) == LLM_ANSWER
    assert [(c.prefix != "", c.max_tokens) for c in llm.calls] == [(False, 2), (True, 4), (True, 58)]  # 64 - 6
    whole = client.chat.completions.create(model="ladder", messages=QUESTION)
    assert whole.choices[0].message.content == LLM_ANSWER
    cost = whole.shepherd["cost"]
    assert cost["llm_cached_input"] > 0 and cost["total"] == pytest.approx(whole.shepherd["cost_usd"])


def test_a_rescue_streams_the_slm_then_the_llm_then_the_slm_and_lists_the_segments(live):
    """rescue through the server: the client sees the SLM's kept text, the LLM's tokens, the SLM's rest, as
    one answer; the `shepherd` object lists who wrote each segment."""
    from rescue_fakes import UnsureSLM, llm

    slm, big = UnsureSLM(), llm()
    cfg = make_config({"models": {"rescue": {"policy": "rescue", "settings": {"threshold": -1.0, "window": 2,
                                                                             "tokens": 5}}}})
    srv = live(create_app(cfg, {"slm": slm, "llm": big}))
    client = srv.openai()
    chunks = list(client.chat.completions.create(model="rescue", messages=QUESTION, stream=True))
    pieces = streamed_pieces(chunks)
    sources = [s for _, s in pieces]
    first_llm, last_llm = sources.index("llm"), len(sources) - 1 - sources[::-1].index("llm")
    assert set(sources[:first_llm]) == {"slm"} and set(sources[first_llm:last_llm + 1]) == {"llm"}
    assert set(sources[last_llm + 1:]) == {"slm"}
    whole = client.chat.completions.create(model="rescue", messages=QUESTION)
    assert "".join(p for p, _ in pieces) == whole.choices[0].message.content
    segs = whole.shepherd["segments"]
    assert [s["source"] for s in segs] == ["slm", "llm", "slm"] and segs[1]["tokens"] == 5
    assert "".join(s["text"] for s in segs) == whole.choices[0].message.content
