"""Many generations decoded together in one llama.cpp context: the sweeps' engine.

One sequence at a time, a CPU decodes at the speed its memory delivers the weights; several sequences in
one batch reuse every weight they load (measured on the 2-core machine: the 0.5B model's 23 tokens/s
alone become about 55 at 8 sequences; benchmarks/sweep_batched.py). A sweep's calls are independent
(every hint level's continuation, the samples; several items' LLM answers), so they can share a batch.

This is llama.cpp's own batch API (`llama_decode` over tokens of several sequence ids in one context)
through llama-cpp-python, the runtime the project already builds natively for the machine. A decode
thread admits requests into free sequence slots, decodes one token of every running sequence per step
(prompts are evaluated in the same batches, in chunks), and samples each sequence with the sampler chain
`create_completion` would build for it, so greedy requests give the same tokens (up to the rounding of
batched kernels, which the benchmark counts) and sampled ones the same draws for the same seed.

The KV cache is unified: a new sequence that shares a prompt prefix with one in the context (the same
item's hint levels, its samples) copies those cells instead of evaluating them again; a finished slot keeps
its cells until the slot is needed, so the next call of the same item finds them.

Why not xllamacpp's in-process server (llama.cpp's server with parallel slots): its prebuilt CPU wheel has
no AVX-512 kernels, and measured here it batches to 1.5x, against 2.3x for this engine.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import BackendError, Generation, GenerationRequest, PromptTooLong
from .llamacpp import LlamaCppBackend, _logprobs, _row_stats


@dataclass
class _Job:
    request: GenerationRequest
    seed: int | None
    prompt_ids: list[int]
    future: Future
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Slot:
    """One sequence id of the context: the tokens whose cells it holds, and the job running in it."""

    seq: int
    tokens: list[int] = field(default_factory=list)  # tokens in the KV cache for this sequence, in order
    job: _Job | None = None
    sampler: Any = None
    todo: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    wait: tuple[int, int] | None = None  # (source slot, prefix length) to copy once the source has it
    out: list[int] = field(default_factory=list)
    rows: list[tuple[int, float, float, float]] = field(default_factory=list)
    pending: int | None = None  # the last sampled token, to be evaluated next step
    text: bytes = b""
    started: float = 0.0


class BatchedLlamaCppBackend(LlamaCppBackend):
    """The in-process GGUF backend with a batch engine: `agenerate` calls made concurrently (a sweep's
    parallel calls, several items at once) are decoded together, up to `slots` sequences.

    Tokenising, templates, scoring and streaming are the sequential backend's (streaming runs one sequence
    in that backend's own context, under its lock)."""

    #: lets the sweep executor issue calls concurrently (they are batched, not serialised)
    batched = True
    #: one decode step at a time across the batched models of this process: the SLM's and the LLM's engines
    #: each use every core for a step, instead of oversubscribing the cores with both thread pools
    _cores = threading.Lock()

    def __init__(self, model_path: str | Path, *, slots: int = 8, flash_attn: bool = True, **kwargs: Any) -> None:
        super().__init__(model_path, **kwargs)
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.slots = slots
        self.flash_attn = flash_attn
        self._queue: deque[_Job] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ctx = None
        self._batch = None
        self._engine_error: BaseException | None = None
        #: totals for benchmarks: decode calls, tokens generated, time in llama_decode
        self.stats = {"decodes": 0, "generated": 0, "prompt_evaluated": 0, "prompt_copied": 0, "decode_s": 0.0}

    # -- engine lifecycle --------------------------------------------------------------------------
    def _start(self) -> None:
        with self._wake:
            if self._thread is not None:
                return
            llama = self.load()
            import llama_cpp

            params = llama_cpp.llama_context_default_params()
            params.n_ctx = self.n_ctx * self.slots
            params.n_batch = self.n_batch
            params.n_ubatch = self.n_batch
            params.n_seq_max = self.slots
            params.n_threads = self.n_threads
            params.n_threads_batch = self.n_threads
            params.kv_unified = True  # copied prefixes share cells; one pool of n_ctx * slots cells
            # llama-cpp-python's `Llama` turns flash attention off; on, it is faster here (2.9x the sequential
            # sweep's items/hour against 2.2x off, benchmarks/sweep_batched.py) but rounds differently, so a
            # sequence alone in the batch matches the sequential backend bit for bit only with it off
            params.flash_attn_type = (llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO if self.flash_attn
                                      else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)
            ctx = llama_cpp.llama_init_from_model(llama._model.model, params)
            if not ctx:
                raise BackendError(f"{self.model_id}: llama.cpp could not create a batch context "
                                   f"({self.slots} slots of {self.n_ctx} tokens)")
            self._ctx = ctx
            self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
            self._vocab_p = llama_cpp.llama_model_get_vocab(llama._model.model)
            self._n_vocab = llama.n_vocab()
            self._thread = threading.Thread(target=self._run, name=f"batch-{self.model_id}", daemon=True)
            self._thread.start()

    async def aclose(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._ctx is not None:
            import llama_cpp

            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        await super().aclose()

    # -- the public call ---------------------------------------------------------------------------
    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        if request.max_tokens == 0:
            return [self._empty(request) for _ in range(n)]
        await asyncio.to_thread(self._start)
        prompt = self.render(request)
        ids = self._prompt_ids(self._llama, prompt)
        if len(ids) >= self.n_ctx:
            raise PromptTooLong(f"{self.model_id}: the prompt has {len(ids)} tokens; the context window holds "
                                f"{self.n_ctx} (shorten the prompt, or raise n_ctx in the model's config)")
        jobs = []
        for i in range(n):
            seed = None if request.seed is None else request.seed + i
            jobs.append(_Job(request, seed, ids, Future()))
        with self._wake:
            if self._closed:
                raise BackendError(f"{self.model_id}: the backend is closed")
            if self._engine_error is not None:
                raise BackendError(f"{self.model_id}: the batch engine stopped: {self._engine_error}")
            self._queue.extend(jobs)
            self._wake.notify_all()
        try:
            return list(await asyncio.gather(*(asyncio.wrap_future(j.future) for j in jobs)))
        except asyncio.CancelledError:
            for j in jobs:  # the engine frees their slots at its next step
                j.cancelled.set()
            raise

    # -- the decode thread -------------------------------------------------------------------------
    def _sampler(self, job: _Job):
        """The chain `Llama.create_completion` builds for these settings (see `LlamaCppBackend._kwargs`)."""
        from llama_cpp import _internals
        from llama_cpp.llama_cpp import LLAMA_DEFAULT_SEED

        s = _internals.LlamaSampler()
        r = job.request
        if r.greedy:
            s.add_greedy()
        else:
            s.add_top_k(40)
            s.add_typical(1.0, 1)
            s.add_top_p(r.top_p, 1)
            s.add_min_p(0.0, 1)
            s.add_temp(r.temperature)
            s.add_dist(job.seed if job.seed is not None and job.seed >= 0 else LLAMA_DEFAULT_SEED)
        return s

    def _run(self) -> None:
        import llama_cpp

        slots = [_Slot(i) for i in range(self.slots)]
        mem = llama_cpp.llama_get_memory(self._ctx)
        try:
            while True:
                with self._wake:
                    while not self._closed and not self._queue and not any(s.job for s in slots):
                        self._wake.wait()
                    if self._closed:
                        for s in slots:
                            if s.job:
                                self._fail(s, BackendError(f"{self.model_id}: the backend was closed"))
                        while self._queue:
                            self._queue.popleft().future.set_exception(
                                BackendError(f"{self.model_id}: the backend was closed"))
                        return
                    self._admit(slots, mem)
                self._step(slots, mem)
        except BaseException as exc:  # noqa: BLE001 - every waiting caller learns why
            with self._wake:
                self._engine_error = exc
                for s in slots:
                    if s.job:
                        self._fail(s, BackendError(f"{self.model_id}: batch engine failed: {exc}"))
                while self._queue:
                    self._queue.popleft().future.set_exception(
                        BackendError(f"{self.model_id}: batch engine failed: {exc}"))

    @staticmethod
    def _common(a: list[int], b: list[int]) -> int:
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        return i

    def _admit(self, slots: list[_Slot], mem) -> None:
        """Move queued jobs into free slots; each starts from the longest prompt prefix some slot holds
        (or will hold once its own prompt is evaluated)."""
        import llama_cpp

        while self._queue:
            job = self._queue[0]
            if job.cancelled.is_set():
                self._queue.popleft()
                job.future.cancel()
                continue
            free = [s for s in slots if s.job is None]
            if not free:
                return
            self._queue.popleft()
            ids = job.prompt_ids
            limit = len(ids) - 1  # the last prompt token is always evaluated: its logits give the first token
            # the source with the longest shared prefix: a slot's cached tokens, or a running slot's full
            # prompt (copied once evaluated)
            best, best_n = None, 0
            for s in slots:  # ties go to a free slot, which can then run the job in place
                known = s.tokens + (s.todo if s.job is not None and s.wait is None else [])
                n = min(self._common(known, ids), limit)
                if n > 0 and (n, s.job is None) > (best_n, best is not None and best.job is None):
                    best, best_n = s, n
            # the slot to run in: a free one, preferably the source itself, else the one with least cached
            slot = best if best is not None and best.job is None else min(free, key=lambda s: len(s.tokens))
            if slot is best:
                keep = self._common(slot.tokens, ids[:best_n])
                llama_cpp.llama_memory_seq_rm(mem, slot.seq, keep, -1)
                slot.tokens = slot.tokens[:keep]
                slot.todo = list(ids[keep:])
                self.stats["prompt_copied"] += keep
            else:
                llama_cpp.llama_memory_seq_rm(mem, slot.seq, -1, -1)
                slot.tokens = []
                if best is not None and best_n > 0:
                    slot.wait = (best.seq, best_n)
                slot.todo = list(ids)
            slot.job = job
            slot.sampler = self._sampler(job)
            slot.out, slot.rows, slot.pending, slot.text = [], [], None, b""
            slot.started = time.perf_counter()
            self._resolve_wait(slots, slot, mem)

    def _resolve_wait(self, slots: list[_Slot], slot: _Slot, mem) -> None:
        """Copy the prefix from the source once it holds it (or whatever of it the source still holds)."""
        import llama_cpp

        if slot.wait is None:
            return
        src_seq, n = slot.wait
        src = slots[src_seq]
        have = self._common(src.tokens, slot.todo[:n])
        if have < n and src.job is not None and src.wait is None and src.todo:
            return  # the source is still evaluating its prompt: wait one more step
        slot.wait = None
        if have > 0:
            llama_cpp.llama_memory_seq_cp(mem, src.seq, slot.seq, 0, have)
            slot.tokens = slot.todo[:have]
            slot.todo = slot.todo[have:]
            self.stats["prompt_copied"] += have

    def _fail(self, slot: _Slot, exc: BaseException) -> None:
        if slot.job is not None and not slot.job.future.done():
            slot.job.future.set_exception(exc)
        slot.job, slot.sampler, slot.wait, slot.pending = None, None, None, None

    def _step(self, slots: list[_Slot], mem) -> None:
        """One llama_decode over every running sequence: a token each for those generating, a chunk of
        prompt for those still evaluating it; then sample where logits came back."""
        import llama_cpp

        for s in slots:
            if s.job is not None and s.job.cancelled.is_set():
                s.job.future.cancel()
                s.job, s.sampler, s.wait = None, None, None
            elif s.wait is not None:
                self._resolve_wait(slots, s, mem)
        batch = self._batch
        entries: list[tuple[_Slot, int | None]] = []  # (slot, batch index of its logits or None)
        budget = self.n_batch
        n = 0

        def add(slot: _Slot, token: int, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = len(slot.tokens)
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = slot.seq
            batch.logits[n] = logits
            slot.tokens.append(token)
            n += 1

        for s in slots:  # generating sequences first: one token each
            if s.job is not None and s.pending is not None and budget > 0:
                add(s, s.pending, True)
                s.pending = None
                entries.append((s, n - 1))
                budget -= 1
        for s in slots:  # then prompt chunks
            if s.job is None or s.wait is not None or not s.todo or budget <= 0:
                continue
            take = s.todo[:budget]
            s.todo = s.todo[len(take):]
            for i, t in enumerate(take):
                last = not s.todo and i == len(take) - 1
                add(s, t, last)
            budget -= len(take)
            self.stats["prompt_evaluated"] += len(take)
            entries.append((s, n - 1 if not s.todo else None))
        if n == 0:
            return
        batch.n_tokens = n
        t0 = time.perf_counter()
        with self._cores:
            rc = llama_cpp.llama_decode(self._ctx, batch)
            if rc == 1:  # no room in the KV cache: drop the cells idle slots keep, and retry once
                for s in slots:
                    if s.job is None and s.tokens:
                        llama_cpp.llama_memory_seq_rm(mem, s.seq, -1, -1)
                        s.tokens = []
                rc = llama_cpp.llama_decode(self._ctx, batch)
        self.stats["decode_s"] += time.perf_counter() - t0
        self.stats["decodes"] += 1
        if rc != 0:
            for s, _ in entries:
                llama_cpp.llama_memory_seq_rm(mem, s.seq, -1, -1)
                s.tokens = []
                self._fail(s, BackendError(f"{self.model_id}: llama_decode failed (code {rc}); the context "
                                           f"holds {self.slots} sequences of {self.n_ctx} tokens"))
            return
        for s, idx in entries:
            if idx is not None and s.job is not None:
                self._sample(s, idx)

    def _sample(self, s: _Slot, idx: int) -> None:
        import llama_cpp
        import numpy as np

        job = s.job
        token = llama_cpp.llama_sampler_sample(s.sampler.sampler, self._ctx, idx)
        eog = llama_cpp.llama_vocab_is_eog(self._vocab_p, token)
        if not eog:
            if self.record_logprobs:
                row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self._ctx, idx), shape=(self._n_vocab,))
                s.rows.append((token, *_row_stats(row, token)))
            s.out.append(token)
            s.text += self._piece(token)
            self.stats["generated"] += 1
        r = job.request
        text = s.text.decode("utf-8", "ignore")
        finish = None
        if eog:
            finish = "stop"
        else:
            cut = min((i for i in (text.find(x) for x in r.stop if x) if i >= 0), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            elif r.max_tokens is not None and len(s.out) >= r.max_tokens or len(job.prompt_ids) + len(s.out) >= self.n_ctx:
                finish = "length"
        if finish is None:
            s.pending = token
            return
        logprobs = None
        if self.record_logprobs:
            logprobs = _logprobs(self._llama, job.prompt_ids, s.rows, text)
        gen = Generation(text=text, prompt_tokens=len(job.prompt_ids), completion_tokens=len(s.out),
                         finish_reason=finish, latency_s=time.perf_counter() - job.submitted, model=self.model_id,
                         mean_logprob=logprobs.mean if logprobs is not None else None, logprobs=logprobs)
        if not job.future.done():
            job.future.set_result(gen)
        s.job, s.sampler, s.pending = None, None, None  # the cells stay: the next call may share them

    def _piece(self, token: int) -> bytes:
        import llama_cpp

        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab_p, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab_p, token, buf, len(buf), 0, False)
        return buf.raw[:n]
