"""Models behind an OpenAI-compatible HTTP API: vLLM, llama.cpp servers, hosted APIs.

The hard part is continuing an assistant prefix (the hint), which the OpenAI chat API has no standard way
to do. Each server needs its own route, chosen with `prefix_route`:

- ``"completions"``: render the model's chat template here, append the prefix and POST the text to
  ``/v1/completions``. Works on any server with a raw completion endpoint (vLLM, llama.cpp,
  llama-cpp-python); requests without a prefix take the same route, so both see the same template.
- ``"continue_final_message"``: vLLM's chat extension: the prefix is sent as a final assistant message with
  ``continue_final_message: true, add_generation_prompt: false``. Servers that ignore those fields (e.g.
  llama-cpp-python) silently answer afresh instead of continuing.
- ``"user_hint"``: for APIs with no prefill at all: the hint is written into the user turn and the model is
  asked to begin with it; a repeated hint is cut from the returned text (also while streaming), and
  `max_tokens` is widened by the hint's length, which the model usually spends repeating it.
  `completion_tokens` stays what the server counted (and bills), repetition included. Not a true
  continuation, hence `supports_prefix = False`.
- ``"none"``: a prefix raises `PrefixNotSupported`.

Requests go one per sample (seeds ``seed, seed+1, ...``), bounded by `max_concurrency`, retried with
exponential backoff and jitter (or the server's Retry-After) on 429/5xx and connection errors, never more
than `max_retries` times. Other 4xx fail at once with the server's message; a timeout raises
`BackendTimeout` and is not retried (the server may still be working on it).

Token counts come from the server's `usage`; where it sends none (e.g. llama-cpp-python when streaming),
`count_tokens` asks the server's tokenize endpoint, else a local GGUF tokenizer, else estimates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from .base import (
    Backend,
    BackendError,
    BackendTimeout,
    Generation,
    GenerationRequest,
    PrefixNotSupported,
    PromptTooLong,
    StreamChunk,
    TokenLogprobs,
    run_sync,
)
from .chat_template import BUILTIN_TEMPLATES, render_request

log = logging.getLogger(__name__)

PREFIX_ROUTES = ("completions", "continue_final_message", "user_hint", "none")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
#: how OpenAI, vLLM and llama.cpp servers word a prompt that does not fit the context window
_CONTEXT_LENGTH = re.compile(r"context[ _](length|window)|maximum context|too many tokens|prompt is too long", re.IGNORECASE)

#: end-of-turn markers of common chat templates; sent as stop strings on the completions route, so a
#: model whose EOS token differs from its end-of-turn token still stops at the end of its answer
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

USER_HINT_INSTRUCTION = "\n\nBegin your answer with exactly this text and continue it:\n{hint}"


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------
class _HintStripper:
    """Cut a hint that a model repeats at the start of its answer (whitespace differences ignored).

    Fed text incrementally, it holds output back while that output could still be the hint, so a stream
    never shows the repeated hint either.
    """

    def __init__(self, hint: str) -> None:
        self.hint = hint
        self.buffer = ""
        self.decided = not hint.strip()

    def _match(self) -> tuple[str, int]:
        text, hint = self.buffer, self.hint
        i = j = 0
        while j < len(hint):
            if hint[j].isspace():
                j += 1
                continue
            while i < len(text) and text[i].isspace():
                i += 1
            if i >= len(text):
                return "partial", i
            if text[i] != hint[j]:
                return "differ", 0
            i += 1
            j += 1
        return "match", i

    def feed(self, piece: str) -> str:
        """The part of the output that can be shown now."""
        if self.decided:
            return piece
        self.buffer += piece
        state, end = self._match()
        if state == "partial":
            return ""
        self.decided = True
        out = self.buffer[end:] if state == "match" else self.buffer
        self.buffer = ""
        return out

    def finish(self) -> str:
        """At the end of the output: what is still held back. An output that stopped while still repeating
        the hint added nothing to it, so nothing is released."""
        self.decided = True
        self.buffer = ""
        return ""


def strip_repeated_hint(text: str, hint: str) -> str:
    """`text` without a leading copy of `hint` (whitespace-insensitive); unchanged if it does not repeat
    it."""
    s = _HintStripper(hint)
    return s.feed(text) + s.finish()


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(response: httpx.Response) -> str:
    """The server's own explanation, from the OpenAI error shape, FastAPI's `detail`, or the raw body."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:1000]
        if isinstance(err, str):
            return err[:1000]
        if body.get("detail") is not None:
            return str(body["detail"])[:1000]
        if body.get("message"):
            return str(body["message"])[:1000]
    text = response.text.strip()
    return text[:1000] or response.reason_phrase


def _finish_reason(value: Any) -> str:
    if value in (None, "stop", "eos", "end_turn", "stop_sequence"):
        return "stop"
    if value in ("length", "max_tokens"):
        return "length"
    return str(value)


#: alternatives asked for per position when log-probabilities are on: enough for entropy and margin
TOP_LOGPROBS = 5

_TokenEntry = tuple[str, float, list[float]]


def _logprobs_of(choice: dict) -> list[_TokenEntry]:
    """(token text, log-probability, top alternatives' log-probabilities) of each token of a choice, from the
    completions shape or the chat shape."""
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return []
    out: list[_TokenEntry] = []
    if isinstance(lp.get("token_logprobs"), list):  # /v1/completions
        tokens = lp.get("tokens") if isinstance(lp.get("tokens"), list) else []
        tops = lp.get("top_logprobs") if isinstance(lp.get("top_logprobs"), list) else []
        for i, x in enumerate(lp["token_logprobs"]):
            if x is None:
                continue
            top = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            out.append((str(tokens[i]) if i < len(tokens) else "", float(x),
                        [float(v) for v in top.values() if v is not None]))
    elif isinstance(lp.get("content"), list):  # /v1/chat/completions
        for t in lp["content"]:
            if isinstance(t, dict) and t.get("logprob") is not None:
                top = [float(a["logprob"]) for a in t.get("top_logprobs") or []
                       if isinstance(a, dict) and a.get("logprob") is not None]
                out.append((str(t.get("token") or ""), float(t["logprob"]), top))
    return out


def _token_logprobs(entries: list[_TokenEntry], text: str) -> TokenLogprobs | None:
    """The API's per-token entries as a `TokenLogprobs`; token ends are the running length of their texts."""
    if not entries:
        return None
    ends, pos = [], 0
    for token, _, _ in entries:
        pos += len(token)
        ends.append(min(pos, len(text)))
    return TokenLogprobs.from_top([e[1] for e in entries], [e[2] for e in entries], ends)


def _read_gguf_template(path: Path) -> tuple[str, dict[str, str], bool]:
    """Chat template, BOS/EOS token texts and whether the tokenizer adds BOS itself, from a GGUF's metadata
    (read with llama-cpp-python or the `gguf` package)."""
    if not path.is_file():
        raise BackendError(f"template_gguf not found: {path}")
    try:
        from llama_cpp import Llama
    except ImportError:
        Llama = None
    if Llama is not None:
        vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
        try:
            meta = getattr(vocab, "metadata", {}) or {}
            tokens = {}
            for key, fn in (("bos_token", "token_bos"), ("eos_token", "token_eos")):
                try:
                    tid = getattr(vocab, fn)()
                    text = vocab.detokenize([tid], special=True) if tid >= 0 else b""
                    tokens[key] = text.decode("utf-8", "ignore")
                except Exception:  # noqa: BLE001 - some vocabularies lack one of them
                    tokens[key] = ""
        finally:
            close = getattr(vocab, "close", None)
            if close:
                close()
        template = meta.get("tokenizer.chat_template")
        add_bos = str(meta.get("tokenizer.ggml.add_bos_token", "true")).lower() != "false"
    else:
        try:
            from gguf import GGUFReader
        except ImportError as exc:
            raise BackendError("reading a chat template from a GGUF needs llama-cpp-python or the `gguf` "
                               "package (pip install gguf); or pass chat_template= instead") from exc
        reader = GGUFReader(str(path))

        def field(name):
            f = reader.fields.get(name)
            return None if f is None else f.contents()

        template = field("tokenizer.chat_template")
        vocab_tokens = field("tokenizer.ggml.tokens") or []
        tokens = {}
        for key, meta_key in (("bos_token", "tokenizer.ggml.bos_token_id"),
                              ("eos_token", "tokenizer.ggml.eos_token_id")):
            tid = field(meta_key)
            tokens[key] = vocab_tokens[tid] if isinstance(tid, int) and 0 <= tid < len(vocab_tokens) else ""
        add_bos = field("tokenizer.ggml.add_bos_token") is not False
    if not template:
        raise BackendError(f"{path} holds no tokenizer.chat_template; pass chat_template= (e.g. 'chatml')")
    return template, tokens, add_bos


# ---------------------------------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------------------------------
class OpenAICompatibleBackend(Backend):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        model_id: str | None = None,
        prefix_route: str = "completions",
        chat_template: str | None = None,
        template_gguf: str | Path | None = None,
        tokenizer_gguf: str | Path | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_concurrency: int = 4,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 20.0,
        max_retry_after_s: float = 60.0,
        want_logprobs: bool = False,
        default_max_tokens: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        if prefix_route not in PREFIX_ROUTES:
            raise ValueError(f"prefix_route must be one of {', '.join(PREFIX_ROUTES)}; got {prefix_route!r}")
        if not base_url:
            raise ValueError("base_url is empty")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        # the server root, for the non-/v1 endpoints (tokenize)
        self.root_url = self.base_url.removesuffix("/v1")
        self.model = model
        self.model_id = model_id or model
        self.prefix_route = prefix_route
        self.supports_prefix = prefix_route in ("completions", "continue_final_message")
        self.hint_mode = {"user_hint": "user_prompt", "none": None}.get(prefix_route, "prefix")
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise BackendError(f"environment variable {api_key_env} (the API key for {self.base_url}) "
                                   "is not set")
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.timeout_s = float(timeout_s)
        self._timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, connect_timeout_s))
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.want_logprobs = want_logprobs
        self.default_max_tokens = default_max_tokens
        self.extra_body = dict(extra_body or {})

        self._template_source = chat_template
        self._template_gguf = Path(template_gguf).expanduser() if template_gguf else None
        if prefix_route == "completions" and not (chat_template or template_gguf):
            raise BackendError("prefix_route='completions' renders the chat template locally: pass "
                               "chat_template (jinja source or 'chatml') or template_gguf (a GGUF holding "
                               "it)")
        self._template: tuple[str, dict[str, str], bool] | None = None
        self._tokenizer_gguf = Path(tokenizer_gguf).expanduser() if tokenizer_gguf else self._template_gguf

        # one async client (and concurrency bound) per event loop: an httpx.AsyncClient cannot cross loops
        self._clients: dict[int, tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, asyncio.Semaphore]] = {}
        self._sync_client: httpx.Client | None = None
        self._lock = threading.Lock()
        # "llama-cpp-python" | "vllm" | "llama.cpp" (server endpoints) | "local" | "estimate"
        self._tokenize_route: str | None = None
        self._tokenize_offset = 0  # special tokens the server adds to any text (llama-cpp-python: BOS)
        self._local_vocab = None
        self._local_failed = False
        self._warned_estimate = False
        self._stream_usage = True  # send stream_options.include_usage until a server refuses it
        self._active_streams: set[httpx.Response] = set()
        #: requests retried so far (all calls); handy for tests and logs
        self.retry_count = 0

    # -- clients -----------------------------------------------------------------------------------
    def _aclient(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        """The client of the running loop (`generate()` from sync code runs each call in a fresh loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for key, (other, _client, _sem) in list(self._clients.items()):
                if other.is_closed():  # its loop is gone; its sockets go with the garbage
                    del self._clients[key]
            entry = self._clients.get(id(loop))
            if entry is None or entry[0] is not loop or entry[1].is_closed:
                limits = httpx.Limits(max_connections=self.max_concurrency,
                                      max_keepalive_connections=self.max_concurrency)
                client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers, limits=limits)
                entry = (loop, client, asyncio.Semaphore(self.max_concurrency))
                self._clients[id(loop)] = entry
        return entry[1], entry[2]

    async def _close_loop_client(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.get(id(loop))
            if entry is not None and entry[0] is loop:
                del self._clients[id(loop)]
            else:
                entry = None
        if entry is not None:
            await entry[1].aclose()

    def generate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        async def once():
            try:
                return await self.agenerate(request, n=n)
            finally:
                await self._close_loop_client()

        return run_sync(once())

    def _sclient(self) -> httpx.Client:
        with self._lock:
            if self._sync_client is None or self._sync_client.is_closed:
                self._sync_client = httpx.Client(timeout=self._timeout, headers=self._headers)
            return self._sync_client

    async def aclose(self) -> None:
        for resp in list(self._active_streams):
            await resp.aclose()
        self._active_streams.clear()
        await self._close_loop_client()
        self._clients.clear()  # clients of other loops cannot be closed from this one
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None
        self._local_vocab = None

    # -- chat template (completions route) ----------------------------------------------------------
    def _template_and_tokens(self) -> tuple[str, dict[str, str], bool]:
        if self._template is None:
            with self._lock:
                if self._template is None:
                    if self._template_source:
                        source = BUILTIN_TEMPLATES.get(self._template_source, self._template_source)
                        self._template = (source, {"bos_token": "", "eos_token": ""}, True)
                    else:
                        assert self._template_gguf is not None
                        self._template = _read_gguf_template(self._template_gguf)
        return self._template

    def render(self, request: GenerationRequest) -> str:
        """The prompt the completions route sends: template, open assistant turn, prefix."""
        template, tokens, add_bos = self._template_and_tokens()
        prompt = render_request(template, request, **tokens)
        bos = tokens.get("bos_token")
        if add_bos and bos and prompt.startswith(bos):
            prompt = prompt[len(bos):]  # the server adds BOS itself when tokenizing a completion prompt
        return prompt

    def _stop_strings(self, request: GenerationRequest) -> list[str]:
        stops = list(request.stop)
        if self.prefix_route == "completions":
            template, tokens, _ = self._template_and_tokens()
            markers = [m for m in _END_OF_TURN if m in template]
            if tokens.get("eos_token"):
                markers.append(tokens["eos_token"])
            for m in markers:
                if m not in stops:
                    stops.append(m)
        return stops

    # -- request bodies ---------------------------------------------------------------------------------
    def _check_prefix(self, request: GenerationRequest) -> None:
        if request.prefix and self.prefix_route == "none":
            raise PrefixNotSupported(f"{self.model_id} at {self.base_url}: prefix_route='none' cannot "
                                     "continue an assistant prefix; use 'completions', "
                                     "'continue_final_message' or 'user_hint'")

    def _body(self, request: GenerationRequest, seed: int | None, *, stream: bool,
              hint_tokens: int = 0) -> tuple[str, dict]:
        """(path, JSON body) of one sample's request; `hint_tokens` widens max_tokens on the user_hint
        route, where the model usually spends that many tokens repeating the hint."""
        route = self.prefix_route
        self._check_prefix(request)
        body: dict[str, Any] = {"model": self.model}
        if route == "completions":
            path = "/completions"
            body["prompt"] = self.render(request)
        else:
            path = "/chat/completions"
            messages = request.message_dicts
            if request.prefix and route == "continue_final_message":
                messages = messages + [{"role": "assistant", "content": request.prefix}]
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            elif request.prefix and route == "user_hint":
                messages = [dict(m) for m in messages]
                last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
                messages[last_user]["content"] += USER_HINT_INSTRUCTION.format(hint=request.prefix)
            body["messages"] = messages
        max_tokens = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        if max_tokens is not None:
            body["max_tokens"] = max_tokens + hint_tokens
        elif route == "completions":
            # the legacy completions API defaults to 16 tokens; an explicit null means "until done"
            # on vLLM and llama.cpp servers
            body["max_tokens"] = None
        body["temperature"] = 0.0 if request.greedy else request.temperature
        if not request.greedy:
            body["top_p"] = request.top_p
        if seed is not None:
            body["seed"] = seed
        stops = self._stop_strings(request)
        if stops:
            body["stop"] = stops
        if self.want_logprobs:
            if route == "completions":
                body["logprobs"] = TOP_LOGPROBS
            else:
                body["logprobs"], body["top_logprobs"] = True, TOP_LOGPROBS
        if stream:
            body["stream"] = True
            if self._stream_usage:
                body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return path, body

    # -- transport with retries ----------------------------------------------------------------------
    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        if response is not None:
            after = _retry_after_seconds(response.headers.get("retry-after"))
            if after is not None:
                if after > self.max_retry_after_s:
                    raise BackendError(f"{self.base_url}: HTTP {response.status_code}, server asks to retry "
                                       f"after {after:.0f} s (more than max_retry_after_s="
                                       f"{self.max_retry_after_s:g}): {_error_message(response)}")
                return after
        cap = min(self.max_backoff_s, self.backoff_s * (2 ** attempt))
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter"

    async def _send(self, path: str, body: dict, *, stream: bool) -> tuple[httpx.Response, asyncio.Semaphore]:
        """POST with retries. Returns an open response with a 2xx status (caller closes it) and holds one
        concurrency slot, which the caller releases."""
        client, sem = self._aclient()
        url = self.base_url + path
        attempt = 0
        refused_stream_options = False
        while True:
            await sem.acquire()
            response: httpx.Response | None = None
            failure: str
            try:
                req = client.build_request("POST", url, json=body)
                response = await client.send(req, stream=True)
                if response.status_code < 300:
                    return response, sem
                await response.aread()
                await response.aclose()
                message = _error_message(response)
                status = response.status_code
                if (stream and status in (400, 422) and "stream_options" in body
                        and not refused_stream_options and "stream_options" in message):
                    # a strict server that rejects stream_options: go on without it
                    self._stream_usage = False
                    refused_stream_options = True
                    body = {k: v for k, v in body.items() if k != "stream_options"}
                    sem.release()
                    continue
                if status not in RETRY_STATUS:
                    if status in (400, 413, 422) and _CONTEXT_LENGTH.search(message):
                        raise PromptTooLong(f"{url}: HTTP {status}: {message}")
                    raise BackendError(f"{url}: HTTP {status}: {message}")
                failure = f"{url}: HTTP {status}: {message}"
            except httpx.TimeoutException as exc:
                if response is not None:
                    await response.aclose()
                sem.release()
                raise BackendTimeout(f"{url}: no answer within {self.timeout_s:g} s "
                                     f"({type(exc).__name__})") from exc
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if response is not None:
                    await response.aclose()
                failure = f"cannot reach {url}: {type(exc).__name__}: {exc}"
                response = None
            except BaseException:
                if response is not None:
                    await response.aclose()
                sem.release()
                raise
            sem.release()
            if attempt >= self.max_retries:
                tries = attempt + 1
                raise BackendError(f"{failure} (gave up after {tries} attempt{'s' if tries > 1 else ''})")
            delay = self._delay(attempt, response)
            attempt += 1
            self.retry_count += 1
            log.info("%s failed (%s); retry %d/%d in %.2f s", url, failure, attempt, self.max_retries, delay)
            await asyncio.sleep(delay)

    # -- generation ------------------------------------------------------------------------------------
    def _make_generation(self, request: GenerationRequest, text: str, finish: str, usage: dict | None,
                         logprobs: list[_TokenEntry], latency: float) -> Generation:
        if self.prefix_route == "user_hint" and request.prefix:
            text = strip_repeated_hint(text, request.prefix)
        usage = usage or {}
        tokens = _token_logprobs(logprobs, text)
        return Generation(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=finish,
            latency_s=latency,
            model=self.model_id,
            mean_logprob=tokens.mean if tokens is not None else None,
            logprobs=tokens,
        )

    async def _prepare(self, request: GenerationRequest) -> int:
        """Checks and slow one-time loads off the event loop; returns the user_hint route's extra tokens."""
        self._check_prefix(request)
        if self.prefix_route == "completions":
            await asyncio.to_thread(self._template_and_tokens)
        return await self._hint_tokens(request)

    async def _hint_tokens(self, request: GenerationRequest) -> int:
        if self.prefix_route == "user_hint" and request.prefix and request.max_tokens is not None:
            return await asyncio.to_thread(self.count_tokens, request.prefix)
        return 0

    async def _generate_one(self, request: GenerationRequest, seed: int | None,
                            hint_tokens: int) -> Generation:
        path, body = self._body(request, seed, stream=False, hint_tokens=hint_tokens)
        t0 = time.perf_counter()
        response, sem = await self._send(path, body, stream=False)
        try:
            await response.aread()
        except httpx.TimeoutException as exc:
            raise BackendTimeout(f"{response.url}: no answer within {self.timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise BackendError(f"{response.url}: connection lost while reading the answer: {exc}") from exc
        finally:
            await response.aclose()
            sem.release()
        latency = time.perf_counter() - t0
        try:
            data = response.json()
            choice = data["choices"][0]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(f"{response.url}: malformed answer: {response.text[:300]!r}") from exc
        if "text" in choice:
            text = choice.get("text") or ""
        else:
            text = (choice.get("message") or {}).get("content") or ""
        usage = data.get("usage") or None
        gen = self._make_generation(request, text, _finish_reason(choice.get("finish_reason")), usage,
                                    _logprobs_of(choice), latency)
        if not usage:
            gen.prompt_tokens = await asyncio.to_thread(self.count_prompt_tokens, request)
            gen.completion_tokens = await asyncio.to_thread(self.count_tokens, text)
        return gen

    def _empty(self, request: GenerationRequest) -> Generation:
        return Generation(text="", prompt_tokens=self.count_prompt_tokens(request), completion_tokens=0,
                          finish_reason="length", latency_s=0.0, model=self.model_id)

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        self._check_prefix(request)
        if n < 1:
            return []
        if request.max_tokens == 0:  # servers read 0 as "no limit"; nothing to ask for
            gen = await asyncio.to_thread(self._empty, request)
            return [gen] + [dataclasses.replace(gen) for _ in range(n - 1)]
        seeds = [None if request.seed is None else request.seed + i for i in range(n)]
        hint_tokens = await self._prepare(request)
        tasks = [asyncio.ensure_future(self._generate_one(request, s, hint_tokens)) for s in seeds]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Server-sent events; the last chunk carries the `Generation`. Closing the iterator (or cancelling
        its task) closes the HTTP response, which tells the server to stop."""
        self._check_prefix(request)
        if request.max_tokens == 0:
            gen = await asyncio.to_thread(self._empty, request)
            yield StreamChunk(text="", generation=gen)
            return
        hint_tokens = await self._prepare(request)
        path, body = self._body(request, request.seed, stream=True, hint_tokens=hint_tokens)
        t0 = time.perf_counter()
        response, sem = await self._send(path, body, stream=True)
        self._active_streams.add(response)
        stripper = _HintStripper(request.prefix if self.prefix_route == "user_hint" else "")
        raw: list[str] = []
        shown: list[str] = []
        logprobs: list[_TokenEntry] = []
        finish: str | None = None
        usage: dict | None = None
        done = False
        try:
            try:
                async for line in response.aiter_lines():
                    if not line or line.startswith(":") or not line.startswith("data:"):
                        continue  # blank separators, comments/pings, event names
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        event = json.loads(payload)
                    except ValueError as exc:
                        raise BackendError(f"{response.url}: malformed stream event: "
                                           f"{payload[:200]!r}") from exc
                    if isinstance(event, dict) and event.get("error"):
                        err = event["error"]
                        msg = err.get("message") if isinstance(err, dict) else err
                        raise BackendError(f"{response.url}: server error mid-stream: {msg}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        if "text" in choice:
                            piece = choice.get("text") or ""
                        else:
                            piece = (choice.get("delta") or {}).get("content") or ""
                        logprobs.extend(_logprobs_of(choice))
                        if choice.get("finish_reason"):
                            finish = _finish_reason(choice["finish_reason"])
                        if piece:
                            raw.append(piece)
                            out = stripper.feed(piece)
                            if out:
                                shown.append(out)
                                yield StreamChunk(text=out)
            except httpx.TimeoutException as exc:
                raise BackendTimeout(f"{response.url}: stream stalled for {self.timeout_s:g} s") from exc
            except httpx.HTTPError as exc:
                raise BackendError(f"{response.url}: stream broke after {len(raw)} pieces: "
                                   f"{type(exc).__name__}: {exc}") from exc
            if finish is None:
                why = "sent [DONE]" if done else "closed the connection"
                raise BackendError(f"{response.url}: the server {why} without finishing the generation "
                                   f"(after {len(raw)} pieces; a llama-cpp-python server interrupts a stream "
                                   "when another request arrives unless started with --interrupt_requests "
                                   "false)")
            tail = stripper.finish()
            if tail:
                shown.append(tail)
                yield StreamChunk(text=tail)
        finally:
            self._active_streams.discard(response)
            sem.release()
            await response.aclose()
        latency = time.perf_counter() - t0
        text = "".join(shown)
        tokens = _token_logprobs(logprobs, text)
        gen = Generation(text=text, prompt_tokens=0, completion_tokens=0, finish_reason=finish,
                         latency_s=latency, model=self.model_id,
                         mean_logprob=tokens.mean if tokens is not None else None, logprobs=tokens)
        if usage and usage.get("completion_tokens") is not None:
            gen.completion_tokens = int(usage["completion_tokens"])
        else:
            gen.completion_tokens = await asyncio.to_thread(self.count_tokens, "".join(raw))
        if usage and usage.get("prompt_tokens") is not None:
            gen.prompt_tokens = int(usage["prompt_tokens"])
        else:
            gen.prompt_tokens = await asyncio.to_thread(self.count_prompt_tokens, request)
        yield StreamChunk(text="", generation=gen)

    # -- counting ----------------------------------------------------------------------------------
    def _tokenize_probes(self, text: str) -> list[tuple[str, str, dict, str]]:
        """(name, url, body, response key) per known tokenize endpoint."""
        return [
            # llama-cpp-python server (llama_cpp/server/app.py): special=True, adds BOS where the vocab does
            ("llama-cpp-python", self.root_url + "/extras/tokenize", {"model": self.model, "input": text},
             "tokens"),
            # vLLM
            ("vllm", self.root_url + "/tokenize",
             {"model": self.model, "prompt": text, "add_special_tokens": False}, "tokens"),
            # llama.cpp's own llama-server
            ("llama.cpp", self.root_url + "/tokenize", {"content": text, "add_special": False}, "tokens"),
        ]

    def _server_count(self, name: str, text: str) -> int:
        probe = next(p for p in self._tokenize_probes(text) if p[0] == name)
        _, url, body, key = probe
        resp = self._sclient().post(url, json=body)
        resp.raise_for_status()
        tokens = resp.json()[key]
        if not isinstance(tokens, list):
            raise TypeError(f"unexpected tokenize answer from {url}")
        return len(tokens)

    def _find_tokenize_route(self) -> str | None:
        """Probe the server's tokenize endpoints once; None when the server cannot be reached now."""
        reached = False
        for name, _url, _body, _key in self._tokenize_probes(""):
            try:
                offset = self._server_count(name, "")
                counted = self._server_count(name, "a")  # a real answer for non-empty text, too
            except (httpx.ConnectError, httpx.TimeoutException):
                return None
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                reached = True
                continue
            if counted <= offset:  # another server's route that ignored these fields (llama.cpp's /tokenize
                reached = True     # answers vLLM's body with no tokens): not a tokenizer
                continue
            self._tokenize_offset = offset  # tokens added to any text, e.g. BOS
            return name
        if reached:
            return self._local_or_estimate()
        return None

    def _local_or_estimate(self) -> str:
        if self._local_vocab is not None:
            return "local"
        if self._tokenizer_gguf is not None and not self._local_failed:
            try:
                from llama_cpp import Llama

                self._local_vocab = Llama(model_path=str(self._tokenizer_gguf), vocab_only=True,
                                          verbose=False)
                return "local"
            except Exception as exc:  # noqa: BLE001 - missing runtime, unreadable file: estimate instead
                self._local_failed = True
                log.warning("cannot load the local tokenizer from %s: %s", self._tokenizer_gguf, exc)
        return "estimate"

    def _estimate(self, text: str) -> int:
        if not self._warned_estimate:
            self._warned_estimate = True
            log.warning("%s: no exact tokenizer (the server has no tokenize endpoint and no tokenizer_gguf "
                        "was given); token counts are estimated as characters / 4", self.model_id)
        return math.ceil(len(text) / 4)

    def _count(self, text: str, *, special: bool) -> int:
        if not text:
            return 0
        route = self._tokenize_route
        if route is None:
            route = self._find_tokenize_route()
            if route is not None:
                self._tokenize_route = route
            else:  # server unreachable right now: answer, but probe again next time
                route = self._local_or_estimate()
        if route == "local":
            return len(self._local_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special))
        if route == "estimate":
            return self._estimate(text)
        try:
            return max(0, self._server_count(route, text) - self._tokenize_offset)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: tokenize via %s failed (%s); estimating", self.model_id, route, exc)
            return self._estimate(text)

    def count_tokens(self, text: str) -> int:
        return self._count(text, special=False)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        if self.prefix_route == "completions":
            return self._count(self.render(request), special=True)
        if self.prefix_route == "user_hint" and request.prefix:  # the hint travels in the user turn
            _, body = self._body(request, request.seed, stream=False)
            request = GenerationRequest.create(body["messages"], max_tokens=request.max_tokens)
        return super().count_prompt_tokens(request)
