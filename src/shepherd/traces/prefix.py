"""Prompt-prefix reuse, and how to switch it off.

llama.cpp keeps the KV cache of the previous call and re-evaluates only the part of the next prompt
that differs (the longest common token prefix). A sweep orders one item's calls so that they share it.

The reuse is not free of side effects: a prompt evaluated partly from the cache goes through different
batch shapes than one evaluated from scratch, so the logits differ in the last bits, and a *sampled*
generation (temperature > 0) can come out different (greedy ones rarely do). The store never pays
twice for a key whichever text came first, but a sweep that must be bit-reproducible across
interruptions (or a measurement of what the reuse saves) evaluates every prompt from scratch:
`FreshContext(backend)`.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from ..models.base import Backend, Generation, GenerationRequest


def _llama_backend(backend: Backend):
    b = backend
    while getattr(b, "inner", None) is not None and type(b).__name__ != "LlamaCppBackend":
        b = b.inner  # type: ignore[attr-defined]
    return b if type(b).__name__ == "LlamaCppBackend" else None


class FreshContext(Backend):
    """Wraps an in-process llama.cpp backend so that every call evaluates its prompt from scratch (the
    KV cache is reset first). Other backends pass through unchanged."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.supports_prefix = inner.supports_prefix
        self.hint_mode = inner.hint_mode
        self.resets = 0

    def _reset(self) -> None:
        b = _llama_backend(self.inner)
        if b is None:
            return
        llama = b.load()
        with b._run_lock:
            llama.reset()
        self.resets += 1

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        out = []
        for i in range(n):
            req = request if (i == 0 or request.seed is None) else replace(request, seed=request.seed + i)
            await asyncio.to_thread(self._reset)
            out.extend(await self.inner.agenerate(req, n=1))
        return out

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.inner.count_prompt_tokens(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
