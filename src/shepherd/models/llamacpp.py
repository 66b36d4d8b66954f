"""In-process GGUF models through llama-cpp-python: the embedded default backend.

The model's own chat template (GGUF metadata) is rendered, the prefix appended, and a raw completion
continues the assistant turn. llama.cpp keeps the KV cache of the longest common prompt prefix between
calls, so one item's hint levels reuse the work on the shared prompt.

Token log-probabilities: llama-cpp-python returns them only with `logits_all=True` (which keeps the
logits of every prompt position, slowing prompt evaluation), and those have been reported one position off
(its issue #1983). Instead each sampling step reads the logits of the position being sampled, which the
context holds anyway, and records the chosen token's log-probability with the distribution's entropy and
top-2 margin (`_TokenRecorder`). `score` computes the same quantities for a given text afterwards (teacher
forcing), in batches: that is how stored generations get their log-probabilities without being regenerated.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import (
    Backend,
    BackendError,
    Generation,
    GenerationRequest,
    PromptTooLong,
    StreamChunk,
    TokenLogprobs,
)
from .chat_template import CHATML, render_request

#: rows of logits one scoring batch asks llama.cpp for (each row is the vocabulary size in float32)
_SCORE_CHUNK = 64


def _row_stats(logits: Any, token: int) -> tuple[float, float, float]:
    """(log-probability of `token`, entropy, top-1 minus top-2 log-probability) of one row of raw logits."""
    import numpy as np

    top = float(logits.max())
    e = np.exp(logits - top)
    s = float(e.sum())
    lse = top + float(np.log(s))
    entropy = lse - float(np.dot(e, logits)) / s
    second = float(np.partition(logits, -2)[-2])
    return float(logits[token]) - lse, max(0.0, entropy), top - second


class _TokenRecorder:
    """Wraps one `Llama` instance's `sample` to read the logits of each sampled position.

    The sampler chain is untouched (nothing is added to it), so with or without recording the same tokens
    are drawn. Recording is on only while `tokens` is a list (set per generation under the run lock)."""

    def __init__(self, llama: Any) -> None:
        import numpy as np

        self.llama = llama
        self.n_vocab = llama.n_vocab()
        self.tokens: list[tuple[int, float, float, float]] | None = None
        original = llama.sample

        def sample(*args: Any, **kwargs: Any) -> int:
            token = original(*args, **kwargs)
            if self.tokens is not None:
                idx = kwargs.get("idx")
                ridx = idx - llama.n_tokens if idx is not None else -1
                row = np.ctypeslib.as_array(llama._ctx.get_logits_ith(ridx), shape=(self.n_vocab,))
                self.tokens.append((token, *_row_stats(row, token)))
            return token

        llama.sample = sample  # an instance attribute: `generate` looks it up on the instance first

    def start(self) -> None:
        self.tokens = []

    def take(self) -> list[tuple[int, float, float, float]] | None:
        """The rows recorded since `start` (end-of-generation tokens left out); recording stops."""
        import llama_cpp

        rows, self.tokens = self.tokens, None
        if rows is None:
            return None
        vocab = self.llama._model.vocab
        return [r for r in rows if not llama_cpp.llama_vocab_is_eog(vocab, r[0])]


def _logprobs(llama: Any, prompt_ids: list[int], rows: list[tuple[int, float, float, float]],
              text: str) -> TokenLogprobs:
    """Attach each token's end offset in `text`; tokens past its end (a stop string's) are dropped."""
    out: list[tuple[float, float, float, int]] = []
    data = b""
    for token, lp, ent, mar in rows:
        data += llama.detokenize([token], prev_tokens=prompt_ids)
        end = len(data.decode("utf-8", "ignore"))
        start = out[-1][3] if out else 0
        if start >= len(text) and text:
            break
        out.append((lp, ent, mar, min(end, len(text))))
    return TokenLogprobs([r[0] for r in out], [r[1] for r in out], [r[2] for r in out], [r[3] for r in out])


def _import_llama():
    try:
        from llama_cpp import Llama
    except ImportError as exc:  # the heavy runtime is an optional extra
        raise BackendError("the local GGUF backend needs llama-cpp-python: "
                           "pip install 'llm-shepherd[local]'") from exc
    return Llama


#: how to rebuild llama-cpp-python when its native build crashes on this CPU (see `check_runtime`)
NO_AMX_FLAGS = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"  # gcc: explicit -mno-* outlast -march=native
REBUILD_WITHOUT_AMX = (f'CFLAGS="{NO_AMX_FLAGS}" CXXFLAGS="{NO_AMX_FLAGS}" '
                       'python -m pip install --no-cache-dir --force-reinstall --no-deps "llama-cpp-python>=0.3.36"')

_CHECK_CHILD = """
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
out = m("def add(a, b):", max_tokens=4, temperature=0.0)
print(repr(out["choices"][0]["text"]))
"""


@dataclass(frozen=True)
class RuntimeCheck:
    """What one real generation in a child process showed about this machine's llama.cpp build."""

    ok: bool
    message: str
    returncode: int | None = None


def explain_exit(returncode: int | None, stderr: str, model_path: str | Path) -> RuntimeCheck:
    """A child's exit, in words: a signal means the native library itself crashed (not our code, not the
    model file), and the fix is a rebuild; anything else is reported with the child's own last words."""
    if returncode == 0:
        return RuntimeCheck(True, f"llama.cpp generates with {Path(model_path).name}", 0)
    if returncode is None:
        return RuntimeCheck(False, f"llama.cpp did not generate 4 tokens of {Path(model_path).name} in time", None)
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return RuntimeCheck(False, (
            f"llama.cpp crashed ({name}) on its first tokens of {Path(model_path).name}: the native build does "
            "not run on this CPU. Seen with a -march=native build on a CPU that reports AMX inside a VM that does "
            "not let processes use it (the crash is in ggml_backend_amx_mul_mat), and with a wheel built on "
            f"another CPU (pip's cache). Rebuild it without AMX, not from the cache:\n  {REBUILD_WITHOUT_AMX}"),
            returncode)
    tail = "\n".join(stderr.strip().splitlines()[-3:])
    return RuntimeCheck(False, f"llama.cpp could not generate with {Path(model_path).name} (exit {returncode}): "
                        f"{tail or 'no output'}", returncode)


def check_runtime(model_path: str | Path, *, timeout_s: float = 300.0) -> RuntimeCheck:
    """Load the model and generate a few tokens in a child process. A native crash (SIGSEGV, SIGILL) kills the
    process it happens in, so no in-process check can report it; the child's exit can."""
    if not Path(model_path).is_file():
        return RuntimeCheck(False, f"model file not found: {model_path}")
    try:
        proc = subprocess.run([sys.executable, "-c", _CHECK_CHILD, str(model_path)], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return explain_exit(None, "", model_path)
    return explain_exit(proc.returncode, proc.stderr, model_path)


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
        logprobs: bool = True,
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
        self.record_logprobs = logprobs
        self._recorder: _TokenRecorder | None = None

    # -- loading -------------------------------------------------------------------------------
    def load(self):
        with self._load_lock:
            if self._llama is None:
                Llama = _import_llama()
                t0 = time.perf_counter()
                try:
                    # n_threads bounds prompt (batch) evaluation too: llama.cpp's default batch threads are
                    # every core, which oversubscribes a machine shared with other work
                    self._llama = Llama(model_path=str(self.model_path), n_ctx=self.n_ctx,
                                        n_threads=self.n_threads, n_threads_batch=self.n_threads,
                                        n_batch=self.n_batch, verbose=False)
                except (ValueError, RuntimeError) as exc:
                    raise BackendError(f"llama.cpp could not load {self.model_path}: {exc}") from exc
                self._recorder = _TokenRecorder(self._llama)
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
        logprobs = None
        with self._run_lock:
            if cancelled is not None and cancelled.is_set():
                raise asyncio.CancelledError()
            if self.record_logprobs:
                self._recorder.start()
            try:
                out = llama.create_completion(prompt=prompt, **kwargs)
            except ValueError as exc:  # e.g. prompt longer than the context window
                if "context window" in str(exc):
                    raise PromptTooLong(f"{self.model_id}: {exc}") from exc
                raise BackendError(f"{self.model_id}: {exc}") from exc
            finally:
                rows = self._recorder.take()
        choice = out["choices"][0]
        if rows is not None:
            logprobs = _logprobs(llama, self._prompt_ids(llama, prompt), rows, choice["text"])
        usage = out["usage"]
        return Generation(
            text=choice["text"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason=choice.get("finish_reason") or "stop",
            latency_s=time.perf_counter() - t0,
            model=self.model_id,
            mean_logprob=logprobs.mean if logprobs is not None else None,
            logprobs=logprobs,
        )

    @staticmethod
    def _prompt_ids(llama: Any, prompt: str) -> list[int]:
        """The prompt's tokens exactly as `create_completion` makes them."""
        return llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    # -- scoring ---------------------------------------------------------------------------------
    def score(self, request: GenerationRequest, text: str | None = None, *,
              token_ids: list[int] | None = None) -> TokenLogprobs:
        """Log-probabilities of `text` (or of `token_ids`) as this model's continuation of `request`.

        Teacher forcing: the prompt and the text are evaluated together, in batches, and each text token is
        read from the logits of the position before it, exactly the row a generation samples it from. The
        KV cache keeps the common prefix with the previous call, so scoring several answers to one prompt
        evaluates that prompt once."""
        import numpy as np

        if (text is None) == (token_ids is None):
            raise ValueError("score: give the text or its token ids, not both")
        llama = self.load()
        prompt = self.render(request)
        p_ids = self._prompt_ids(llama, prompt)
        ids = list(token_ids) if token_ids is not None else llama.tokenize(
            text.encode("utf-8"), add_bos=False, special=False)
        if text is None:
            text = llama.detokenize(ids, prev_tokens=p_ids).decode("utf-8", "ignore")
        if not ids:
            return TokenLogprobs([], [], [], [])
        seq = p_ids + ids
        if len(seq) > llama.n_ctx():
            raise PromptTooLong(f"{self.model_id}: prompt and text have {len(seq)} tokens; the context window "
                                f"holds {llama.n_ctx()}")
        first = len(p_ids) - 1  # the position whose logits give the first text token
        n_vocab = llama.n_vocab()
        rows: list[tuple[int, float, float, float]] = []
        with self._run_lock:
            cached = llama.input_ids[:llama.n_tokens]
            keep = 0
            while keep < min(len(cached), first) and cached[keep] == seq[keep]:
                keep += 1
            llama._ctx.kv_cache_seq_rm(-1, keep, -1)
            llama.n_tokens = keep
            try:
                for pos in range(keep, first, llama.n_batch):  # the rest of the prompt: no logits needed
                    self._decode(llama, seq[pos:min(first, pos + llama.n_batch)], pos, logits=False)
                for pos in range(first, len(seq) - 1, _SCORE_CHUNK):  # each row predicts the next token
                    chunk = seq[pos:min(len(seq) - 1, pos + _SCORE_CHUNK)]
                    self._decode(llama, chunk, pos, logits=True)
                    for i in range(len(chunk)):
                        row = np.ctypeslib.as_array(llama._ctx.get_logits_ith(i), shape=(n_vocab,))
                        rows.append((seq[pos + i + 1], *_row_stats(row, seq[pos + i + 1])))
            except RuntimeError as exc:
                llama.n_tokens = 0  # the cache is in an unknown state: the next call starts afresh
                raise BackendError(f"{self.model_id}: scoring failed: {exc}") from exc
        return _logprobs(llama, p_ids, rows, text)

    @staticmethod
    def _decode(llama: Any, chunk: list[int], pos: int, *, logits: bool) -> None:
        """Evaluate `chunk` at positions pos.. and record it as `Llama.eval` does, so the next generation
        still finds its common prefix in the cache."""
        llama._batch.set_batch(batch=chunk, n_past=pos, logits_all=logits)
        llama._ctx.decode(llama._batch)
        llama.input_ids[pos:pos + len(chunk)] = chunk
        llama.n_tokens = pos + len(chunk)

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
                    if self.record_logprobs:
                        self._recorder.start()
                    try:
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
                    finally:  # a stream that fails stops recording too
                        rows = self._recorder.take()
                text = "".join(pieces)
                logprobs = (_logprobs(llama, self._prompt_ids(llama, prompt), rows, text)
                            if rows is not None and finish != "cancelled" else None)
                completion = (usage or {}).get("completion_tokens")
                if completion is None:
                    completion = self.count_tokens(text)
                prompt_tokens = (usage or {}).get("prompt_tokens") or self.count_prompt_tokens(request)
                gen = Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion,
                                 finish_reason=finish, latency_s=time.perf_counter() - t0, model=self.model_id,
                                 mean_logprob=logprobs.mean if logprobs is not None else None, logprobs=logprobs)
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
