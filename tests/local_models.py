"""Shared session fixtures for tests that need the real local GGUF models (slow marker)."""

import pytest

SLM_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
LLM_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"


@pytest.fixture(scope="session")
def slm_path():
    from shepherd.models.sources import resolve_model

    return resolve_model(SLM_NAME, download=False)


@pytest.fixture(scope="session")
def llm_path():
    from shepherd.models.sources import resolve_model

    return resolve_model(LLM_NAME, download=False)


@pytest.fixture(scope="session")
def slm_backend(slm_path):
    from shepherd.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(slm_path, model_id=SLM_NAME, n_ctx=2048)
    backend.load()
    return backend


@pytest.fixture(scope="session")
def llm_backend(llm_path):
    from shepherd.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(llm_path, model_id=LLM_NAME, n_ctx=2048)
    backend.load()
    return backend
