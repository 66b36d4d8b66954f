"""A llama.cpp HTTP server for a GGUF model, in one command: what sweeps and shepherding talk to when the
models live in servers (several machines, a Ray cluster's workers) instead of in the sweep's process.

    shepherd models serve qwen2.5-coder-0.5b-instruct-q4_k_m --port 8081 [--slots 4] [--threads 2]

It is llama.cpp's own server (parallel slots, continuous batching, prompt caching, the OpenAI-compatible
`/v1/completions` and `/v1/chat/completions` routes) through xllamacpp's prebuilt wheel
(`pip install 'llm-shepherd[llamacpp-server]'`); a `llama-server` binary built from llama.cpp serves the same
routes. Point an `openai` model config at it with `prefix_route = "completions"` (the chat template is
rendered by the client, so a hint continues the assistant turn exactly).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from .base import BackendError


def start_server(model_path: str | Path, *, host: str = "127.0.0.1", port: int = 8081, slots: int = 1,
                 n_ctx: int = 4096, threads: int | None = None, cache_prompt: bool = True):
    """Start the server in this process (its own threads); returns the xllamacpp `Server` (keep a reference:
    the server stops when it is garbage-collected)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise BackendError("serving a GGUF model over HTTP needs xllamacpp: "
                           "pip install 'llm-shepherd[llamacpp-server]'") from exc
    p = xllamacpp.CommonParams()
    p.model.path = str(model_path)
    p.hostnames = [host]
    p.port = int(port)
    p.n_parallel = int(slots)
    p.n_ctx = int(n_ctx) * int(slots)  # the server splits its context between the slots
    if threads:
        p.cpuparams.n_threads = int(threads)
        p.cpuparams_batch.n_threads = int(threads)
    p.warmup = False
    # off: every prompt is evaluated from scratch, so a request's greedy answer does not depend on what the
    # slot held before (reused cells round differently in the last bits); on: faster, the usual setting
    p.cache_prompt = bool(cache_prompt)
    try:
        return xllamacpp.Server(p)
    except Exception as exc:
        raise BackendError(f"llama.cpp server for {model_path} on {host}:{port} did not start: {exc}") from exc


def serve_forever(model_path: str | Path, **kwargs) -> None:
    """Serve until SIGTERM or Ctrl-C."""
    server = start_server(model_path, **kwargs)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"serving {model_path} at {server.listening_address}", flush=True)
    stop.wait()
    del server
