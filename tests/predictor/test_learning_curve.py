"""The predictor's learning curve: same held-out items, a growing share of training items."""

from __future__ import annotations

import pytest
from signal_store import FAST_MODEL

from shepherd.predictor.learning_curve import learning_curve
from shepherd.predictor.model import NetConfig
from shepherd.predictor.train import TrainSettings, _stratified_share, cross_validate


def _settings(seed: int = 0) -> TrainSettings:
    return TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                         model=NetConfig(**FAST_MODEL), seed=seed)


def test_stratified_share_keeps_class_proportions(signal_data):
    ex = signal_data.examples
    idx = list(range(len(ex)))
    pos = sum(e.y for e in ex)
    share = _stratified_share(ex, idx, 0.5, seed=3)
    assert share == sorted(set(share)) and set(share) <= set(idx)
    assert sum(ex[i].y for i in share) == round(0.5 * pos)
    assert len(share) - sum(ex[i].y for i in share) == round(0.5 * (len(ex) - pos))
    assert share == _stratified_share(ex, idx, 0.5, seed=3) != _stratified_share(ex, idx, 0.5, seed=4)
    tiny = _stratified_share(ex, idx, 0.001, seed=0)  # never a class missing altogether
    assert sorted(ex[i].y for i in tiny) == [0, 1]


def test_a_smaller_training_share_fits_on_fewer_items_but_scores_every_item(signal_data):
    ex = signal_data.examples
    full = cross_validate(ex, _settings(), k=3)
    half = cross_validate(ex, _settings(), k=3, train_fraction=0.5)
    assert half["train_items"] == pytest.approx(full["train_items"] / 2, abs=1.0)
    assert full["train_items"] == pytest.approx(len(ex) * 2 / 3, abs=1.0)
    for mode in ("proactive", "reactive"):
        assert half["oof"][mode]["item_ids"] == [e.item_id for e in ex]
        assert all(0.0 < p < 1.0 for p in half["oof"][mode]["prob"])  # every item scored by a fitted model
        assert half[mode]["auc"] != full[mode]["auc"]
    with pytest.raises(ValueError, match="train_fraction"):
        cross_validate(ex, _settings(), k=3, train_fraction=0.0)


def test_curve_points_average_cross_validation_over_fold_assignments(signal_data):
    ex = signal_data.examples
    pts = learning_curve(ex, _settings(), (1.0, 0.3), k=3, repeats=2)
    assert [p.fraction for p in pts] == [0.3, 1.0]
    assert pts[0].train_items < pts[1].train_items
    runs = [cross_validate(ex, _settings(seed), k=3) for seed in (0, 1)]
    for mode in ("proactive", "reactive"):
        assert pts[1].auc[mode] == pytest.approx(sum(r[mode]["auc"] for r in runs) / 2)
    assert pts[1].auc["proactive"] > 0.6  # the signal store's labels are learnable
    assert pts[1].to_dict()["fraction"] == 1.0 and set(pts[1].to_dict()["auc"]) == {"proactive", "reactive"}
    for bad in ((), (0.0,), (1.2,)):
        with pytest.raises(ValueError, match="training shares"):
            learning_curve(ex, _settings(), bad)
    with pytest.raises(ValueError, match="folds"):
        learning_curve(ex, _settings(), (1.0,), k=1)


def test_train_command_reports_a_learning_curve(signal_store, tmp_path):
    import json

    from typer.testing import CliRunner

    from shepherd.cli import app

    base = ["train", "--store", str(signal_store), "--task", "gsm8k", "--epochs", "100", "--hidden", "0", "--cv", "3"]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--learning-curve", "0.5,1",
                                   "--select-repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    curve = report["learning_curve"]
    assert [p["fraction"] for p in curve] == [0.5, 1.0] and curve[0]["train_items"] < curve[1]["train_items"]
    assert curve[1]["auc"]["proactive"] == pytest.approx(report["cv"]["proactive"]["auc"], abs=1e-4)
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p"), "--learning-curve", "0.5,1",
                                   "--select-repeats", "1"])
    assert res.exit_code == 0 and "learning curve: share 0.5" in res.output
    for bad in ("half", "0.5,2"):
        res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "x"), "--learning-curve", bad])
        assert res.exit_code != 0 and ("--learning-curve" in res.output or "training shares" in res.output)
