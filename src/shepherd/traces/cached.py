"""`CachedBackend`: the trace store in front of any backend. Live, sweep and replay are the same code.

- live / sweep: a hit returns the stored generation (`cached=True`, nothing paid); a miss calls the inner
  backend, and the result is committed (with its line in the call log) before it is returned.
- replay: no inner backend (or `generate_missing=False`): a miss raises `MissingGeneration`, naming the
  model, the item and the request. With `map_hints=True` (the LLM's handle in replay), a hint request
  (no prefix beyond the item's own, max_tokens=n) for a swept item is served from the item's stored full answer, with n moved
  up to the next swept grid level (or the full answer when n reaches past the last level); each such
  mapping is recorded in `mappings`, so a report can say which hints were rounded up. An extension request
  (the LLM continuing a swept hint level to n tokens in all) is served the same way, from the same answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from ..hinting import full_request
from ..models.base import Backend, Generation, GenerationRequest, StreamChunk
from .store import ItemEntry, TraceStore, messages_key


class MissingGeneration(LookupError):
    """Replay needed a generation the store does not hold. Deliberately not a BackendError: the
    runner's fallbacks must not turn a gap in the data into a silently different answer."""

    def __init__(self, model: str, request: GenerationRequest, key: str, item: str | None = None,
                 detail: str = "") -> None:
        self.model = model
        self.request = request
        self.key = key
        self.item = item
        where = f"item {item}" if item else "an item no sweep in the store knows (prompt not swept)"
        prefix = request.prefix if len(request.prefix) <= 60 else request.prefix[:57] + "..."
        msg = (f"no stored generation for model {model!r} on {where}: prefix={prefix!r}, "
               f"max_tokens={request.max_tokens}, temperature={request.temperature}, seed={request.seed} "
               f"(key {key[:16]})")
        if detail:
            msg += f"; {detail}"
        msg += ". Extend the sweep, or replay with generate=True (and the model) to generate it."
        super().__init__(msg)


@dataclass
class HintMapping:
    """A replayed hint request moved onto the swept grid."""

    item: str
    requested_tokens: int
    served_tokens: int
    fraction: float  # of the full answer; 1.0 when the whole answer was served
    full_tokens: int


class CachedBackend(Backend):
    def __init__(self, inner: Backend | None, store: TraceStore, *, model_id: str | None = None,
                 generate_missing: bool = True, map_hints: bool = False,
                 tokenizer: Backend | None = None) -> None:
        if inner is None and model_id is None:
            raise ValueError("CachedBackend without an inner backend needs model_id=")
        self.inner = inner
        self.store = store
        self.model_id = model_id or inner.model_id  # type: ignore[union-attr]
        self.supports_prefix = inner.supports_prefix if inner is not None else True
        self.hint_mode = inner.hint_mode if inner is not None else "prefix"
        self.generate_missing = generate_missing and inner is not None
        self.map_hints = map_hints
        self.tokenizer = tokenizer or inner
        self.hits = 0
        self.misses = 0  # real model calls made through this handle
        self.mappings: list[HintMapping] = []
        self._inflight: dict[str, asyncio.Future] = {}

    @property
    def replay(self) -> bool:
        return not self.generate_missing

    # -- generation ---------------------------------------------------------------------------------
    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        out = []
        for i in range(n):
            req = request if (i == 0 or request.seed is None) else replace(request, seed=request.seed + i)
            out.append(await self._one(req))
        return out

    async def _one(self, request: GenerationRequest) -> Generation:
        key = request.key(self.model_id)
        gen = self.store.get(key)
        if gen is not None:
            self.hits += 1
            return gen
        if self.map_hints:
            mapped = self._serve_mapped(request)
            if mapped is not None:
                self.hits += 1
                return mapped
        if not self.generate_missing:
            raise MissingGeneration(self.model_id, request, key, self._describe_item(request))
        pending = self._inflight.get(key)
        if pending is not None:  # the same request is already being generated: wait for that result
            return replace(await asyncio.shield(pending), cached=True)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            (gen,) = await self.inner.agenerate(request, n=1)  # type: ignore[union-attr]
            gen = replace(gen, model=gen.model or self.model_id, cached=False)
            self.store.put(key, self.model_id, request, gen)
            self.misses += 1
            fut.set_result(gen)
            return gen
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: nobody may be waiting
            raise
        finally:
            self._inflight.pop(key, None)

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        (gen,) = await self.agenerate(request)
        yield StreamChunk(text=gen.text, generation=gen)

    # -- replay of hints ------------------------------------------------------------------------------
    def _entries(self, request: GenerationRequest) -> list[ItemEntry]:
        return self.store.find_items(messages_key(request), llm=self.model_id)

    def _swept_answers(self, request: GenerationRequest):
        """(entry, stored full answer, its swept levels as sorted (tokens, fraction, text, key), L) of every
        swept item whose LLM request is `request` in everything but what the answer wrote after the item's
        own prefix (none in chat style; a completion-style task's stub) and the token budget."""
        for entry in self._entries(request):
            if entry.full_key is None or not request.prefix.startswith(entry.request.prefix):
                continue
            base = replace(request, prefix=entry.request.prefix)
            if full_request(base, entry.request.max_tokens).key(self.model_id) != entry.full_key:
                continue
            full = self.store.get(entry.full_key)
            if full is None:
                continue
            levels = sorted((tok, frac, text, hkey) for frac, tok, text, hkey in
                            self.store.hints(entry.sweep, entry.item_id) if tok > 0)
            yield entry, full, levels, entry.full_tokens or full.completion_tokens

    def _serve_mapped(self, request: GenerationRequest) -> Generation | None:
        """A hint request (nothing written after the item's prefix yet) or an extension request (the
        prefix ends with a swept hint level), served from the swept answer; None when neither applies."""
        if request.max_tokens is None or not request.greedy:
            return None
        for entry, full, levels, L in self._swept_answers(request):
            written = request.prefix[len(entry.request.prefix):]
            gen = (self._serve_extension(entry, full, levels, L, written, request.max_tokens) if written
                   else self._serve_hint(entry, full, levels, L, request.max_tokens))
            if gen is not None:
                return gen
        return None

    def _serve_hint(self, entry: ItemEntry, full: Generation, levels: list, L: int, n: int) -> Generation:
        for tok, frac, text, hkey in levels:
            if tok >= n and tok < L:
                gen = self.store.get(hkey) if hkey else None
                if gen is None:
                    gen = Generation(text=text, prompt_tokens=full.prompt_tokens, completion_tokens=tok,
                                     finish_reason="length", latency_s=full.latency_s * tok / max(L, 1),
                                     model=self.model_id, cached=True)
                self.mappings.append(HintMapping(entry.item_id, n, tok, frac, L))
                return gen
        # n reaches past the last swept level: the whole answer is the hint. An answer cut by the token
        # budget leaves the SLM nothing to add, so it is served as finished (the runner then stops)
        self.mappings.append(HintMapping(entry.item_id, n, L, 1.0, L))
        return full if full.finish_reason == "stop" else replace(full, finish_reason="stop")

    def _serve_extension(self, entry: ItemEntry, full: Generation, levels: list, L: int, written: str,
                         n: int) -> Generation | None:
        """The LLM extending a swept hint level (`written`, what the request's prefix adds to the item's) to
        written + n tokens: the stored full answer from that level up to the next swept level at or above
        it (or to its end). Its input, the prompt and the hint, was read by the LLM before:
        `cached_prompt_tokens`."""
        start = next((tok for tok, _, text, _ in levels if text == written), None)
        if start is None or not full.text.startswith(written):
            return None  # not a swept level of this answer: nothing stored continues it
        want = start + n
        served = next(((tok, frac, text) for tok, frac, text, _ in levels if want <= tok < L), None)
        tok, frac, text = served if served is not None else (L, 1.0, full.text)
        self.mappings.append(HintMapping(entry.item_id, want, tok, frac, L))
        seen = full.prompt_tokens + start
        return Generation(text=text[len(written):], prompt_tokens=seen, completion_tokens=tok - start,
                          finish_reason="length" if served is not None else "stop",
                          latency_s=full.latency_s * (tok - start) / max(L, 1), model=self.model_id,
                          cached=True, cached_prompt_tokens=seen)

    def _describe_item(self, request: GenerationRequest) -> str | None:
        entries = self.store.find_items(messages_key(request))
        if not entries:
            return None
        e = entries[0]
        return f"{e.task}/{e.item_id}"

    # -- counting -----------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if self.tokenizer is None:
            # replay without any tokenizer: a rough estimate (4 characters a token), never a model call
            return (len(text) + 3) // 4
        return self.tokenizer.count_tokens(text)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        if self.tokenizer is None:
            return super().count_prompt_tokens(request)
        return self.tokenizer.count_prompt_tokens(request)

    async def aclose(self) -> None:
        if self.inner is not None:
            await self.inner.aclose()
