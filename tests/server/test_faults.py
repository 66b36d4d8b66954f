"""Each failure the server promises to handle, injected, with the documented response and nothing left
running afterwards."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest

from shepherd.models.base import BackendError
from shepherd.models.scripted import ScriptedBackend
from shepherd.server import create_app

from .support import LLM_ANSWER, QUESTION, SLM_ANSWER, LiveServer, make_config, scripted

CHAT = "/v1/chat/completions"


def post(srv, body, **kw):
    return httpx.post(srv.url + CHAT, json=body, timeout=kw.pop("timeout", 10), **kw)


def stream_events(srv, body, timeout=10):
    """(status, [parsed data events], saw_done) of a streamed request."""
    events, done = [], False
    with httpx.stream("POST", srv.url + CHAT, json={**body, "stream": True}, timeout=timeout) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, [r.json()], False
        for line in r.iter_lines():
            if not line:
                continue
            assert line.startswith("data: ")
            if line == "data: [DONE]":
                done = True
                continue
            events.append(json.loads(line[6:]))
    return 200, events, done


def text_of(events):
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))


def sources_of(events):
    return [e["shepherd"]["source"] for e in events
            if e.get("choices") and e["choices"][0]["delta"].get("content")]


# -- request validation -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain():
    slm, llm = scripted()
    with LiveServer(create_app(make_config({"max_body_bytes": 4096, "max_tokens_cap": 100}),
                               {"slm": slm, "llm": llm})) as srv:
        yield srv


BAD_REQUESTS = [
    ({}, "model"),
    ({"model": "shepherd"}, "messages"),
    ({"model": "shepherd", "messages": []}, "messages"),
    ({"model": "shepherd", "messages": "hi"}, "messages"),
    ({"model": "shepherd", "messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({"model": "shepherd", "messages": [{"content": "hi"}]}, "role"),
    ({"model": "shepherd", "messages": [{"role": "user", "content": "   "}]}, "user message"),
    ({"model": "shepherd", "messages": [{"role": "system", "content": "be brief"}]}, "user message"),
    ({"model": "shepherd", "messages": QUESTION, "n": 2}, "n must be 1"),
    ({"model": "shepherd", "messages": QUESTION, "max_tokens": 0}, "max_tokens"),
    ({"model": "shepherd", "messages": QUESTION, "max_tokens": 101}, "at most 100"),
    ({"model": "shepherd", "messages": QUESTION, "max_completion_tokens": 5000}, "at most 100"),
    ({"model": "shepherd", "messages": QUESTION, "temperature": 3}, "temperature"),
    ({"model": "shepherd", "messages": QUESTION, "top_p": 0}, "top_p"),
    ({"model": "shepherd", "messages": QUESTION, "stream": "yes please"}, "stream"),
    ({"model": "shepherd", "messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "shepherd", "messages": QUESTION, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tools"),
    ({"model": "shepherd", "messages": QUESTION, "response_format": {"type": "json_object"}}, "response_format"),
    ({"model": "shepherd", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]}, "text parts"),
    ({"model": "shepherd", "messages": QUESTION, "shepherd": {"hint_tokens": 500}}, "hint_tokens"),
    ({"model": "shepherd", "messages": QUESTION, "shepherd": {"budget": 1}}, "shepherd"),
    ({"model": "", "messages": QUESTION}, "model"),
    ({"model": "slm", "messages": QUESTION, "frequency_penalty": 0.5}, "frequency_penalty is not supported"),
    ({"model": "slm", "messages": QUESTION, "logprobs": True}, "logprobs is not supported"),
    ({"model": "slm", "messages": QUESTION, "top_k": 5}, "unknown field 'top_k'"),
    ([1, 2, 3], "JSON object"),
]


@pytest.mark.parametrize("body,needle", BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))])
def test_invalid_requests_get_openai_style_400(plain, body, needle):
    r = post(plain, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    assert needle.lower() in err["message"].lower(), err


LONE_SURROGATE = b'{"model": "shepherd", "messages": [{"role": "user", "content": "\\ud800"}]}'


@pytest.mark.parametrize("raw", [b"{not json", b"", LONE_SURROGATE, b"\xff\xfe"])
def test_malformed_bodies_get_400(plain, raw):
    r = httpx.post(plain.url + CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"]


def test_sdk_raises_bad_request(plain):
    with pytest.raises(openai.BadRequestError) as err:
        plain.openai().chat.completions.create(model="shepherd", messages=QUESTION, max_tokens=1000)
    assert err.value.param == "max_tokens"


def test_body_over_the_limit_is_413(plain):
    big = {"model": "shepherd", "messages": [{"role": "user", "content": "x" * 5000}]}
    r = post(plain, big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(10):
            yield b" " * 1000

    r = httpx.post(plain.url + CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_routes_and_methods_answer_in_openai_format(plain):
    r = httpx.get(plain.url + CHAT)
    assert r.status_code == 405 and r.json()["error"]["message"]
    r = httpx.get(plain.url + "/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["message"]


# -- backends failing ---------------------------------------------------------------------------------

def serve(live, server=None, **faults):
    slm, llm = scripted(**faults)
    srv = live(create_app(make_config(server), {"slm": slm, "llm": llm}))
    srv.slm, srv.llm = slm, llm
    return srv


@pytest.mark.parametrize("fault", [{"fail": BackendError("connection refused")},
                                   {"fail": RuntimeError("segfault-ish bug")},
                                   {"delay_s": 2.0}],
                         ids=["down", "crashes", "times-out"])
def test_llm_failure_answers_slm_only_flagged_degraded(live, fault):
    srv = serve(live, {"llm_timeout_s": 0.2}, **fault)
    resp = srv.openai().chat.completions.create(model="shepherd", messages=QUESTION)
    assert resp.choices[0].message.content == SLM_ANSWER
    assert resp.shepherd["degraded"] is True and resp.shepherd["notes"]
    assert resp.shepherd["cost_usd"] == 0.0
    status, events, done = stream_events(srv, {"model": "shepherd", "messages": QUESTION})
    assert status == 200 and done
    assert text_of(events) == SLM_ANSWER and events[-1]["shepherd"]["degraded"] is True
    health = httpx.get(srv.url + "/health").json()["backends"]["llm"]
    assert health["errors"] + health["timeouts"] == 2 and health["last_error"]
    kind = "timeout" if "delay_s" in fault else "error"
    assert f'shepherd_backend_errors_total{{kind="{kind}",role="llm"}} 2.0' in httpx.get(srv.url + "/metrics").text


def test_llm_dying_mid_hint_is_continued_by_the_slm(live):
    srv = serve(live, die_after_chunks=2)
    status, events, done = stream_events(srv, {"model": "shepherd", "messages": QUESTION})
    assert status == 200 and done
    assert sources_of(events)[:2] == ["llm", "llm"] and set(sources_of(events)[2:]) == {"slm"}
    assert text_of(events) == "Step one " + SLM_ANSWER
    sh = events[-1]["shepherd"]
    assert sh["degraded"] is True and "after 2 tokens" in sh["notes"][0]
    assert srv.slm.calls[-1].prefix == "Step one"
    assert sh["usage"]["llm"]["completion_tokens"] == 2 and sh["cost_usd"] > 0


@pytest.mark.parametrize("stream", [False, True])
def test_slm_down_the_llm_answers(live, stream):
    srv = serve(live, slm_fail=BackendError("out of memory"))
    for model in ("slm", "shepherd"):
        body = {"model": model, "messages": QUESTION}
        if stream:
            status, events, _ = stream_events(srv, body)
            text, sh = text_of(events), events[-1]["shepherd"]
        else:
            r = post(srv, body)
            status, text, sh = r.status_code, r.json()["choices"][0]["message"]["content"], r.json()["shepherd"]
        assert status == 200
        assert text == LLM_ANSWER  # slm: the LLM answers; shepherd: the LLM finishes its own hint
        assert sh["degraded"] is True


def test_slm_dying_mid_continuation_is_finished_by_the_llm(live):
    srv = serve(live, slm_die_after_chunks=3)  # chunk 0 is "" (before the space)
    status, events, done = stream_events(srv, {"model": "shepherd", "messages": QUESTION})
    assert status == 200 and done
    src = sources_of(events)
    assert src[:5] == ["llm"] * 5 and src[5:7] == ["slm", "slm"] and set(src[7:]) == {"llm"}
    assert events[-1]["shepherd"]["degraded"] is True
    assert srv.llm.calls[-1].prefix == "Step one add three and I think"


@pytest.mark.parametrize("stream", [False, True])
def test_both_down_is_503_with_the_reason(live, stream):
    srv = serve(live, fail=BackendError("llm refused"), slm_fail=BackendError("slm crashed"))
    client = srv.openai()
    with pytest.raises(openai.InternalServerError) as err:
        out = client.chat.completions.create(model="shepherd", messages=QUESTION, stream=stream)
        list(out) if stream else None
    assert err.value.status_code == 503 and err.value.code == "backend_unavailable"
    assert "llm refused" in err.value.message and "slm crashed" in err.value.message


def test_no_fallback_configured_is_503(live):
    srv = serve(live, {"on_llm_error": "fail"}, fail=BackendError("llm refused"))
    for stream in (False, True):
        r = post(srv, {"model": "shepherd", "messages": QUESTION, "stream": stream})
        assert r.status_code == 503 and "llm refused" in r.json()["error"]["message"]


def test_failure_after_text_was_sent_ends_the_stream_with_an_error_event(live):
    srv = serve(live, {"on_llm_error": "fail"}, die_after_chunks=3)
    client = srv.openai()
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(model="llm", messages=QUESTION, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert "".join(got) == "Step one add"
    assert "died mid-stream" in err.value.message


def test_in_flight_cap_answers_503_busy(live):
    srv = serve(live, {"max_in_flight": 1}, slm_delay_s=0.5)
    results = []

    def call():
        results.append(post(srv, {"model": "slm", "messages": QUESTION}))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
        time.sleep(0.1)
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 503]
    busy = next(r for r in results if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["code"] == "server_busy"


# -- clients going away -----------------------------------------------------------------------------------

class WatchedBackend(ScriptedBackend):
    """Counts the chunks it produced and notes when its work was stopped."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.produced = 0
        self.closed = False
        self.cancelled = False

    async def astream(self, request):
        try:
            async for chunk in super().astream(request):
                self.produced += 1
                yield chunk
        finally:
            self.closed = True

    async def agenerate(self, request, n=1):
        try:
            return await super().agenerate(request, n)
        except asyncio.CancelledError:
            self.cancelled = True
            raise


def test_client_disconnect_mid_stream_stops_the_backend(live):
    before = set(threading.enumerate())
    long_answer = " ".join(f"w{i}" for i in range(400))
    llm = WatchedBackend(long_answer, model_id="big", delay_s=0.02)
    slm = WatchedBackend(SLM_ANSWER, model_id="small")
    with LiveServer(create_app(make_config(max_tokens=1000, server={"max_tokens_cap": 1000}),
                               {"slm": slm, "llm": llm})) as srv:
        with httpx.stream("POST", srv.url + CHAT, json={"model": "llm", "messages": QUESTION, "stream": True,
                                                         "max_tokens": 1000}) as r:
            seen = 0
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    seen += 1
                if seen >= 4:
                    break
        # the connection is closed here, long before the 400 words (8 s) are out
        deadline = time.monotonic() + 3
        while not llm.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert llm.closed, "the backend stream was not closed"
        produced = llm.produced
        time.sleep(0.2)
        assert llm.produced == produced < 100, "the backend kept producing after the client left"
        srv.settle()
        assert srv.request_tasks() == []
        assert 'shepherd_client_disconnects_total{model="llm"} 1.0' in httpx.get(srv.url + "/metrics").text
    leaked = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not leaked, leaked


def test_client_disconnect_while_waiting_cancels_a_whole_answer(live):
    llm = WatchedBackend(LLM_ANSWER, model_id="big", delay_s=5.0)
    slm = WatchedBackend(SLM_ANSWER, model_id="small")
    srv = live(create_app(make_config({"llm_timeout_s": 30}), {"slm": slm, "llm": llm}))
    with pytest.raises(httpx.ReadTimeout):
        post(srv, {"model": "llm", "messages": QUESTION}, timeout=0.3)
    deadline = time.monotonic() + 3
    while not llm.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert llm.cancelled, "the backend call went on after the client left"
    srv.settle()
    assert srv.request_tasks() == []
    assert slm.calls == []  # a cancelled request does not fall back to the other model
    text = httpx.get(srv.url + "/metrics").text
    assert 'shepherd_requests_total{endpoint="/v1/chat/completions",status="499"} 1.0' in text
    assert 'shepherd_client_disconnects_total{model="llm"} 1.0' in text


def test_a_policy_bug_is_a_500_in_openai_format_and_the_server_keeps_serving(live):
    from shepherd.policies import Policy, register_policy

    class Broken(Policy):
        name = "test-broken"

        async def decide(self, ctx):
            raise ZeroDivisionError("predictor divided by zero")

    register_policy("test-broken", Broken)
    slm, llm = scripted()
    srv = live(create_app(make_config({"models": {"broken": {"policy": "test-broken"}}}),
                          {"slm": slm, "llm": llm}))
    for stream in (False, True):
        r = post(srv, {"model": "broken", "messages": QUESTION, "stream": stream})
        assert r.status_code == 500
        assert r.json()["error"]["code"] == "internal_error" and "ZeroDivisionError" in r.json()["error"]["message"]
    assert post(srv, {"model": "slm", "messages": QUESTION}).status_code == 200
    text = httpx.get(srv.url + "/metrics").text
    assert 'shepherd_requests_total{endpoint="/v1/chat/completions",status="500"} 2.0' in text


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_too_long_for_both_models_is_a_400_not_an_outage(live, stream):
    from shepherd.models.base import PromptTooLong

    srv = serve(live, fail=PromptTooLong("big: the prompt has 9000 tokens; the context window holds 4096"),
                slm_fail=PromptTooLong("small: the prompt has 9000 tokens; the context window holds 2048"))
    body = {"model": "shepherd", "messages": QUESTION}
    if stream:
        status, events, _ = stream_events(srv, body)
        err = events[0]["error"]
    else:
        r = post(srv, body)
        status, err = r.status_code, r.json()["error"]
    assert status == 400
    assert err["code"] == "context_length_exceeded" and "context window" in err["message"]
    health = httpx.get(srv.url + "/health").json()["backends"]
    assert health["llm"]["errors"] == 0 and health["slm"]["errors"] == 0  # the models are fine


def test_a_pass_through_forwards_the_clients_sampling_and_the_apis_defaults():
    """On a route that passes through to one model, unset sampling is the API's (temperature 1, no seed),
    set sampling is forwarded as sent; a shepherding route stays greedy with seed 0. Fields that describe
    the caller are accepted, unsupported ones at their defaults too."""
    slm, llm = scripted()
    with LiveServer(create_app(make_config({}), {"slm": slm, "llm": llm})) as plain:
        _sampling_checks(plain, slm)


def _sampling_checks(plain, inner):
    assert post(plain, {"model": "slm", "messages": QUESTION, "user": "u-1", "frequency_penalty": 0}).status_code == 200
    assert post(plain, {"model": "slm", "messages": QUESTION, "temperature": 0.3, "top_p": 0.9,
                        "seed": 7}).status_code == 200
    assert post(plain, {"model": "shepherd", "messages": QUESTION, "shepherd": {"hint_tokens": 0}}).status_code == 200
    (unset, sent, shepherd) = [(r.temperature, r.top_p, r.seed) for r in inner.calls][-3:]
    assert unset == (1.0, 1.0, None)
    assert sent == (0.3, 0.9, 7)
    assert shepherd == (0.0, 1.0, 0)
