"""A trained predictor: featurizer + two-stage model(s) + the decision rule, saved as a versioned artifact.

Artifact = a directory with
  manifest.json   format/version, featurizer name + config, model configs, label grid, size target,
                  decision rules (threshold, scale, cap), calibration record, training record (store,
                  task, data fingerprint, split seed, train/validation item ids, metrics)
  arrays.npz      the featurizer's fitted arrays and every model's weights (`np.load(allow_pickle=False)`)
No pickle anywhere: loading never runs code from the artifact.

Two models can live in one artifact: "proactive" (query features only) and "reactive" (query features +
features of the SLM's sampled answers). Each has its own decision rule.

The decision rule, given p = P(hint needed), the predicted size and the predicted LLM length L^:
  p < threshold                   -> slm
size target "fraction" (the size head predicts f^ = n*/L):
  f = scale * f^, snapped up to the next label-grid fraction (optional, default on: the labels live on
  that grid)
  f >= cap                         -> llm  (the whole answer from the LLM)
  else                             -> hint(n), n = max(min_tokens, ceil(f * L^))
size target "log_tokens" (the size head predicts log(1 + n*), as the paper's):
  n = max(min_tokens, ceil(scale * expm1(predicted)))   -- tokens directly: neither L^ nor the grid
  n >= the request's answer budget -> llm  (a hint that long is the whole answer; the budget is the one
                                           length the policy knows, and a shorter answer than n ends the
                                           hint by itself: the LLM stops, replay serves the whole answer)
  else                             -> hint(n)
  (`cap` and `snap_to_grid` are shares of L and do not apply; L^ only fills the reported fraction n/L^.)
L^ is the model's length head (expm1 of the predicted log(1+L)), or a constant (the training median)
when `length="constant"`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..artifacts import prefixed, read_artifact, write_artifact
from .features import Featurizer, SampleFeaturizer, SampleInfo, featurizer_from_spec
from .model import TwoStageModel

FORMAT = "shepherd-predictor"
FORMAT_VERSION = 1
MODES = ("proactive", "reactive")


class ArtifactError(ValueError):
    """The artifact directory is missing, incomplete, or of an unknown format/version."""


@dataclass
class DecisionRule:
    threshold: float = 0.5
    scale: float = 1.0
    cap: float = 1.0
    min_tokens: int = 1
    snap_to_grid: bool = True
    length: str = "predicted"  # "predicted" | "constant"
    constant_length: float = 256.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0 + 1e-6:
            raise ValueError("threshold must be in [0, 1] (just above 1: never hint)")
        if self.scale <= 0 or self.cap <= 0 or self.min_tokens < 1:
            raise ValueError("scale > 0, cap > 0 and min_tokens >= 1 are required")
        if self.length not in ("predicted", "constant"):
            raise ValueError("length must be 'predicted' or 'constant'")

    def with_overrides(self, **kw: Any) -> DecisionRule:
        d = asdict(self)
        d.update({k: v for k, v in kw.items() if v is not None})
        return DecisionRule(**d)


@dataclass
class Prediction:
    """What the predictor says about one query, and what the rule makes of it."""

    prob: float
    fraction: float  # predicted hint fraction before scale
    expected_tokens: float  # L^
    kind: str  # slm | hint | llm
    hint_tokens: int
    hint_fraction: float  # after scale / snapping
    reason: str
    #: the predicted hint size in tokens (before scale), for a log_tokens size head; None for fractions
    tokens: float | None = None

    def details(self) -> dict[str, Any]:
        d = {"p_hint": round(self.prob, 4), "pred_fraction": round(self.fraction, 4),
             "expected_llm_tokens": round(self.expected_tokens, 1), "hint_fraction": round(self.hint_fraction, 4)}
        if self.tokens is not None:
            d["pred_tokens"] = round(self.tokens, 1)
        return d


@dataclass
class Predictor:
    featurizer: Featurizer
    models: dict[str, TwoStageModel]
    rules: dict[str, DecisionRule]
    size_target: str = "fraction"
    grid: list[float] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    sample_featurizer: SampleFeaturizer = field(default_factory=SampleFeaturizer)
    path: str | None = None
    #: one query's features by its text (bounded): a replay decides the same query at every operating point
    _one_query: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- features -----------------------------------------------------------------------------------
    def query_features(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        if len(texts) != 1:  # batches are computed as batches (never mixed with single-row results)
            return self.featurizer.transform(texts)
        row = self._one_query.get(texts[0])
        if row is None:
            row = self.featurizer.transform(texts)
            if len(self._one_query) >= 20_000:
                self._one_query.clear()
            self._one_query[texts[0]] = row
        return row.copy()

    def inputs(self, mode: str, texts: Sequence[str] | None = None,
               samples: Sequence[Sequence[SampleInfo]] | None = None, X: np.ndarray | None = None) -> np.ndarray:
        """Model inputs for `mode`: query features (+ sample features for "reactive")."""
        if X is None:
            if texts is None:
                raise ValueError("texts or X is required")
            X = self.query_features(texts)
        if mode == "reactive":
            if samples is None:
                raise ValueError("the reactive model needs the SLM's samples")
            X = np.concatenate([X, self.sample_featurizer.transform(samples)], axis=1)
        return X

    def has(self, mode: str) -> bool:
        return mode in self.models

    # -- prediction ---------------------------------------------------------------------------------
    def raw(self, mode: str, X: np.ndarray) -> dict[str, np.ndarray]:
        if mode not in self.models:
            raise ArtifactError(f"this artifact has no {mode!r} model (it has: {', '.join(self.models)})")
        return self.models[mode].predict_raw(X)

    def fractions(self, raw: dict[str, np.ndarray], rule: DecisionRule) -> tuple[np.ndarray, np.ndarray]:
        """Predicted hint fraction (before scale) and expected LLM tokens per row. For a log_tokens size
        head the fraction is the predicted tokens / L^, not capped at 1, so that fraction * L^ gives the
        predicted tokens back (`apply_rule` uses them directly)."""
        if rule.length == "constant":
            L = np.full(raw["loglen"].shape, float(rule.constant_length))
        else:
            L = np.maximum(np.expm1(np.clip(raw["loglen"], 0.0, 12.0)), 1.0)
        if self.size_target == "log_tokens":
            return np.maximum(np.expm1(np.clip(raw["size"], 0.0, 12.0)), 0.0) / L, L
        return np.clip(raw["size"], 0.0, 1.0), L

    def apply_rule(self, prob: float, frac: float, L: float, rule: DecisionRule,
                   budget: int | None = None) -> Prediction:
        """The rule's decision (see the module docstring); `budget`: the request's answer budget
        (max_tokens), where the caller knows it."""
        if prob < rule.threshold:
            return Prediction(prob, frac, L, "slm", 0, 0.0,
                              f"predictor: p(hint needed)={prob:.2f} < threshold {rule.threshold:.2f}")
        if self.size_target == "log_tokens":
            tokens = frac * L
            n = max(rule.min_tokens, math.ceil(rule.scale * tokens - 1e-9))
            if budget is not None and n >= budget:
                return Prediction(prob, frac, L, "llm", 0, 1.0,
                                  f"predictor: p={prob:.2f}, a hint of {n} tokens reaches the answer budget "
                                  f"{budget}: the LLM answers", tokens)
            return Prediction(prob, frac, L, "hint", n, min(1.0, n / L),
                              f"predictor: p={prob:.2f} >= {rule.threshold:.2f}; hint {n} tokens "
                              f"({rule.scale:g} x predicted {tokens:.0f})", tokens)
        f = min(1.0, rule.scale * frac)
        if rule.snap_to_grid and self.grid:
            above = [g for g in self.grid if g > 0 and g >= f - 1e-9]
            f = above[0] if above else 1.0
        if f >= rule.cap:
            return Prediction(prob, frac, L, "llm", 0, f,
                              f"predictor: p={prob:.2f}, hint fraction {f:.2f} >= cap {rule.cap:.2f}: the LLM answers")
        n = max(rule.min_tokens, math.ceil(f * L - 1e-9))
        return Prediction(prob, frac, L, "hint", n, f,
                          f"predictor: p={prob:.2f} >= {rule.threshold:.2f}; hint {f:.2f} x {L:.0f} tokens = {n}")

    def predict(self, mode: str, texts: Sequence[str] | None = None,
                samples: Sequence[Sequence[SampleInfo]] | None = None, *, X: np.ndarray | None = None,
                rule: DecisionRule | None = None, budget: int | None = None) -> list[Prediction]:
        rule = rule or self.rules[mode]
        raw = self.raw(mode, self.inputs(mode, texts, samples, X))
        frac, L = self.fractions(raw, rule)
        return [self.apply_rule(float(p), float(f), float(n), rule, budget) for p, f, n in zip(raw["prob"], frac, L)]

    def decide(self, text: str, samples: Sequence[SampleInfo] | None = None, *, mode: str | None = None,
               rule: DecisionRule | None = None, budget: int | None = None) -> Prediction:
        """One query's decision; `mode` defaults to reactive when samples are given; `budget`: the
        request's max_tokens (a log_tokens hint that reaches it is the LLM's whole answer)."""
        mode = mode or ("reactive" if samples is not None else "proactive")
        return self.predict(mode, [text], None if samples is None else [list(samples)], rule=rule,
                            budget=budget)[0]

    # -- persistence --------------------------------------------------------------------------------
    def save(self, out_dir: str | os.PathLike) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        for k, v in self.featurizer.state().items():
            arrays[f"featurizer.{k}"] = np.asarray(v)
        models = {}
        for mode, model in self.models.items():
            for k, v in model.to_arrays().items():
                arrays[f"{mode}.{k}"] = v
            models[mode] = {"config": model.config_dict(), "n_inputs": model.n_inputs,
                            "inputs": ["query"] + (["samples"] if mode == "reactive" else [])}
        manifest = dict(self.manifest)
        manifest.update({
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "featurizer": self.featurizer.spec(),
            "sample_featurizer": {"name": self.sample_featurizer.name, "features": self.sample_featurizer.feature_names},
            "size_target": self.size_target,
            "label_grid": list(self.grid),
            "models": models,
            "decision": {m: asdict(r) for m, r in self.rules.items()},
        })
        write_artifact(out, "manifest.json", manifest, arrays)
        self.manifest = manifest
        self.path = str(out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        p = Path(path)
        manifest, arrays = read_artifact(p, "manifest.json", FORMAT, FORMAT_VERSION, ArtifactError,
                                         "predictor artifact (train one with `shepherd train`)")
        featurizer = featurizer_from_spec(manifest["featurizer"], prefixed(arrays, "featurizer"))
        models = {mode: TwoStageModel.from_arrays(info["config"], prefixed(arrays, mode))
                  for mode, info in manifest["models"].items()}
        rules = {m: DecisionRule(**r) for m, r in manifest.get("decision", {}).items()}
        for m in models:
            rules.setdefault(m, DecisionRule())
        sf = SampleFeaturizer.from_names((manifest.get("sample_featurizer") or {}).get("features"))
        return cls(featurizer=featurizer, models=models, rules=rules, size_target=manifest.get("size_target", "fraction"),
                   grid=[float(g) for g in manifest.get("label_grid", [])], manifest=manifest, path=str(p),
                   sample_featurizer=sf)

    def update_manifest(self, **entries: Any) -> None:
        self.manifest.update(entries)


_CACHE: dict[tuple[str, float], Predictor] = {}
_CACHE_LOCK = threading.Lock()


def load_predictor(path: str | os.PathLike, *, cached: bool = True) -> Predictor:
    """Load an artifact (once per process per directory and manifest version, when `cached`)."""
    p = Path(path).expanduser().resolve()
    mf = p / "manifest.json"
    if not cached or not mf.is_file():
        return Predictor.load(p)
    key = (str(p), mf.stat().st_mtime)
    with _CACHE_LOCK:
        pred = _CACHE.get(key)
        if pred is None:
            pred = Predictor.load(p)
            _CACHE[key] = pred
    return pred
