"""How a predictor is trained: the one chain that `shepherd train`, `shepherd eval` and `shepherd study` all
run, so that a predictor means the same thing whichever command made it.

    (choose the recipe out of fold) -> train (deployed model on every item) -> (learning curve)
        -> (calibrate threshold and hint scale out of fold)

Each step in parentheses runs only when asked for. Nothing here reads a store or writes files: callers hand
in labelled examples (`predictor.data`) and save the predictor themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..costs import FREE, PAPER_LLM_PRICE, Price
from .data import Example
from .predictor import Predictor
from .train import TrainSettings, train


@dataclass
class Selecting:
    """Choose the recipe among `candidates` (`predictor.select`) before training."""

    candidates: Sequence[Any]
    k: int = 5
    repeats: int = 3
    by: str = "auc"
    target: float | None = 0.9
    scales: Sequence[float] = (1.0, 2.0, 3.0)
    llm_price: Price = PAPER_LLM_PRICE


@dataclass
class Calibrating:
    """Pick each mode's threshold and hint scale for `target_accuracy` (a share of LLM-only accuracy), out of
    fold on the training items, as a deployment would."""

    target_accuracy: float
    scales: Sequence[float] = (1.0, 2.0, 3.0)
    folds: int = 5
    llm_price: Price = PAPER_LLM_PRICE
    slm_price: Price = FREE


@dataclass
class Trained:
    predictor: Predictor
    #: `train`'s report
    report: dict[str, Any]
    #: the settings the predictor was trained with (the chosen recipe's, when one was chosen)
    settings: TrainSettings
    selection: Any = None
    curve: list[Any] | None = None
    #: mode -> the calibration choice applied to the predictor
    calibration: dict[str, Any] = field(default_factory=dict)


def fit_predictor(examples: Sequence[Example], settings: TrainSettings, *, grid: Sequence[float] = (),
                  sweep_settings: dict[str, Any] | None = None, source: dict[str, Any] | None = None,
                  selecting: Selecting | None = None, curve_shares: Sequence[float] | None = None,
                  curve_folds: int = 5, curve_repeats: int = 3, calibrating: Calibrating | None = None,
                  log: Callable[[str], None] = lambda m: None) -> Trained:
    """Run the chain on `examples` and return the trained (and, if asked, calibrated) predictor."""
    selection = None
    if selecting is not None and selecting.candidates:
        from .select import select

        log(f"choosing the predictor's recipe among {len(selecting.candidates)} by cross-validation on "
            f"{len(examples)} training items")
        selection = select(examples, list(selecting.candidates), settings, k=selecting.k, repeats=selecting.repeats,
                           by=selecting.by, target=selecting.target, scales=selecting.scales,
                           llm_price=selecting.llm_price)
        settings = selection.best.settings(settings)
        log(f"chosen: {selection.best.label}")
    log(f"training the predictor on {len(examples)} labelled items ({settings.featurizer})")
    predictor, report = train(examples, settings, grid=grid, sweep_settings=sweep_settings, source=source)
    curve = None
    if curve_shares:
        from .learning_curve import learning_curve

        log(f"learning curve of the predictor at training shares {list(curve_shares)}")
        curve = learning_curve(examples, settings, curve_shares, k=curve_folds, repeats=curve_repeats)
    calibration = calibrate_out_of_fold(predictor, examples, calibrating, log) if calibrating else {}
    return Trained(predictor, report, settings, selection, curve, calibration)


def calibrate_out_of_fold(predictor: Predictor, examples: Sequence[Example], c: Calibrating,
                          log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Each mode's choice for `c.target_accuracy`, scored by refits that never saw the item, applied to the
    predictor (its decision rule and its manifest's calibration record)."""
    from .calibrate import apply_choice, calibrate, oof_raw

    out: dict[str, Any] = {}
    raws = oof_raw(predictor, list(examples), k=c.folds)
    for mode in ("proactive", "reactive"):
        if not predictor.has(mode):
            continue
        choice, _ = calibrate(predictor, mode, list(examples), "accuracy", c.target_accuracy, scales=c.scales,
                              raw=raws.get(mode), llm_price=c.llm_price, slm_price=c.slm_price)
        apply_choice(predictor, mode, choice, {"held_out": "oof", "target_accuracy": c.target_accuracy,
                                               "scales": list(c.scales)})
        out[mode] = choice
        log(f"calibrated {mode}: threshold {choice.threshold:.4f}, scale {choice.scale:g}")
    return out


def without_cv(settings: TrainSettings) -> TrainSettings:
    """The same recipe, with no cross-validation report (a refit whose metrics nobody reads)."""
    return replace(settings, cv=0)
