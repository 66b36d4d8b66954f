"""Calibration on held-out traces, and the `shepherd train` / `shepherd calibrate` commands."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from shepherd.cli import app
from shepherd.predictor.calibrate import calibrate, choose, outcome, simulate
from shepherd.predictor.predictor import Predictor


def _val(pred, data):
    ids = set(pred.manifest["training"]["validation_split"]["val_ids"])
    return [e for e in data.examples if e.item_id in ids]


def test_outcomes_read_off_the_sweep(signal_data):
    e = next(e for e in signal_data.examples if e.kind == "hint")
    s = e.sweep
    assert outcome(s, "slm", 0).correct is False  # it needs a hint
    assert outcome(s, "llm", 0).correct is True
    assert outcome(s, "hint", e.tokens).correct is True  # n* passes
    assert outcome(s, "hint", e.tokens).llm_tokens == e.tokens
    assert outcome(s, "hint", 1).llm_tokens == min(lv.hint_tokens for lv in s.levels if lv.hint_tokens > 0)
    past = outcome(s, "hint", s.full_tokens + 5)
    assert past.kind == "hint->llm" and past.cost == outcome(s, "llm", 0).cost
    assert outcome(s, "slm", 0).cost == 0.0  # the SLM is free at the paper's prices


def test_curve_is_monotone_in_threshold(trained, signal_data):
    pred, _, _ = trained
    val = _val(pred, signal_data)
    curve = simulate(pred, "proactive", val, thresholds=[0.0, 0.5, 1.0 + 1e-9], scales=[1.0])
    # threshold 0: every query hinted (or LLM); above 1: SLM alone, free and as accurate as the SLM
    assert curve.cost[0, 0] > curve.cost[0, 1] > curve.cost[0, 2] == 0.0
    assert curve.accuracy[0, 2] == pytest.approx(curve.slm_accuracy)
    assert curve.accuracy[0, 0] >= curve.accuracy[0, 2]
    assert curve.llm_accuracy == 1.0  # filtered labels: the LLM is right on every kept item


@pytest.mark.parametrize("mode", ["proactive", "reactive"])
def test_calibrate_meets_targets(trained, signal_data, mode):
    pred, _, _ = trained
    val = _val(pred, signal_data)
    for target in (0.9, 0.8):
        choice, curve = calibrate(pred, mode, val, "accuracy", target, scales=(1.0, 1.5, 2.0, 3.0))
        assert choice.feasible and choice.accuracy >= target * choice.llm_accuracy - 1e-12
        # nothing cheaper on the curve reaches the target
        ok = curve.accuracy >= target * curve.llm_accuracy - 1e-12
        assert choice.cost == pytest.approx(curve.cost[ok].min())
        assert choice.cost < choice.llm_cost
    budget = 0.3 * curve.llm_cost
    choice, curve = calibrate(pred, mode, val, "budget", budget)
    assert choice.cost <= budget and choice.accuracy == pytest.approx(curve.accuracy[curve.cost <= budget].max())
    unreachable = choose(curve, "accuracy", 1.5)
    assert not unreachable.feasible and unreachable.accuracy == pytest.approx(curve.accuracy.max())


def test_train_and_calibrate_commands(signal_store, tmp_path):
    out = tmp_path / "pred"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out", str(out),
                              "--epochs", "150", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["items"] == report["fitted_on_items"] == 240 and report["val_items"] == 60
    assert report["validation"]["proactive"]["auc"] > 0.6
    assert report["validation"]["reactive"]["auc"] > 0.8
    assert (out / "manifest.json").is_file()

    res = runner.invoke(app, ["calibrate", "--artifact", str(out), "--accuracy", "0.9",
                              "--json"])
    assert res.exit_code == 0, res.output
    chosen = json.loads(res.stdout)
    assert set(chosen) == {"proactive", "reactive"}
    loaded = Predictor.load(out)
    for mode in ("proactive", "reactive"):
        assert loaded.rules[mode].threshold == chosen[mode]["threshold"]
        assert loaded.rules[mode].scale == chosen[mode]["scale"]
        cal = loaded.manifest["calibration"][mode]
        assert cal["target"] == "accuracy" and cal["value"] == 0.9 and cal["held_out"] == "oof"
        # out of fold the target may be out of reach: then the most accurate setting, and it says so
        assert cal["feasible"] == (cal["relative_accuracy"] >= 0.9 - 1e-9)

    # out-of-fold calibration over every item (for small stores); --dry-run leaves the artifact alone
    before = (out / "manifest.json").read_text()
    res = runner.invoke(app, ["calibrate", "--artifact", str(out), "--budget-ratio", "0.5", "--held-out", "oof",
                              "--folds", "3", "--policy", "proactive", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    oof = json.loads(res.stdout)["proactive"]
    assert oof["n_items"] == 240 and oof["feasible"] and oof["relative_cost"] <= 0.5
    assert (out / "manifest.json").read_text() == before

    res = runner.invoke(app, ["calibrate", "--artifact", str(out), "--accuracy", "0.9", "--held-out", "val"])
    assert res.exit_code != 0 and "--held-out oof" in " ".join(res.output.split())
    res = runner.invoke(app, ["calibrate", "--artifact", str(out), "--accuracy", "0.9", "--budget", "1"])
    assert res.exit_code != 0 and "exactly one target" in res.output
    res = runner.invoke(app, ["train", "--store", str(tmp_path / "nope.sqlite"), "--task", "gsm8k",
                              "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "not found" in res.output


def test_same_seed_same_artifact(signal_store, tmp_path):
    """Training is deterministic: the same store and seed give the same weights."""
    runner = CliRunner()
    arrays = []
    for name in ("a", "b"):
        res = runner.invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out",
                                  str(tmp_path / name), "--epochs", "50", "--no-reactive", "--json"])
        assert res.exit_code == 0, res.output
        with np.load(tmp_path / name / "arrays.npz") as z:
            arrays.append({k: z[k] for k in z.files})
    assert arrays[0].keys() == arrays[1].keys()
    for k in arrays[0]:
        assert np.array_equal(arrays[0][k], arrays[1][k]), k
