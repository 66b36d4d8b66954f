"""In-process GGUF models through llama-cpp-python: the embedded default backend.

The model's own chat template (GGUF metadata) is rendered, the prefix appended, and a raw completion
continues the assistant turn. llama.cpp keeps the KV cache of the longest common prompt prefix between
calls, so one item's hint levels reuse the work on the shared prompt.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .base import Backend, BackendError, Generation, GenerationRequest, PromptTooLong, StreamChunk
from .chat_template import CHATML, render_request


def _import_llama():
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # the heavy runtime is an optional extra
        raise BackendError("the local GGUF backend needs llama-cpp-python: "
                           "pip install 'llm-shepherd[local]'") from exc
    return Llama


class LlamaCppBackend(Backend):
    def __init__(
        self,
        model_path: str | Path,
        *,
        model_id: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        chat_template: str | None = None,
        load_timeout_s: float | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise BackendError(f"model file not found: {self.model_path}")
        self.model_id = model_id or self.model_path.stem
        self.n_ctx = n_ctx
        self.n_threads = n_threads or max(1, min(os.cpu_count() or 1, 8))
        self.n_batch = n_batch
        self._template_override = chat_template
        self._llama = None
        self._vocab = None
        self._specials: dict[str, str] | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()  # a llama context serves one generation at a time
        self.load_seconds: float | None = None

    # -- loading -------------------------------------------------------------------------------
    def load(self):
        with self._load_lock:
            if self._llama is None:
                Llama = _import_llama()
                t0 = time.perf_counter()
                try:
                    self._llama = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                                        n_threads=self.n_threads, n_batch=self.n_batch, verbose=False)
                except (ValueError, RuntimeError) as exc:
                    raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
                self.load_seconds = time.perf_counter() - t0
        return self._llama

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def _tokenizer(self):
        if self._llama is not None:
            return self._llama
        with self._load_lock:
            if self._vocab is None:
                Llama = _import_llama()
                self._vocab = Llama(model_path=str(self.model_path), vocab_only=True, verbose=False)
            return self._vocab

    @property
    def chat_template(self) -> str:
        if self._template_override:
            return self._template_override
        meta = getattr(self._tokenizer(), "metadata", {}) or {}
        return meta.get("tokenizer.chat_template") or CHATML

    def _special_tokens(self) -> dict[str, str]:
        if self._specials is not None:
            return self._specials
        tok = self._tokenizer()
        out = {}
        for key, fn in (("bos_token", "token_bos"), ("eos_token", "token_eos")):
            try:
                tid = getattr(tok, fn)()
                out[key] = tok.detokenize([tid], special=True).decode("utf-8", "ignore") if tid >= 0 else ""
            except Exception:  # noqa: BLE001 - some vocabularies lack one of them
                out[key] = ""
        self._specials = out
        return out

    def render(self, request: GenerationRequest) -> str:
        return render_request(self.chat_template, request, **self._special_tokens())

    # -- counting -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        if not text:
            return 0
        return len(self._tokenizer().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text` in this model's tokenizer (vocabulary only: no weights are loaded for it)."""
        if not text:
            return []
        return list(self._tokenizer().tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def detokenize(self, ids: list[int]) -> str:
        """Text of token ids; bytes of a character split at the end are dropped, as llama.cpp's output does."""
        return self._tokenizer().detokenize(list(ids)).decode("utf-8", "ignore")

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        prompt = self.render(request)
        return len(self._tokenizer().tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    # -- generation -----------------------------------------------------------------------------
    def _kwargs(self, request: GenerationRequest, seed: int | None) -> dict[str, Any]:
        max_tokens = request.max_tokens
        return {
            "max_tokens": max_tokens if max_tokens is not None else -1,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": 0 if request.greedy else 40,
            "min_p": 0.0,
            "repeat_penalty": 1.0,
            "stop": list(request.stop) or None,
            "seed": seed if seed is not None else -1,
        }

    def _check_fits(self, llama: Any, prompt: str) -> None:
        """A prompt that leaves no room for one generated token is refused before llama.cpp sees it."""
        n = len(llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
        ctx = llama.n_ctx()
        if n >= ctx:
            raise PromptTooLong(f"{self.model_id}: the prompt has {n} tokens; the context window holds {ctx} "
                                "(shorten the prompt, or raise n_ctx in the model's config)")

    def _generate_one(self, request: GenerationRequest, seed: int | None,
                      cancelled: threading.Event | None = None) -> Generation:
        llama = self.load()
        prompt = self.render(request)
        self._check_fits(llama, prompt)
        kwargs = self._kwargs(request, seed)
        if cancelled is not None:
            # checked after every decoded token: a cancelled caller frees the context within one token
            # instead of holding the lock (and the CPU) until max_tokens
            from llama_cpp import StoppingCriteriaList
            kwargs["stopping_criteria"] = StoppingCriteriaList([lambda _ids, _logits: cancelled.is_set()])
        t0 = time.perf_counter()
        with self._run_lock:
            if cancelled is not None and cancelled.is_set():
                raise asyncio.CancelledError()
            try:
                out = llama.create_completion(prompt=prompt, **kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                if "context window" in str(exc):
                    raise PromptTooLong(f"{self.model_id}: {exc}") from exc
                raise BackendError(f"{self.model_id}: {exc}") from exc
        choice = out["choices"][0]
        usage = out["usage"]
        return Generation(
            text=choice["text"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice.get("finish_reason") or "stop",
            latency_s=time.perf_counter() - t0,
            model=self.model_id,
        )

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        if request.max_tokens == 0:
            return [self._empty(request) for _ in range(n)]
        out = []
        for i in range(n):
            seed = None if request.seed is None else request.seed + i
            cancelled = threading.Event()
            try:
                out.append(await asyncio.to_thread(self._generate_one, request, seed, cancelled))
            except asyncio.CancelledError:
                cancelled.set()  # the worker thread stops at its next token; its result is dropped
                raise
        return out

    def _empty(self, request: GenerationRequest) -> Generation:
        return Generation(text="", prompt_tokens=self.count_prompt_tokens(request), completion_tokens=0,
                          finish_reason="length", latency_s=0.0, model=self.model_id)

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        """Stream tokens from a worker thread; closing the iterator stops the generation."""
        llama = await asyncio.to_thread(self.load)
        prompt = self.render(request)
        self._check_fits(llama, prompt)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()
        done = object()

        def worker():
            t0 = time.perf_counter()
            pieces, finish, usage = [], "stop", None
            try:
                with self._run_lock:
                    stream = llama.create_completion(prompt=prompt, stream=True,
                                                     **self._kwargs(request, request.seed))
                    for chunk in stream:
                        if stop.is_set():
                            stream.close()
                            finish = "cancelled"
                            break
                        choice = chunk["choices"][0]
                        if choice["text"]:
                            pieces.append(choice["text"])
                            loop.call_soon_threadsafe(queue.put_nowait, choice["text"])
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        usage = chunk.get("usage") or usage
                text = "".join(pieces)
                completion = (usage or {}).get("completion_tokens")
                if completion is None:
                    completion = self.count_tokens(text)
                prompt_tokens = (usage or {}).get("prompt_tokens") or self.count_prompt_tokens(request)
                gen = Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion,
                                 finish_reason=finish, latency_s=time.perf_counter() - t0, model=self.model_id)
                loop.call_soon_threadsafe(queue.put_nowait, gen)
            except Exception as exc:  # noqa: BLE001 - surfaced to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, BackendError(f"{self.model_id}: {exc}"))
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is done:
                    break
                if isinstance(item, Exception):
                    raise item
                if isinstance(item, Generation):
                    yield StreamChunk(text="", generation=item)
                else:
                    yield StreamChunk(text=item)
        finally:
            stop.set()

    async def aclose(self) -> None:
        self._llama = None
        self._vocab = None
