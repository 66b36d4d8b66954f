"""The one interface every model backend implements.

Every backend fills the same `Generation` record (text, token counts, finish reason, latency), so that
cost accounting, the trace store and the metrics never care which runtime produced a generation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import struct
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

Message = dict[str, str]


class BackendError(RuntimeError):
    """A backend could not produce a generation (unreachable, timed out, died, refused)."""


class BackendTimeout(BackendError):
    """The backend did not answer within its time limit."""


class PromptTooLong(BackendError):
    """The prompt (with its hint) does not fit the model's context window: the request's fault, not the
    backend's (an API answers 400 `context_length_exceeded`, and the backend's health is not marked)."""


class PrefixNotSupported(BackendError):
    """The backend's route cannot continue an assistant prefix."""


@dataclass(frozen=True)
class GenerationRequest:
    """Everything that determines a generation; its `key()` addresses it in the trace store."""

    messages: tuple[tuple[str, str], ...]
    prefix: str = ""
    max_tokens: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()

    @classmethod
    def create(
        cls,
        messages: Sequence[Message] | str,
        *,
        prefix: str = "",
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = 0,
        stop: Sequence[str] = (),
    ) -> GenerationRequest:
        msgs = to_messages(messages)
        if max_tokens is not None and max_tokens < 0:
            raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
        return cls(
            messages=tuple((m["role"], m["content"]) for m in msgs),
            prefix=prefix or "",
            max_tokens=max_tokens,
            temperature=float(temperature),
            top_p=float(top_p),
            seed=seed,
            stop=tuple(stop),
        )

    @property
    def message_dicts(self) -> list[Message]:
        return [{"role": r, "content": c} for r, c in self.messages]

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    def key(self, model_id: str) -> str:
        """Content address: same model + request -> same key. Greedy requests ignore the seed.

        Memoised per request and model: a replay asks for the same request's key at every operating point.
        (The payload is the fields as they are: JSON writes tuples as lists, as `asdict` left them.)"""
        memo = self.__dict__.setdefault("_keys", {})  # not a field: equality, hashing and replace ignore it
        key = memo.get(model_id)
        if key is None:
            payload = {f.name: getattr(self, f.name) for f in fields(self)}
            payload["model"] = model_id
            if self.greedy:
                payload["seed"] = None
                payload["top_p"] = 1.0
            blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
            key = memo[model_id] = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        return key


@dataclass
class TokenLogprobs:
    """Per generated token: its log-probability under the model that wrote it, and a summary of the
    distribution it was drawn from (entropy, and the margin between the two most likely tokens).

    Why a summary and not the top-k tokens themselves: confidence features need only these, and they keep a
    stored generation small (`pack`: 8 bytes a token). `ends` is each token's end offset in the generation's
    text, so a feature can pick the tokens that state the final answer. `entropy_exact` says whether the
    entropy is over the whole vocabulary (the in-process runtime) or a lower bound from the top-k an API
    returns (the probability outside the top-k counted as one outcome).
    """

    logprobs: list[float]
    entropies: list[float]
    margins: list[float]
    ends: list[int]
    entropy_exact: bool = True

    def __post_init__(self) -> None:
        n = len(self.logprobs)
        if not (len(self.entropies) == len(self.margins) == len(self.ends) == n):
            raise ValueError("TokenLogprobs: logprobs, entropies, margins and ends must have one entry a token")

    def __len__(self) -> int:
        return len(self.logprobs)

    @property
    def mean(self) -> float | None:
        return sum(self.logprobs) / len(self.logprobs) if self.logprobs else None

    def pack(self) -> str:
        """Compact text form for trace stores and packs: base64 of little-endian float16 / uint16 arrays."""
        n = len(self.logprobs)

        def half(xs: list[float]) -> bytes:  # clipped to float16's range
            return struct.pack(f"<{n}e", *(max(-60000.0, min(60000.0, x)) for x in xs))

        blob = (half(self.logprobs) + half(self.entropies) + half(self.margins)
                + struct.pack(f"<{n}H", *(min(e, 65535) for e in self.ends)))
        return ("x" if self.entropy_exact else "k") + base64.b64encode(blob).decode("ascii")

    @classmethod
    def unpack(cls, text: str) -> TokenLogprobs:
        if not text or text[0] not in "xk":
            raise ValueError("not a packed TokenLogprobs")
        blob = base64.b64decode(text[1:])
        if len(blob) % 8:
            raise ValueError("packed TokenLogprobs has a partial token")
        n = len(blob) // 8
        lp = struct.unpack_from(f"<{n}e", blob, 0)
        en = struct.unpack_from(f"<{n}e", blob, 2 * n)
        mg = struct.unpack_from(f"<{n}e", blob, 4 * n)
        ends = struct.unpack_from(f"<{n}H", blob, 6 * n)
        return cls(list(lp), list(en), list(mg), list(ends), entropy_exact=text[0] == "x")

    @classmethod
    def from_top(cls, chosen: list[float], tops: list[list[float]], ends: list[int]) -> TokenLogprobs:
        """From what an OpenAI-compatible API returns: each token's logprob and its top-k alternatives'."""
        ent, mar = [], []
        for lp, top in zip(chosen, tops):
            top = sorted(top or [lp], reverse=True)
            ent.append(entropy_from_top(top))
            mar.append(top[0] - top[1] if len(top) > 1 else 0.0)
        return cls(list(chosen), ent, mar, list(ends), entropy_exact=False)


def entropy_from_top(top: list[float]) -> float:
    """Entropy (nats) of a distribution known by its top-k log-probabilities: the rest of the mass counted as
    one outcome, so this is a lower bound of the true entropy."""
    ps = [math.exp(x) for x in top]
    rest = max(0.0, 1.0 - sum(ps))
    return -sum(p * math.log(p) for p in ps + [rest] if p > 0)


@dataclass
class Generation:
    """One model call's result. `text` is the continuation only, never the prefix it was given."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length" | "error"
    latency_s: float
    model: str = ""
    mean_logprob: float | None = None
    cached: bool = False  # served from the trace store, no model was called
    #: per-token log-probabilities where the backend gave them (`mean_logprob` is then their mean)
    logprobs: TokenLogprobs | None = None
    #: the part of `prompt_tokens` the model had already read in an earlier call of the same answer (a hint
    #: extended: the prompt and the hint bought before), priced at the cached-input rate
    cached_prompt_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason == "stop"

    @property
    def cut_off(self) -> bool:
        """Stopped at its max_tokens: usually before stating a result."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StreamChunk:
    """A piece of streamed text; the last chunk carries the whole `Generation`."""

    text: str
    generation: Generation | None = None


@dataclass
class Usage:
    """Token usage of one model across all the calls an answer made to it."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    #: of `prompt_tokens`, those read again from the model's cache (cheaper where the provider discounts them)
    cached_prompt_tokens: int = 0

    def add(self, gen: Generation) -> None:
        self.prompt_tokens += gen.prompt_tokens
        self.completion_tokens += gen.completion_tokens
        self.cached_prompt_tokens += gen.cached_prompt_tokens
        self.calls += 1

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def to_messages(messages: Sequence[Message] | str) -> list[Message]:
    """Accept a bare question or chat messages; reject empty input with a clear error."""
    if isinstance(messages, str):
        if not messages.strip():
            raise ValueError("empty question: nothing to answer")
        return [{"role": "user", "content": messages}]
    msgs = list(messages)
    if not msgs:
        raise ValueError("empty message list: nothing to answer")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ("system", "user", "assistant", "tool"):
            raise ValueError(f"message {i} has unknown role {m['role']!r}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be text")  # noqa: TRY004 - callers map ValueError to a 400
    if not any(m["role"] == "user" and m["content"].strip() for m in msgs):
        raise ValueError("no non-empty user message: nothing to answer")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


class Backend(ABC):
    """A model that generates from chat messages, optionally continuing an assistant prefix."""

    #: identity of the model for pricing, traces and cache keys (for example the GGUF's sha256 name)
    model_id: str = "unknown"
    #: whether `prefix` really continues the assistant turn (False: a fallback route is used)
    supports_prefix: bool = True
    #: how this backend takes a hint: "prefix" (it continues the assistant turn that starts with it),
    #: "user_prompt" (an API without prefill: the hint is written into the user turn and the model reads it
    #: rather than continues it), None (it cannot take one). Every answer says which one served it.
    hint_mode: str | None = "prefix"

    @abstractmethod
    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        """Return `n` generations; with n > 1 seeds are `seed, seed+1, ...`."""

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Stream one generation. Backends without streaming yield it whole."""
        (gen,) = await self.agenerate(request, n=1)
        yield StreamChunk(text=gen.text, generation=gen)

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own tokenizer."""

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        """Prompt tokens of a request. Backends that render their chat template count exactly."""
        overhead = 4  # role markers of a ChatML-like template, per message
        return sum(self.count_tokens(c) + overhead for _, c in request.messages) + self.count_tokens(
            request.prefix) + 3

    def generate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        return run_sync(self.agenerate(request, n=n))

    async def aclose(self) -> None:
        """Release connections or model memory."""


def run_sync(coro):
    """Run a coroutine from sync code, also when an event loop is already running (e.g. notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
