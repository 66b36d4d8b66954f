"""Would more training items help? Out-of-fold AUC of "is a hint needed?" as the training share grows.

Every point scores the same held-out items (all of them, out of fold); only the share of each fold's
training items the model is fitted on changes. A curve still rising at the full share says the predictor
is data-starved; a flat one says more of the same items will not fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .data import Example
from .train import TrainSettings, cross_validate


@dataclass
class CurvePoint:
    fraction: float
    #: mean number of items each fold's model was fitted on
    train_items: float
    #: mode -> out-of-fold AUC, averaged over the fold assignments (modes that could not be scored are absent)
    auc: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "train_items": round(self.train_items, 1),
                "auc": {m: round(v, 4) for m, v in self.auc.items()}}


def learning_curve(examples: Sequence[Example], settings: TrainSettings,
                   fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0), *, k: int = 5,
                   repeats: int = 3) -> list[CurvePoint]:
    """One point per training share, each averaged over `repeats` fold assignments (seeds settings.seed + r)."""
    if not fractions:
        raise ValueError("no training shares given")
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"training shares must be in (0, 1], got {list(fractions)}")
    if k < 2 or repeats < 1:
        raise ValueError(f"need k >= 2 folds and repeats >= 1 (got k={k}, repeats={repeats})")
    examples = list(examples)
    points = []
    for f in sorted({float(x) for x in fractions}):
        per_mode: dict[str, list[float]] = {}
        sizes = []
        for r in range(repeats):
            cv = cross_validate(examples, replace(settings, seed=settings.seed + r), k=k, train_fraction=f)
            sizes.append(cv["train_items"])
            for mode, m in cv.items():
                if isinstance(m, dict) and m.get("auc") is not None and math.isfinite(m["auc"]):
                    per_mode.setdefault(mode, []).append(float(m["auc"]))
        points.append(CurvePoint(f, sum(sizes) / len(sizes), {m: sum(v) / len(v) for m, v in per_mode.items()}))
    return points
