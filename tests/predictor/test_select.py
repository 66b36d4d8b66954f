"""Choosing the predictor's recipe by cross-validation on training items only."""

from __future__ import annotations

import math

import pytest
from signal_store import FAST_MODEL

import shepherd.predictor.select as S
from shepherd.predictor.model import NetConfig
from shepherd.predictor.select import Candidate, select
from shepherd.predictor.train import TrainSettings, cross_validate


def _base() -> TrainSettings:
    return TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                         model=NetConfig(**FAST_MODEL), seed=0)


def test_scores_are_the_out_of_fold_auc_of_each_recipe(signal_data):
    cands = [Candidate("lexical", hidden=0, l2=0.1), Candidate("lexical", hidden=16, l2=0.1)]
    sel = select(signal_data.examples, cands, _base(), k=3, repeats=1)
    for cand, sc in zip(cands, sel.scores, strict=True):
        cv = cross_validate(signal_data.examples, cand.settings(_base()), k=3)
        assert sc.auc == {m: cv[m]["auc"] for m in ("proactive", "reactive")}
        assert sc.score == pytest.approx((cv["proactive"]["auc"] + cv["reactive"]["auc"]) / 2)
        assert sc.score > 0.6  # the signal store's labels are learnable
    assert sel.chosen == max(range(2), key=lambda i: (sel.scores[i].score, -i))
    d = sel.to_dict()
    assert d["chosen"] == sel.best.label and d["items"] == len(signal_data.examples) and len(d["candidates"]) == 2


def _scripted(table):
    """cross_validate stand-in: AUC from (l2, fold seed), to check the choosing, not the fitting."""
    def cv(examples, s, k=None, featurizer_spec=None):
        auc = table[(s.model.l2, s.seed)]
        return {"proactive": {"auc": auc}, "reactive": {"auc": auc}, "folds": k, "oof": {}}
    return cv


def test_scores_average_over_fold_assignments_and_ties_keep_the_first(monkeypatch):
    # l2=1 wins on seed 0 only; averaged over seeds 0 and 1, l2=2 is better
    monkeypatch.setattr(S, "cross_validate", _scripted({(1.0, 0): 0.9, (1.0, 1): 0.5, (2.0, 0): 0.7, (2.0, 1): 0.8,
                                                        (3.0, 0): 0.75, (3.0, 1): 0.75}))
    a, b, c = Candidate(l2=1.0), Candidate(l2=2.0), Candidate(l2=3.0)
    assert select([], [a], _base(), repeats=1).best == a
    sel = select([], [a, b], _base(), repeats=2)
    assert sel.best == b and [s.score for s in sel.scores] == pytest.approx([0.7, 0.75])
    assert select([], [c, b], _base(), repeats=2).best == c  # equal scores: the earlier one
    assert select([], [b, c], _base(), repeats=2).best == b


def test_unscorable_candidates(monkeypatch):
    monkeypatch.setattr(S, "cross_validate", _scripted({(1.0, 0): float("nan"), (2.0, 0): 0.6}))
    sel = select([], [Candidate(l2=1.0), Candidate(l2=2.0)], _base(), repeats=1)
    assert sel.chosen == 1 and sel.scores[0].score == -math.inf and "no out-of-fold AUC" in sel.notes[0]
    with pytest.raises(ValueError, match="no candidate could be scored"):
        select([], [Candidate(l2=1.0)], _base(), repeats=1)


def test_candidate_settings_and_bad_requests():
    a = Candidate("lexical", hidden=0, l2=0.5)
    s = a.settings(_base())
    assert (s.model.hidden, s.model.l2, s.model.epochs) == (0, 0.5, FAST_MODEL["epochs"])
    assert s.featurizer_config == {"n_features": 256}  # the base's settings for its own featurizer
    assert Candidate("minilm").settings(_base()).featurizer_config == {}
    with pytest.raises(ValueError, match="no predictor candidates"):
        select([], [], _base())
    with pytest.raises(ValueError, match="k >= 2"):
        select([], [Candidate()], _base(), k=1)


def test_parse_candidates():
    from shepherd.predictor.select import parse_candidates

    assert parse_candidates("lexical:16:0.1, minilm:0:1,lexical+minilm") == [
        Candidate("lexical", 16, 0.1), Candidate("minilm", 0, 1.0), Candidate("lexical+minilm", 16, 0.1)]
    (tok,) = parse_candidates("minilm:0:1:log_tokens")
    assert tok == Candidate("minilm", 0, 1.0, "log_tokens") and tok.label.endswith("size log_tokens")
    assert tok.settings(_base()).model.size_target == "log_tokens"
    # no size target named: the base settings' (so --size-target still applies to plain recipes)
    assert Candidate("minilm", 0, 1.0).settings(_base()).model.size_target == _base().model.size_target
    for bad, msg in (("lexical:x", "hidden must be an integer"), ("lexical:1:2:fraction:5", "featurizer\\[:hidden"),
                     ("lexical:1:2:3", "size_target must be one of"),
                     (":1", "featurizer\\[:hidden"), ("lexical:-1", ">= 0"), (" , ", "no predictor candidates")):
        with pytest.raises(ValueError, match=msg):
            parse_candidates(bad)


def test_train_command_selects_a_recipe(signal_store, tmp_path):
    import json

    from typer.testing import CliRunner

    from shepherd.cli import app
    from shepherd.predictor.predictor import Predictor

    out = tmp_path / "pred"
    res = CliRunner().invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out", str(out),
                                   "--epochs", "100", "--select", "lexical:0:0.1,lexical:16:0.1",
                                   "--select-repeats", "1", "--cv", "3", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    sel = report["selection"]
    best = max(sel["candidates"], key=lambda c: c["score"])
    assert sel["chosen"] == best["label"] and sel["folds"] == 3 and len(sel["candidates"]) == 2
    assert Predictor.load(out).manifest["training"]["settings"]["model"]["hidden"] == best["hidden"]
    assert sel["by"] == "auc" and set(sel["candidates"][0]["cost"]) == {"proactive", "reactive"}
    res = CliRunner().invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out",
                                   str(tmp_path / "c"), "--epochs", "100", "--select", "lexical:0:0.1,lexical:16:0.1",
                                   "--select-repeats", "1", "--cv", "3", "--select-by", "cost"])
    assert res.exit_code == 0, res.output
    assert "cost share proactive" in res.output
    res = CliRunner().invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out",
                                   str(tmp_path / "c"), "--select", "lexical", "--select-by", "price"])
    assert res.exit_code != 0 and "'auc' or 'cost'" in res.output
    res = CliRunner().invoke(app, ["train", "--store", str(signal_store), "--task", "gsm8k", "--out",
                                   str(tmp_path / "x"), "--select", "lexical:zero"])
    assert res.exit_code != 0 and "bad predictor candidate" in res.output


def test_decision_aware_cost_is_reported_and_matches_calibrating_the_out_of_fold_predictions(signal_data):
    ex = signal_data.examples
    cand = Candidate("lexical", hidden=0, l2=0.1)
    sel = select(ex, [cand], _base(), k=3, repeats=1, target=0.9)
    cv = cross_validate(ex, cand.settings(_base()), k=3)
    expect = S.oof_cost(ex, cv, "fraction", 0.9)
    assert sel.scores[0].cost == expect and set(expect) == {"proactive", "reactive"}
    assert all(c is None or 0.0 < c <= 1.0 + 1e-9 for c in expect.values())
    assert sel.target == 0.9 and sel.to_dict()["by"] == "auc"
    # the same number the calibration of a predictor trained with this recipe reaches on out-of-fold predictions
    from shepherd.predictor.calibrate import calibrate, oof_raw
    from shepherd.predictor.train import train

    pred, _ = train(ex, cand.settings(_base()), grid=signal_data.grid)
    raws = oof_raw(pred, ex, k=3)
    for mode in ("proactive", "reactive"):
        choice, _ = calibrate(pred, mode, ex, "accuracy", 0.9, scales=(1.0, 2.0, 3.0), raw=raws[mode])
        assert expect[mode] == (pytest.approx(choice.cost / choice.llm_cost) if choice.feasible else None)
    # a lower target never costs more: the cheapest setting reaching 90% also reaches 50%
    low = S.oof_cost(ex, cv, "fraction", 0.5)
    assert all(low[m] <= expect[m] for m in expect if expect[m] is not None)
    # without sweeps (or a target) there is no cost to report, and choosing by it is refused
    bare = [type(e)(**{**e.__dict__, "sweep": None}) for e in ex]
    assert select(bare, [cand], _base(), k=3, repeats=1).scores[0].cost == {}
    assert select(bare, [cand], _base(), k=3, repeats=1).alternative is None
    with pytest.raises(ValueError, match="needs an accuracy target and the items' sweeps"):
        select(bare, [cand], _base(), k=3, repeats=1, by="cost")
    with pytest.raises(ValueError, match="'auc' or 'cost'"):
        select(ex, [cand], _base(), by="price")


def test_choosing_by_cost_takes_the_cheapest_and_skips_unreached(monkeypatch, signal_data):
    ex = signal_data.examples[:10]
    table = {1.0: {"proactive": 0.8, "reactive": 0.7}, 2.0: {"proactive": 0.6, "reactive": 0.8},
             3.0: {"proactive": None, "reactive": 0.1}}
    monkeypatch.setattr(S, "cross_validate", lambda examples, s, k=None: {
        "proactive": {"auc": s.model.l2 / 10}, "reactive": {"auc": s.model.l2 / 10}, "oof": {}, "l2": s.model.l2})
    monkeypatch.setattr(S, "oof_cost", lambda examples, cv, size_target, target, **kw: dict(table[cv["l2"]]))
    cands = [Candidate(l2=1.0), Candidate(l2=2.0), Candidate(l2=3.0)]
    by_cost = select(ex, cands, _base(), repeats=2, by="cost")
    assert by_cost.best == cands[1]  # mean cost 0.7 beats 0.75; l2=3 is cheap but misses the target in a mode
    assert [s.score for s in by_cost.scores][:2] == pytest.approx([-0.75, -0.7])
    assert by_cost.scores[2].score == -math.inf and by_cost.scores[2].cost == {"proactive": None, "reactive": 0.1}
    assert any("not reached" in n for n in by_cost.notes)
    by_auc = select(ex, cands, _base(), repeats=1, by="auc")
    assert by_auc.best == cands[2]  # AUC would take l2=3
    # each selection names what the other criterion would have chosen (reported, never used)
    assert by_cost.alternative == cands[2].label and by_auc.alternative == cands[1].label
    assert by_auc.to_dict()["alternative"] == cands[1].label and by_auc.scores[2].score == pytest.approx(0.3)
    # a mode no candidate reaches the target in is left out of the comparison
    table.update({1.0: {"proactive": 0.8, "reactive": None}, 2.0: {"proactive": 0.6, "reactive": None},
                  3.0: {"proactive": 0.9, "reactive": None}})
    only_pro = select(ex, cands, _base(), repeats=1, by="cost")
    assert only_pro.best == cands[1] and [s.score for s in only_pro.scores] == pytest.approx([-0.8, -0.6, -0.9])
    table.update({1.0: {"proactive": None}, 2.0: {"proactive": None}, 3.0: {"proactive": None}})
    with pytest.raises(ValueError, match="not reached out of fold in any mode"):
        select(ex, cands, _base(), repeats=1, by="cost")
