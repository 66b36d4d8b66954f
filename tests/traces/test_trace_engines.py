"""Which engine a sweep runs on, and how the Ray executor spreads workers over model servers (no cluster
needed here; tests/traces/test_trace_ray.py runs one)."""

import pytest

from shepherd.config import ModelConfig
from shepherd.models.factory import build_backend
from shepherd.traces.cached import CachedBackend
from shepherd.traces.executor import _serves_one_at_a_time, engine_name
from shepherd.traces.store import TraceStore


def test_engine_names_and_who_takes_calls_concurrently(tmp_path):
    scripted = build_backend(ModelConfig(backend="scripted", model="s"))
    wrapped = CachedBackend(scripted, TraceStore(tmp_path / "s.sqlite"))
    assert engine_name(wrapped) == "scripted" and not _serves_one_at_a_time(wrapped)
    http = build_backend(ModelConfig(backend="openai", model="m", base_url="http://127.0.0.1:9/v1",
                                     chat_template="chatml"))
    assert engine_name(http) == "openai-http" and not _serves_one_at_a_time(http)


def test_llamacpp_engines_by_config(tmp_path):
    """A GGUF path builds the sequential backend, or the batched one with `engine = "batched"` (nothing is
    loaded until the first call)."""
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    seq = build_backend(ModelConfig(model=str(gguf)))
    bat = build_backend(ModelConfig(model=str(gguf), engine="batched", slots=3))
    assert engine_name(seq) == "llamacpp" and _serves_one_at_a_time(seq)
    assert engine_name(bat) == "llamacpp-batched(slots=3)" and not _serves_one_at_a_time(bat)
    with pytest.raises(ValueError):
        ModelConfig(model=str(gguf), engine="turbo")
    with pytest.raises(ValueError):
        ModelConfig(model=str(gguf), slots=0)


def test_ray_workers_take_the_replicas_in_turn():
    pytest.importorskip("ray")
    from shepherd.traces.ray_executor import RayExecutor

    cfg = ModelConfig(backend="openai", model="m", base_url="http://a/v1", replicas=["http://b/v1", "http://c/v1"],
                      chat_template="chatml").model_dump()
    urls = [RayExecutor._endpoint(cfg, k)["base_url"] for k in range(5)]
    assert urls == ["http://a/v1", "http://b/v1", "http://c/v1", "http://a/v1", "http://b/v1"]
    assert RayExecutor._endpoint(cfg, 1)["replicas"] == []
    local = ModelConfig(model="x.gguf").model_dump()
    assert RayExecutor._endpoint(local, 3) == local
