"""A deterministic in-memory backend for orchestration tests and the server's fast tests.

It is not a model: each whitespace-separated word is one "token", answers come from a script, and
faults (errors, delays, dying mid-stream) can be injected. Never use it to show a feature working.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

from .base import Backend, BackendError, Generation, GenerationRequest, StreamChunk

Script = Callable[[GenerationRequest], str]


def _words(text: str) -> list[str]:
    return text.split()


class ScriptedBackend(Backend):
    def __init__(
        self,
        answer: str | Script = "The answer is 42.",
        *,
        model_id: str = "scripted",
        delay_s: float = 0.0,
        fail: BaseException | None = None,
        die_after_chunks: int | None = None,
        verbatim: bool = False,
    ) -> None:
        """`verbatim`: a whole answer (no prefix, not cut) keeps its script's whitespace, as code needs;
        otherwise its words are joined by single spaces."""
        self.model_id = model_id
        self._answer = answer if callable(answer) else (lambda _req, a=answer: a)
        self.delay_s = delay_s
        self.fail = fail
        self.die_after_chunks = die_after_chunks
        self.verbatim = verbatim
        self.calls: list[GenerationRequest] = []

    def full_answer(self, request: GenerationRequest) -> list[str]:
        return _words(self._answer(request))

    def _continue(self, request: GenerationRequest) -> tuple[list[str], str, str | None]:
        """The words to send, the finish reason, and the script's text when it is sent whole (verbatim)."""
        script = self._answer(request)  # once: a script may be a stateful callable
        words = _words(script)
        prefix = _words(request.prefix)
        if prefix and words[: len(prefix)] == prefix:
            words = words[len(prefix) :]
        limit = request.max_tokens
        if limit is not None and len(words) > limit:
            return words[:limit], "length", None
        return words, "stop", script if self.verbatim and not request.prefix else None

    def _render(self, words: list[str], request: GenerationRequest, whole: str | None = None) -> str:
        if whole is not None:
            return whole
        text = " ".join(words)
        if request.prefix and text and not request.prefix.endswith((" ", "\n")):
            text = " " + text
        return text

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        out = []
        for i in range(n):
            if i and request.seed is not None:  # like every backend: seeds seed, seed+1, ...
                request = replace(request, seed=request.seed + 1)
            self.calls.append(request)
            t0 = time.perf_counter()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            if self.fail is not None:
                raise self.fail
            words, finish, whole = self._continue(request)
            out.append(
                Generation(
                    text=self._render(words, request, whole),
                    prompt_tokens=sum(len(_words(c)) for _, c in request.messages) + len(_words(request.prefix)),
                    completion_tokens=len(words),
                    finish_reason=finish,
                    latency_s=time.perf_counter() - t0,
                    model=self.model_id,
                )
            )
        return out

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        self.calls.append(request)
        t0 = time.perf_counter()
        if self.fail is not None:
            raise self.fail
        words, finish, whole = self._continue(request)
        pieces = self._render(words, request, whole).split(" ")
        sent = []
        for i, piece in enumerate(pieces):
            if self.die_after_chunks is not None and i >= self.die_after_chunks:
                raise BackendError(f"{self.model_id} died mid-stream after {i} chunks")
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            chunk = piece if i == 0 else " " + piece
            sent.append(chunk)
            yield StreamChunk(text=chunk)
        gen = Generation(
            text="".join(sent),
            prompt_tokens=sum(len(_words(c)) for _, c in request.messages) + len(_words(request.prefix)),
            completion_tokens=len(words),
            finish_reason=finish,
            latency_s=time.perf_counter() - t0,
            model=self.model_id,
        )
        yield StreamChunk(text="", generation=gen)

    def count_tokens(self, text: str) -> int:
        return len(_words(text))
