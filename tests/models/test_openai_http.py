"""OpenAICompatibleBackend against a real OpenAI-compatible server (llama-cpp-python serving the real 0.5B
GGUF on loopback). Faults a real server will not produce on demand (503s, 500s, silence, a stream cut in
the middle) come from tiny loopback servers defined here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shepherd.models.base import BackendError, BackendTimeout, GenerationRequest, PrefixNotSupported
from shepherd.models.openai_http import OpenAICompatibleBackend, _HintStripper, strip_repeated_hint

COUNT = [{"role": "user", "content": "Count from 1 to 20 separated by commas"}]
COUNT_HINT = "1, 2, 3, 4, 5,"
CHAT_OK = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}


def run(coro):
    return asyncio.run(coro)


def closed_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------------
# tiny loopback servers for faults
# ---------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def http_server(respond):
    """A threaded HTTP server; `respond(handler, hit_number, body)` writes each answer."""
    hits: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            hits.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            respond(self, len(hits), body)

        do_GET = do_POST

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", hits
    finally:
        server.shutdown()
        server.server_close()


def send_json(handler, status, payload, headers=()):
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    for k, v in headers:
        handler.send_header(k, v)
    handler.end_headers()
    handler.wfile.write(data)


def sse_events(pieces, finish="stop", usage=None):
    events = [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    if finish:
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    if usage:
        events.append({"choices": [], "usage": usage})
    return [f"data: {json.dumps(e)}\n\n".encode() for e in events]


@contextlib.contextmanager
def silent_server():
    """Accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    conns = []
    stop = threading.Event()

    def accept():
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        stop.set()
        thread.join(2)
        for c in conns:
            c.close()
        sock.close()


def fake_backend(url, **kw):
    kw.setdefault("prefix_route", "continue_final_message")
    kw.setdefault("backoff_s", 0.01)
    return OpenAICompatibleBackend(url, "m", **kw)


# ---------------------------------------------------------------------------------------------------
# fast: configuration and pure helpers
# ---------------------------------------------------------------------------------------------------
def test_completions_route_needs_a_template():
    with pytest.raises(BackendError, match="chat_template"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", prefix_route="completions")
    with pytest.raises(ValueError, match="prefix_route"):
        OpenAICompatibleBackend("http://127.0.0.1:1/v1", "m", prefix_route="prefill")


def test_api_key_from_env(monkeypatch):
    monkeypatch.delenv("SHEPHERD_TEST_KEY", raising=False)
    with pytest.raises(BackendError, match="SHEPHERD_TEST_KEY"):
        fake_backend("http://127.0.0.1:1/v1", api_key_env="SHEPHERD_TEST_KEY")
    monkeypatch.setenv("SHEPHERD_TEST_KEY", "sk-test")
    with http_server(lambda h, i, b: send_json(h, 200, CHAT_OK)) as (url, hits):
        backend = fake_backend(url, api_key_env="SHEPHERD_TEST_KEY", model_id="priced-id")
        (gen,) = backend.generate(GenerationRequest.create("hi", max_tokens=3, seed=7, stop=["\n"]))
    assert hits[0]["headers"]["Authorization"] == "Bearer sk-test"
    sent = hits[0]["body"]
    assert sent["model"] == "m" and sent["max_tokens"] == 3 and sent["seed"] == 7 and sent["stop"] == ["\n"]
    assert sent["temperature"] == 0.0 and "top_p" not in sent  # greedy
    assert (gen.text, gen.prompt_tokens, gen.completion_tokens, gen.model) == ("ok", 5, 1, "priced-id")


def test_request_bodies_of_the_prefix_routes():
    completion = {"choices": [{"index": 0, "text": " 6, 7", "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 30, "completion_tokens": 4}}
    def respond(handler, hit, body):
        send_json(handler, 200, completion if "prompt" in body else CHAT_OK)

    with http_server(respond) as (url, hits):
        request = GenerationRequest.create(COUNT, prefix=COUNT_HINT, temperature=0.7, top_p=0.9, seed=3)
        comp = fake_backend(url, prefix_route="completions", chat_template="chatml")
        gens = comp.generate(request, n=2)
        vllm = fake_backend(url, prefix_route="continue_final_message")
        vllm.generate(request)
    assert [g.text for g in gens] == [" 6, 7", " 6, 7"] and gens[0].finish_reason == "length"
    first, second, chat = (h["body"] for h in hits)
    assert hits[0]["path"] == "/v1/completions" and hits[2]["path"] == "/v1/chat/completions"
    assert first["prompt"].endswith("<|im_start|>assistant\n" + COUNT_HINT)
    assert "<|im_end|>" in first["stop"]
    assert first["max_tokens"] is None  # explicit null: the legacy default would cut at 16 tokens
    assert (first["temperature"], first["top_p"]) == (0.7, 0.9)
    assert sorted([first["seed"], second["seed"]]) == [3, 4]  # n samples: seed, seed+1
    assert chat["messages"][-1] == {"role": "assistant", "content": COUNT_HINT}
    assert chat["continue_final_message"] is True and chat["add_generation_prompt"] is False


def test_none_route_refuses_a_prefix_without_calling_the_server():
    backend = fake_backend(f"http://127.0.0.1:{closed_port()}/v1", prefix_route="none", max_retries=0)
    request = GenerationRequest.create(COUNT, prefix=COUNT_HINT, max_tokens=4)
    with pytest.raises(PrefixNotSupported):
        backend.generate(request)

    async def stream():
        async for _ in backend.astream(request):
            pass

    with pytest.raises(PrefixNotSupported):
        run(stream())
    assert backend.supports_prefix is False


@pytest.mark.parametrize("text, expected", [
    ("1, 2, 3, 4, 5, 6, 7", " 6, 7"),          # repeated hint is cut
    ("1,2,3,4,5,6", "6"),                      # whitespace differences are ignored
    ("6, 7, 8", "6, 7, 8"),                    # the model continued directly
    ("Sure! 1, 2, 3", "Sure! 1, 2, 3"),        # anything else is kept whole
    ("1, 2, 3", ""),                           # stopped while still repeating: nothing new
])
def test_strip_repeated_hint(text, expected):
    assert strip_repeated_hint(text, "1, 2, 3, 4, 5,") == expected


def test_hint_stripper_streams_nothing_of_the_hint():
    s = _HintStripper("1, 2, 3,")
    out = [s.feed(p) for p in ["1", ",", " 2", ", 3", ",", " 4", ","]] + [s.finish()]
    assert out == ["", "", "", "", "", " 4", ",", ""]
    s = _HintStripper("1, 2, 3,")
    assert [s.feed(p) for p in ["1", "0", " apples"]] == ["", "10", " apples"]


# ---------------------------------------------------------------------------------------------------
# fast: faults from loopback servers
# ---------------------------------------------------------------------------------------------------
def test_unreachable_server_names_the_url_quickly():
    url = f"http://127.0.0.1:{closed_port()}/v1"
    backend = fake_backend(url, max_retries=2)
    with pytest.raises(BackendError, match=f"cannot reach {url}/chat/completions.*3 attempts"):
        backend.generate(GenerationRequest.create("hi", max_tokens=4))
    assert backend.retry_count == 2


def test_silent_server_times_out():
    with silent_server() as url:
        backend = fake_backend(url, timeout_s=0.3, max_retries=3)
        with pytest.raises(BackendTimeout, match="0.3 s"):
            backend.generate(GenerationRequest.create("hi", max_tokens=4))
        assert backend.retry_count == 0  # a timed-out generation is not silently repeated


def test_retries_503_then_succeeds():
    def respond(handler, hit, body):
        if hit <= 2:
            send_json(handler, 503, {"error": {"message": "loading model"}})
        else:
            send_json(handler, 200, CHAT_OK)

    with http_server(respond) as (url, hits):
        backend = fake_backend(url, max_retries=3)
        (gen,) = backend.generate(GenerationRequest.create("hi", max_tokens=4))
    assert gen.text == "ok" and gen.finish_reason == "stop"
    assert len(hits) == 3 and backend.retry_count == 2


def test_gives_up_after_max_retries_on_500():
    with http_server(lambda h, i, b: send_json(h, 500, {"error": {"message": "kaboom"}})) as (url, hits):
        backend = fake_backend(url, max_retries=2)
        with pytest.raises(BackendError, match=r"HTTP 500: kaboom \(gave up after 3 attempts\)"):
            backend.generate(GenerationRequest.create("hi", max_tokens=4))
    assert len(hits) == 3 and backend.retry_count == 2


def test_client_error_is_not_retried_and_keeps_the_servers_message():
    def respond(handler, hit, body):
        send_json(handler, 400, {"detail": "model 'm' does not exist"})

    with http_server(respond) as (url, hits):
        backend = fake_backend(url, max_retries=5)
        with pytest.raises(BackendError, match="HTTP 400: model 'm' does not exist"):
            backend.generate(GenerationRequest.create("hi", max_tokens=4))
    assert len(hits) == 1


def test_429_honours_retry_after(caplog):
    def respond(handler, hit, body):
        if hit == 1:
            send_json(handler, 429, {"error": {"message": "slow down"}}, headers=[("Retry-After", "0.4")])
        else:
            send_json(handler, 200, CHAT_OK)

    with http_server(respond) as (url, hits):
        backend = fake_backend(url, max_retries=1, backoff_s=0.0)
        with caplog.at_level(logging.INFO, logger="shepherd.models.openai_http"):
            backend.generate(GenerationRequest.create("hi", max_tokens=4))
    assert len(hits) == 2
    assert any("retry 1/1 in 0.40 s" in r.getMessage() for r in caplog.records)  # the server's Retry-After


def test_stream_with_usage_and_a_server_refusing_stream_options():
    def respond(handler, hit, body):
        if "stream_options" in body:
            send_json(handler, 400, {"error": {"message": "unknown field stream_options"}})
            return
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("connection", "close")
        handler.end_headers()
        handler.wfile.write(b": ping\n\n")
        for event in sse_events(["Hel", "lo"], usage={"prompt_tokens": 9, "completion_tokens": 2}):
            handler.wfile.write(event)
        handler.wfile.write(b"data: [DONE]\n\n")
        handler.close_connection = True

    async def collect(backend):
        return [c async for c in backend.astream(GenerationRequest.create("hi"))]

    with http_server(respond) as (url, hits):
        backend = fake_backend(url)
        chunks = run(collect(backend))
        assert [c.text for c in chunks] == ["Hel", "lo", ""]
        gen = chunks[-1].generation
        assert (gen.text, gen.prompt_tokens, gen.completion_tokens) == ("Hello", 9, 2)
        assert gen.finish_reason == "stop"
        run(collect(backend))  # remembers that this server refuses stream_options
    assert ["stream_options" in h["body"] for h in hits] == [True, False, False]


@pytest.mark.parametrize("cut", ["chunked_body_cut", "closed_without_finish"])
def test_server_dying_mid_stream_raises(cut):
    def respond(handler, hit, body):
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        if cut == "chunked_body_cut":
            handler.send_header("transfer-encoding", "chunked")
        handler.send_header("connection", "close")
        handler.end_headers()
        for event in sse_events(["one", " two"], finish=None):
            if cut == "chunked_body_cut":
                handler.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            else:
                handler.wfile.write(event)
        handler.wfile.flush()
        handler.close_connection = True  # dies: no finish_reason, no [DONE], no final chunk

    got = []

    async def consume(backend):
        async for chunk in backend.astream(GenerationRequest.create("hi")):
            got.append(chunk.text)

    with http_server(respond) as (url, _hits):
        backend = fake_backend(url)
        with pytest.raises(BackendError):
            run(consume(backend))
    assert got == ["one", " two"] and not backend._active_streams


def test_count_tokens_falls_back_to_an_estimate_with_one_warning(caplog):
    with http_server(lambda h, i, b: send_json(h, 404, {"detail": "Not Found"})) as (url, hits):
        backend = fake_backend(url)
        with caplog.at_level(logging.WARNING, logger="shepherd.models.openai_http"):
            assert backend.count_tokens("abcdefghij") == 3
            assert backend.count_tokens("abcd") == 1
        assert backend._tokenize_route == "estimate"
        probes = len(hits)
        backend.count_tokens("more text")
        assert len(hits) == probes  # the answer is cached: no more probing
    assert sum("estimated" in r.getMessage() for r in caplog.records) == 1


# ---------------------------------------------------------------------------------------------------
# slow: a real OpenAI-compatible server (llama-cpp-python) serving the real 0.5B model
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def completions_backend(llama_server, slm_path):
    """Chat template rendered here from the GGUF, raw /v1/completions: a real continuation route."""
    backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", model_id="qwen-0.5b-test",
                                      prefix_route="completions", template_gguf=slm_path, timeout_s=120)
    yield backend
    run(backend.aclose())


@pytest.fixture(scope="module")
def chat_backend(llama_server):
    """/v1/chat/completions with vLLM's continue_final_message, which this server ignores."""
    backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", prefix_route="continue_final_message",
                                      timeout_s=120)
    yield backend
    run(backend.aclose())


@pytest.mark.slow
def test_plain_answer_with_usage(chat_backend):
    (gen,) = chat_backend.generate(GenerationRequest.create("What is 2 + 3? Answer with a number only.",
                                                            max_tokens=8))
    assert "5" in gen.text
    assert gen.prompt_tokens > 10 and 0 < gen.completion_tokens <= 8
    assert gen.finish_reason in ("stop", "length") and gen.latency_s > 0 and gen.model == "qwen-0.5b"


@pytest.mark.slow
@pytest.mark.parametrize("route", ["completions", "chat"])
def test_max_tokens_is_exact(route, completions_backend, chat_backend):
    backend = completions_backend if route == "completions" else chat_backend
    (gen,) = backend.generate(GenerationRequest.create("Count from 1 to 100 separated by commas",
                                                       max_tokens=7))
    assert gen.completion_tokens == 7 and gen.finish_reason == "length"
    assert backend.count_tokens(gen.text) == 7


@pytest.mark.slow
def test_completions_route_without_max_tokens_is_not_cut_at_16(completions_backend):
    # the legacy completions API stops at 16 tokens unless told otherwise
    (gen,) = completions_backend.generate(GenerationRequest.create("Count from 1 to 12 separated by commas"))
    assert gen.finish_reason == "stop" and gen.completion_tokens > 16
    assert gen.text.startswith("1, 2, 3") and "<|im_end|>" not in gen.text


@pytest.mark.slow
def test_prefix_continues_on_completions_route_but_not_on_plain_chat(completions_backend, chat_backend):
    request = GenerationRequest.create(COUNT, prefix=COUNT_HINT, max_tokens=8)
    (cont,) = completions_backend.generate(request)
    assert cont.text.lstrip().startswith("6"), cont.text
    assert not cont.text.lstrip().startswith("1")
    # this server ignores continue_final_message: its chat route answers afresh (see MODELS.md), which is
    # how a test tells a real continuation route from one that only looks like one
    (fresh,) = chat_backend.generate(request)
    assert fresh.text.lstrip().startswith("1"), fresh.text


@pytest.mark.slow
def test_user_hint_route_returns_only_the_continuation(llama_server):
    backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", prefix_route="user_hint", timeout_s=120)
    hint = "Janet starts with 3 apples. After buying 5 more she has"
    request = GenerationRequest.create(
        "Janet has 3 apples and buys 5 more, then eats 2. How many apples does she have?",
        prefix=hint, max_tokens=6)
    try:
        (gen,) = backend.generate(request)
    finally:
        run(backend.aclose())
    assert backend.supports_prefix is False and backend.hint_mode == "user_prompt"
    assert OpenAICompatibleBackend(llama_server, "m", prefix_route="continue_final_message").hint_mode == "prefix"
    assert "Janet starts" not in gen.text
    assert gen.text.lstrip().startswith("8"), gen.text


@pytest.mark.slow
def test_streaming_matches_the_generation(completions_backend):
    request = GenerationRequest.create(COUNT, prefix=COUNT_HINT, max_tokens=10)

    async def collect():
        return [c async for c in completions_backend.astream(request)]

    chunks = run(collect())
    pieces, final = chunks[:-1], chunks[-1]
    assert len(pieces) >= 3 and all(c.generation is None and c.text for c in pieces)
    gen = final.generation
    assert final.text == "" and gen is not None
    assert "".join(c.text for c in pieces) == gen.text
    # this server sends no usage when streaming: the backend counts with the server's tokenizer
    (whole,) = completions_backend.generate(request)
    assert gen.text == whole.text
    assert (gen.completion_tokens, gen.prompt_tokens) == (whole.completion_tokens, whole.prompt_tokens)
    assert gen.finish_reason == "length"


@pytest.mark.slow
def test_closing_or_cancelling_a_stream_closes_the_response(completions_backend):
    request = GenerationRequest.create("Count from 1 to 100 separated by commas", max_tokens=32)

    async def close_early():
        async with contextlib.aclosing(completions_backend.astream(request)) as stream:
            async for chunk in stream:
                assert chunk.text
                assert len(completions_backend._active_streams) == 1
                break
        assert not completions_backend._active_streams

    async def cancel_task():
        started = asyncio.Event()

        async def consume():
            async for _ in completions_backend.astream(request):
                started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 60)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not completions_backend._active_streams

    run(close_early())
    run(cancel_task())
    (gen,) = completions_backend.generate(GenerationRequest.create("Say hi", max_tokens=3))
    assert gen.completion_tokens >= 1  # the server and the backend's slots are free again


@pytest.mark.slow
def test_tiny_timeout_against_the_real_server(llama_server):
    backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", prefix_route="continue_final_message",
                                      timeout_s=0.001)
    with pytest.raises(BackendTimeout):
        backend.generate(GenerationRequest.create("Count from 1 to 100 separated by commas", max_tokens=32))


@pytest.mark.slow
def test_count_tokens_matches_the_local_llama_tokenizer(completions_backend, slm_path):
    from llama_cpp import Llama

    text = "Natalia sold clips to 48 of her friends in April, and then half as many in May. Ünïcödé ✓"
    vocab = Llama(model_path=str(slm_path), vocab_only=True, verbose=False)
    expected = len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=False))
    assert completions_backend.count_tokens(text) == expected
    assert completions_backend._tokenize_route == "llama-cpp-python"
    assert completions_backend.count_tokens("") == 0


@pytest.mark.slow
def test_samples_are_seeded_and_logprobs_reported(llama_server, slm_path):
    backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", prefix_route="completions",
                                      template_gguf=slm_path, want_logprobs=True, max_concurrency=2)
    request = GenerationRequest.create("Name a fruit.", temperature=1.0, seed=11, max_tokens=6)

    async def twice():
        return await backend.agenerate(request, n=2), await backend.agenerate(request, n=2)

    try:
        first, again = run(twice())
    finally:
        run(backend.aclose())
    assert [g.text for g in first] == [g.text for g in again]  # seed, seed+1 reproduce
    assert all(g.mean_logprob is not None and g.mean_logprob <= 0 for g in first)


@pytest.mark.parametrize("message", ["This model's maximum context length is 4096 tokens. However, you requested 5000",
                                     "Requested tokens (600) exceed context window of 512"])
def test_a_prompt_too_long_for_the_server_is_the_requests_fault(message):
    from shepherd.models.base import PromptTooLong

    def respond(handler, hit, body):
        send_json(handler, 400, {"error": {"message": message, "code": "context_length_exceeded"}})

    with http_server(respond) as (url, hits):
        backend = fake_backend(url, max_retries=5)
        with pytest.raises(PromptTooLong, match="HTTP 400"):
            backend.generate(GenerationRequest.create("hi " * 50, max_tokens=4))
    assert len(hits) == 1


@pytest.mark.slow
def test_token_logprobs_over_http_match_the_in_process_runtime(llama_server, slm_path, slm_backend):
    """The chat and completions routes ask for each token's log-probability and its top alternatives. The
    completions route renders the prompt as the in-process backend does, so the in-process model scoring the
    server's answer gives the server's numbers (up to kernel rounding), and the top-k entropy is a lower
    bound of the exact one."""
    req = GenerationRequest.create("Natalia sold clips to 48 of her friends in April, and half as many in May. "
                                   "How many clips in all?", max_tokens=24)
    for route in ("completions", "continue_final_message"):
        backend = OpenAICompatibleBackend(llama_server, "qwen-0.5b", prefix_route=route, template_gguf=slm_path,
                                          want_logprobs=True)

        async def both(backend=backend):
            (whole,) = await backend.agenerate(req)
            streamed = None
            async for chunk in backend.astream(req):
                streamed = chunk.generation or streamed
            await backend.aclose()
            return whole, streamed

        whole, streamed = run(both())
        for gen in (whole, streamed):
            lp = gen.logprobs
            assert lp is not None and len(lp) == gen.completion_tokens and not lp.entropy_exact
            assert lp.ends[-1] == len(gen.text) and all(m >= 0 for m in lp.margins)
        if route == "completions":
            local = slm_backend.score(req, whole.text)
            assert local.ends == whole.logprobs.ends
            diffs = sorted(abs(a - b) for a, b in zip(whole.logprobs.logprobs, local.logprobs))
            assert diffs[len(diffs) // 2] < 0.01 and diffs[-1] < 0.3
            assert all(k <= x + 0.05 for k, x in zip(whole.logprobs.entropies, local.entropies))
