"""Fixtures: the signal store of `signal_store.py` (real GSM8K questions, labels with signal) and a
predictor trained on it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from signal_store import FAST_MODEL, build_store


@pytest.fixture(scope="session")
def signal_store(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("store") / "gsm8k_signal.sqlite")


@pytest.fixture(scope="session")
def signal_data(signal_store):
    from shepherd.predictor.data import load_store

    return load_store(signal_store, "gsm8k")


@pytest.fixture(scope="session")
def trained(signal_data, tmp_path_factory):
    """A predictor trained on the signal store (lexical features), saved to an artifact directory."""
    from shepherd.predictor.model import NetConfig
    from shepherd.predictor.train import TrainSettings, train

    settings = TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                             model=NetConfig(**FAST_MODEL), val_fraction=0.25, seed=0)
    pred, report = train(signal_data.examples, settings, grid=signal_data.grid,
                         sweep_settings=signal_data.sweep_settings,
                         source={"store": str(signal_data.store), "task": "gsm8k", "filter": True})
    out = tmp_path_factory.mktemp("artifact") / "predictor"
    pred.save(out)
    return pred, report, out
