"""Build a backend from its config. Heavy runtimes are imported only in the branch that needs them."""

from __future__ import annotations

import os
from collections.abc import Callable

from .base import Backend

Progress = Callable[[int, int], None]


def build_backend(cfg, progress: Progress | None = None) -> Backend:
    """`cfg` is a `shepherd.config.ModelConfig`."""
    if cfg.backend == "llamacpp":
        from .catalog import find_known
        from .sources import resolve_model

        path = resolve_model(cfg.model, progress=progress)
        known = find_known(cfg.model)
        model_id = cfg.model_id or (known.name if known else path.stem)
        kwargs = {"model_id": model_id, "n_ctx": cfg.n_ctx, "n_threads": cfg.n_threads, "chat_template": cfg.chat_template}
        if cfg.engine == "batched":
            from .llamacpp_batched import BatchedLlamaCppBackend

            return BatchedLlamaCppBackend(path, slots=cfg.slots, **kwargs)
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(path, **kwargs)
    if cfg.backend == "openai":
        from .openai_http import OpenAICompatibleBackend

        api_key = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
        if cfg.api_key_env and not api_key:
            raise ValueError(f"environment variable {cfg.api_key_env} (api_key_env) is not set")
        return OpenAICompatibleBackend(
            base_url=cfg.base_url, model=cfg.model, api_key=api_key, model_id=cfg.identity,
            prefix_route=cfg.prefix_route, chat_template=cfg.chat_template, timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries, max_concurrency=cfg.max_concurrency)
    if cfg.backend == "scripted":
        from .scripted import ScriptedBackend

        return ScriptedBackend(cfg.script or "The answer is 42.", model_id=cfg.identity, delay_s=cfg.delay_s)
    raise ValueError(f"unknown backend {cfg.backend!r}")
