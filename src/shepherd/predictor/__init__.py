"""The hint predictor: featurizers, the two-stage model, training and calibration.

Importing this package is light (no numpy, torch or sentence-transformers until a name is used):

    from shepherd.predictor import load_predictor, get_featurizer
    pred = load_predictor("runs/predictor")            # a directory written by `shepherd train`
    pred.decide("Natalia sold 48 clips ...")          # Prediction(kind="hint", hint_tokens=..., prob=...)

Training and calibration live in `shepherd.predictor.train` (`train(examples, TrainSettings(...))`) and
`shepherd.predictor.calibrate`; the CLI is `shepherd train` / `shepherd calibrate`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Featurizer": "features", "get_featurizer": "features", "featurizer_names": "features",
    "SampleFeaturizer": "features", "SampleInfo": "features", "normalize_answer": "features",
    "query_text": "features",
    "TwoStageModel": "model", "NetConfig": "model",
    "Predictor": "predictor", "DecisionRule": "predictor", "Prediction": "predictor",
    "load_predictor": "predictor", "ArtifactError": "predictor",
    "TrainSettings": "train", "auc": "train",
    "load_store": "data", "Example": "data", "examples_from_sweeps": "data",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'shepherd.predictor' has no attribute {name!r}")
    module = importlib.import_module(f".{mod}", __name__)
    return getattr(module, name)
