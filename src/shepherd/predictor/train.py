"""Train the predictor from sweep examples: fit, report validation metrics, fit the deployed model.

The deployed model is fitted on every labelled item: its recipe and its number of epochs are fixed
before training (chosen out of fold by `select`, or given), so nothing is left to tune on a held-out
split, and holding one out would only throw away a quarter of the few items there are. The validation
metrics come from a separate fit on a seeded training split, scored on the rest: what the recipe does on
items it did not see. Calibration reads out-of-fold scores of refits (`calibrate.oof_raw`), never the
deployed model's own. Optional k-fold cross-validation reports out-of-fold metrics over every item.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .data import Example, fingerprint, kfold, split_items
from .features import Featurizer, SampleFeaturizer, carries_confidence, get_featurizer
from .model import NetConfig, TwoStageModel
from .predictor import DecisionRule, Predictor

DEFAULT_FEATURIZER = "lexical"


def auc(y: Sequence[int], score: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half). NaN when one class is absent."""
    y = np.asarray(y, dtype=int)
    s = np.asarray(score, dtype=np.float64)
    pos, neg = s[y == 1], s[y == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    r_pos = ranks[y == 1].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def _targets(examples: Sequence[Example], size_target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.array([e.y for e in examples], dtype=np.float64)
    if size_target == "log_tokens":
        size = np.array([e.log_tokens for e in examples])
    else:
        size = np.array([e.fraction for e in examples])
    loglen = np.array([e.log_len for e in examples])
    return y, size, loglen


def metrics(examples: Sequence[Example], raw: dict[str, np.ndarray], predictor: Predictor, mode: str,
            train: Sequence[Example] = ()) -> dict[str, Any]:
    """Classifier AUC / accuracy and size / length errors on `examples`."""
    y = np.array([e.y for e in examples], dtype=int)
    prob = raw["prob"]
    rule = predictor.rules[mode]
    frac, L = predictor.fractions(raw, DecisionRule(**{**asdict(rule), "scale": 1.0}))
    pred = (prob >= 0.5).astype(int)
    out: dict[str, Any] = {
        "n": len(y), "positives": int(y.sum()),
        "auc": auc(y, prob),
        "accuracy@0.5": float((pred == y).mean()) if len(y) else float("nan"),
        "balanced_accuracy@0.5": _balanced_acc(y, pred),
    }
    pos = y == 1
    if pos.any():
        f_true = np.array([e.fraction for e in examples])[pos]
        t_true = np.array([e.tokens for e in examples], dtype=np.float64)[pos]
        t_pred = np.ceil(frac[pos] * L[pos])
        out["size_mae_fraction"] = float(np.abs(np.minimum(frac[pos], 1.0) - f_true).mean())
        out["size_mae_log1p_tokens"] = float(np.abs(np.log1p(t_pred) - np.log1p(t_true)).mean())
        out["size_mae_tokens"] = float(np.abs(t_pred - t_true).mean())
        out["size_under_rate"] = float((t_pred < t_true).mean())  # predicted hint shorter than n*
        if train:
            tr_pos = [e for e in train if e.y == 1]
            if tr_pos:  # a constant predictor (the training mean fraction) for comparison
                c = float(np.mean([e.fraction for e in tr_pos]))
                out["size_mae_fraction_constant"] = float(np.abs(c - f_true).mean())
    L_true = np.array([e.full_tokens for e in examples], dtype=np.float64)
    if len(L_true):
        out["length_mae_tokens"] = float(np.abs(L - L_true).mean())
        out["length_mape"] = float((np.abs(L - L_true) / np.maximum(L_true, 1)).mean())
    return _round(out)


def _balanced_acc(y: np.ndarray, pred: np.ndarray) -> float:
    accs = [float((pred[y == c] == c).mean()) for c in (0, 1) if (y == c).any()]
    return float(np.mean(accs)) if accs else float("nan")


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


@dataclass
class TrainSettings:
    featurizer: str = DEFAULT_FEATURIZER
    featurizer_config: dict[str, Any] = field(default_factory=dict)
    model: NetConfig = field(default_factory=NetConfig)
    val_fraction: float = 0.25
    seed: int = 0
    reactive: bool = True
    cv: int = 0


def _fit_mode(mode: str, examples: Sequence[Example], Xq: np.ndarray, cfg: NetConfig,
              sf: SampleFeaturizer, qmask: np.ndarray) -> TwoStageModel:
    X = Xq if mode == "proactive" else np.concatenate([Xq, sf.transform([e.samples for e in examples])], axis=1)
    mask = qmask if mode == "proactive" else np.concatenate([qmask, np.ones(sf.dim, dtype=bool)])
    y, size, loglen = _targets(examples, cfg.size_target)
    return TwoStageModel(cfg).fit(X, y, size, loglen, standardize_mask=mask)


def _modes(examples: Sequence[Example], reactive: bool) -> list[str]:
    modes = ["proactive"]
    if reactive and examples and all(e.samples for e in examples):
        modes.append("reactive")
    return modes


def train(examples: Sequence[Example], settings: TrainSettings | None = None, *,
          featurizer: Featurizer | None = None, grid: Sequence[float] = (),
          sweep_settings: dict[str, Any] | None = None, source: dict[str, Any] | None = None
          ) -> tuple[Predictor, dict[str, Any]]:
    """Report validation metrics of a fit on the training split, then fit the deployed model on every item;
    returns (predictor, report)."""
    s = settings or TrainSettings()
    examples = list(examples)
    if len(examples) < 4:
        raise ValueError(f"too few labelled items to train on ({len(examples)})")
    if len({e.y for e in examples}) < 2:
        raise ValueError("all items have the same label (hint needed or not): nothing to learn")
    t0 = time.perf_counter()
    modes = _modes(examples, s.reactive)
    tr, va = split_items(examples, s.val_fraction, s.seed)
    held_out = _fit(tr, s, featurizer, modes, grid)  # the validation report's model: never deployed
    predictor = _fit(examples, s, featurizer, modes, grid)  # the deployed model: every labelled item
    feat = predictor.featurizer

    report: dict[str, Any] = {"items": len(examples), "fitted_on_items": len(examples), "train_items": len(tr),
                              "val_items": len(va), "positives": int(sum(e.y for e in examples)),
                              "featurizer": feat.spec(), "model": asdict(s.model), "modes": modes,
                              "validation": {}, "train": {}}
    for m in modes:
        report["train"][m] = metrics(examples, _raw(predictor, m, examples), predictor, m)
        if va:
            report["validation"][m] = metrics(va, _raw(held_out, m, va), held_out, m, train=tr)
    if s.cv and s.cv > 1:
        report["cv"] = cross_validate(examples, s, featurizer_spec=feat.spec())
    report["train_seconds"] = round(time.perf_counter() - t0, 3)
    report["settings"] = {"featurizer": feat.spec(), "model": asdict(s.model), "val_fraction": s.val_fraction,
                          "seed": s.seed, "reactive": s.reactive}

    predictor.manifest = {
        "training": {
            "fingerprint": fingerprint(examples),
            "items": len(examples),
            #: the deployed model saw every labelled item
            "fitted_on_items": len(examples),
            "split_seed": s.seed,
            "val_fraction": s.val_fraction,
            #: the split of the validation report (a separate fit on train_ids, scored on val_ids)
            "validation_split": {"train_ids": [e.item_id for e in tr], "val_ids": [e.item_id for e in va]},
            "settings": report["settings"],
            "label_kinds": {k: sum(1 for e in examples if e.kind == k) for k in sorted({e.kind for e in examples})},
            "median_full_tokens": predictor.rules[modes[0]].constant_length,
            "metrics": {"validation": report["validation"], "train": report["train"],
                        **({"cv": {k: v for k, v in report["cv"].items() if k != "oof"}} if "cv" in report else {})},
            **(source or {}),
        },
        "sweep_settings": dict(sweep_settings or {}),
    }
    return predictor, report


def _fit(examples: Sequence[Example], s: TrainSettings, featurizer: Featurizer | None, modes: list[str],
         grid: Sequence[float]) -> Predictor:
    """One predictor fitted on `examples` (its featurizer too; a given featurizer is copied by its spec,
    so that two fits never share fitted state)."""
    if featurizer is not None:
        feat = get_featurizer(featurizer.spec()["name"], **featurizer.spec().get("config", {}))
    else:
        feat = get_featurizer(s.featurizer, **s.featurizer_config)
    feat.fit([e.text for e in examples])
    X = feat.transform([e.text for e in examples])
    sf = SampleFeaturizer(confidence=carries_confidence([e.samples for e in examples]))
    models = {m: _fit_mode(m, examples, X, s.model, sf, feat.standardize_mask()) for m in modes}
    med_L = float(np.median([e.full_tokens for e in examples])) if examples else 256.0
    rules = {m: DecisionRule(constant_length=med_L) for m in modes}
    return Predictor(featurizer=feat, models=models, rules=rules, size_target=s.model.size_target,
                     grid=sorted(float(g) for g in grid), sample_featurizer=sf)


def _raw(predictor: Predictor, mode: str, examples: Sequence[Example]) -> dict[str, np.ndarray]:
    return predictor.raw(mode, predictor.inputs(mode, texts=[e.text for e in examples],
                                                samples=[e.samples for e in examples]))


def _stratified_share(examples: Sequence[Example], idx: Sequence[int], fraction: float, seed: int) -> list[int]:
    """A seeded share of `idx` keeping each class's proportion (at least one item of each class present)."""
    rng = random.Random(seed)
    keep: list[int] = []
    for cls in (0, 1):
        members = [i for i in idx if examples[i].y == cls]
        rng.shuffle(members)
        if members:
            keep.extend(members[:max(1, round(fraction * len(members)))])
    return sorted(keep)


def cross_validate(examples: Sequence[Example], s: TrainSettings, featurizer_spec: dict[str, Any] | None = None,
                   k: int | None = None, train_fraction: float = 1.0) -> dict[str, Any]:
    """Out-of-fold metrics: each item is scored by a model that did not see it.

    `train_fraction` < 1 fits each fold's model on a seeded, class-stratified share of that fold's training
    items while still scoring every held-out item: the held-out set stays the same, only the training data
    shrinks (a learning curve, see `learning_curve`)."""
    k = k or s.cv
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    examples = list(examples)
    folds = kfold(examples, k, s.seed)
    modes = _modes(examples, s.reactive)
    oof = {m: {"prob": np.zeros(len(examples)), "size": np.zeros(len(examples)),
               "loglen": np.zeros(len(examples))} for m in modes}
    spec = featurizer_spec or {"name": s.featurizer, "config": s.featurizer_config}
    sf = SampleFeaturizer(confidence=carries_confidence([e.samples for e in examples]))
    # a featurizer with nothing to fit (an embedding) gives the same features in every fold: compute once
    probe = get_featurizer(spec["name"], **spec.get("config", {}))
    X_fixed = probe.transform([e.text for e in examples]) if not probe.fit([]).state() else None
    qmask = probe.standardize_mask()
    const = np.full(len(examples), np.nan)  # the training folds' mean positive fraction: a size baseline
    fitted_on: list[int] = []
    for fi, fold in enumerate(folds):
        if not fold:
            continue
        held = set(fold)
        tr_idx = [i for i in range(len(examples)) if i not in held]
        if train_fraction < 1.0:
            tr_idx = _stratified_share(examples, tr_idx, train_fraction, seed=s.seed * 1000 + fi)
        tr = [examples[i] for i in tr_idx]
        te = [examples[i] for i in fold]
        if len({e.y for e in tr}) < 2:
            continue
        const[fold] = float(np.mean([e.fraction for e in tr if e.y == 1]))
        fitted_on.append(len(tr))
        if X_fixed is not None:
            X_tr = X_fixed[tr_idx]
            X_te = X_fixed[fold]
        else:
            feat = get_featurizer(spec["name"], **spec.get("config", {}))
            feat.fit([e.text for e in tr])
            X_tr = feat.transform([e.text for e in tr])
            X_te = feat.transform([e.text for e in te])
        for m in modes:
            model = _fit_mode(m, tr, X_tr, s.model, sf, qmask)
            X = X_te if m == "proactive" else np.concatenate([X_te, sf.transform([e.samples for e in te])], axis=1)
            raw = model.predict_raw(X)
            for key in ("prob", "size", "loglen"):
                oof[m][key][fold] = raw[key]
    dummy = Predictor(featurizer=get_featurizer("lexical", n_features=0), models={},
                      rules={m: DecisionRule() for m in modes}, size_target=s.model.size_target)
    out = {m: metrics(examples, oof[m], dummy, m) for m in modes}
    pos = np.array([e.y == 1 for e in examples]) & np.isfinite(const)
    if pos.any():
        f_true = np.array([e.fraction for e in examples])[pos]
        for m in modes:
            out[m]["size_mae_fraction_constant"] = round(float(np.abs(const[pos] - f_true).mean()), 4)
    out["folds"] = k
    out["train_items"] = round(float(np.mean(fitted_on)), 1) if fitted_on else 0.0  # per fold's model
    out["oof"] = {m: {"item_ids": [e.item_id for e in examples], "prob": oof[m]["prob"].round(5).tolist(),
                      "size": oof[m]["size"].round(5).tolist(), "loglen": oof[m]["loglen"].round(5).tolist()}
                  for m in modes}
    return out
