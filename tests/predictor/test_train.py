"""The predictor learns the signal in a trace store, not noise; artifacts round-trip exactly.

The store (see signal_store.py) is written by the real sweep driver over 240 real GSM8K train questions, with
labels that follow each question's number of solution steps. Metrics are out-of-fold over all items
(5 folds), which is steadier than a 60-item validation split.
"""

import json
import random
from dataclasses import replace

import numpy as np
import pytest
from signal_store import FAST_MODEL

from shepherd.predictor.data import fingerprint, kfold, split_items
from shepherd.predictor.model import NetConfig, TwoStageModel
from shepherd.predictor.predictor import ArtifactError, DecisionRule, Predictor, load_predictor
from shepherd.predictor.train import TrainSettings, auc, cross_validate, train


def test_auc_matches_definition():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in s[y == 1] for b in s[y == 0]])
    assert auc(y, s) == pytest.approx(pairs)


def test_split_is_seeded_by_item_and_stratified(signal_data):
    ex = signal_data.examples
    tr, va = split_items(ex, 0.25, seed=0)
    _, va2 = split_items(ex, 0.25, seed=0)
    assert [e.item_id for e in va] == [e.item_id for e in va2]
    assert not {e.item_id for e in tr} & {e.item_id for e in va}
    assert len(tr) + len(va) == len(ex)
    pos_rate = np.mean([e.y for e in ex])
    assert abs(np.mean([e.y for e in va]) - pos_rate) < 0.05
    _, va3 = split_items(ex, 0.25, seed=1)
    assert {e.item_id for e in va3} != {e.item_id for e in va}
    folds = kfold(ex, 5, 0)
    assert sorted(i for f in folds for i in f) == list(range(len(ex)))


def test_store_examples_and_labels(signal_data):
    ex = signal_data.examples
    assert len(ex) == 240
    kinds = {e.kind for e in ex}
    assert kinds <= {"none", "hint"}
    for e in ex:
        assert e.full_tokens > 0 and len(e.samples) == 3
        if e.kind == "hint":
            assert e.y == 1 and 0 < e.fraction < 1 and e.tokens > 0
        else:
            assert e.y == 0 and e.tokens == 0
    assert signal_data.grid[0] == 0.0 and 0.9 in signal_data.grid
    assert signal_data.sweep_settings["samples"] == 3


def _shuffled(examples, seed):
    rng = random.Random(seed)
    labels = [(e.kind, e.y, e.fraction, e.tokens) for e in examples]
    rng.shuffle(labels)
    return [replace(e, kind=k, y=y, fraction=f, tokens=t) for e, (k, y, f, t) in zip(examples, labels)]


def test_learns_signal_and_not_noise(signal_data):
    settings = TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                             model=NetConfig(**FAST_MODEL), cv=5, reactive=False)
    real = cross_validate(signal_data.examples, settings, k=5)["proactive"]
    assert real["auc"] > 0.65, real
    shuffled = [cross_validate(_shuffled(signal_data.examples, s), settings, k=5)["proactive"]["auc"]
                for s in (1, 2)]
    assert abs(np.mean(shuffled) - 0.5) < 0.08, shuffled
    assert real["auc"] > max(shuffled) + 0.1


def test_train_report_and_reactive_model(trained):
    pred, report, _ = trained
    assert report["modes"] == ["proactive", "reactive"]
    val = report["validation"]
    assert val["proactive"]["n"] == 60
    assert val["proactive"]["auc"] > 0.6
    # the samples carry most of this store's signal: agreement means the SLM can do it alone
    assert val["reactive"]["auc"] > 0.85
    # the size head beats a constant fraction; the length head knows long questions get long answers
    assert val["proactive"]["size_mae_fraction"] <= val["proactive"]["size_mae_fraction_constant"] + 0.01
    assert val["proactive"]["length_mape"] < 0.5
    # lexical columns come pre-scaled (L2-normalised TF-IDF, z-scored counts): the model leaves them
    assert np.all(pred.models["proactive"].sd == 1.0) and np.all(pred.models["proactive"].mu == 0.0)
    # the sample features of the reactive model are z-scored
    assert np.any(pred.models["reactive"].sd[-11:] != 1.0)
    tr = pred.manifest["training"]
    split = tr["validation_split"]
    assert len(split["val_ids"]) == 60 and len(split["train_ids"]) == 180
    assert tr["fitted_on_items"] == report["fitted_on_items"] == 240  # the deployed model saw every item
    assert len(tr["fingerprint"]) == 64


def test_the_deployed_model_is_fitted_on_every_item(signal_data):
    """The validation split only shapes the report: two trainings that hold out different items deploy the
    same model (it once held out a quarter of the kept items for good)."""
    settings = TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                             model=NetConfig(**FAST_MODEL), val_fraction=0.25, reactive=False)
    a, ra = train(signal_data.examples, replace(settings, seed=0))
    b, rb = train(signal_data.examples, replace(settings, seed=1))
    assert ra["validation"] != rb["validation"]  # different held-out items in the report
    texts = [e.text for e in signal_data.examples]
    pa = a.raw("proactive", a.inputs("proactive", texts=texts))["prob"]
    pb = b.raw("proactive", b.inputs("proactive", texts=texts))["prob"]
    np.testing.assert_allclose(pa, pb, rtol=1e-6, atol=1e-9)


def test_fingerprint_tracks_data(signal_data):
    ex = signal_data.examples
    fp = fingerprint(ex)
    assert fp == fingerprint(list(reversed(ex)))
    assert fp != fingerprint(_shuffled(ex, 3))
    assert fp != fingerprint(ex[:-1])


def test_save_load_round_trip_identical_decisions(trained, signal_data):
    pred, _, path = trained
    loaded = Predictor.load(path)
    texts = [e.text for e in signal_data.examples]
    samples = [e.samples for e in signal_data.examples]
    for mode in ("proactive", "reactive"):
        X1 = pred.inputs(mode, texts, samples)
        X2 = loaded.inputs(mode, texts, samples)
        assert np.array_equal(X1, X2)
        r1, r2 = pred.raw(mode, X1), loaded.raw(mode, X2)
        for k in ("prob", "size", "loglen"):
            assert np.array_equal(r1[k], r2[k])
        d1 = pred.predict(mode, texts, samples)
        d2 = loaded.predict(mode, texts, samples)
        assert [(d.kind, d.hint_tokens) for d in d1] == [(d.kind, d.hint_tokens) for d in d2]
        kinds = {d.kind for d in d1}
        assert "slm" in kinds and "hint" in kinds  # it does decide, both ways
    m = json.loads((path / "manifest.json").read_text())
    assert m["format"] == "shepherd-predictor" and m["version"] == 1
    assert m["featurizer"]["name"] == "lexical" and m["featurizer"]["config"]["n_features"] == 256
    assert m["label_grid"] == signal_data.grid
    assert m["training"]["fingerprint"] == fingerprint(signal_data.examples)
    assert m["sweep_settings"]["temperature"] == 0.7
    with np.load(path / "arrays.npz", allow_pickle=False) as z:  # plain arrays, no pickled objects
        assert "proactive.W1" in z.files and "featurizer.idf" in z.files
    assert load_predictor(path) is load_predictor(path)  # cached per process


def test_artifact_errors(tmp_path, trained):
    with pytest.raises(ArtifactError, match="not a predictor artifact"):
        Predictor.load(tmp_path)
    _, _, path = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "arrays.npz").write_bytes((path / "arrays.npz").read_bytes())
    m = json.loads((path / "manifest.json").read_text())
    m["version"] = 99
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="newer"):
        Predictor.load(bad)


def test_decision_rule():
    pred = Predictor(featurizer=None, models={}, rules={}, grid=[0.0, 0.1, 0.2, 0.5, 0.9])  # type: ignore[arg-type]
    rule = DecisionRule(threshold=0.5, scale=1.0, cap=0.95)
    assert pred.apply_rule(0.4, 0.3, 100, rule).kind == "slm"
    p = pred.apply_rule(0.6, 0.15, 100, rule)
    assert (p.kind, p.hint_fraction, p.hint_tokens) == ("hint", 0.2, 20)  # snapped up to the grid
    p = pred.apply_rule(0.6, 0.15, 100, rule.with_overrides(snap_to_grid=False, scale=2.0))
    assert (p.kind, p.hint_tokens) == ("hint", 30)
    assert pred.apply_rule(0.6, 0.92, 100, rule).kind == "llm"  # past the last grid level -> 1.0 >= cap
    assert pred.apply_rule(0.6, 0.5, 100, rule.with_overrides(cap=0.5)).kind == "llm"
    assert pred.apply_rule(0.9, 0.0, 100, rule.with_overrides(snap_to_grid=False)).hint_tokens == 1  # min_tokens
    with pytest.raises(ValueError):
        DecisionRule(threshold=2.0)


def test_joint_loss_lambda_extremes(signal_data):
    """lambda = 1 trains only the classifier; lambda = 0 only the size head (positives)."""
    ex = signal_data.examples
    from shepherd.predictor.features import get_featurizer

    f = get_featurizer("lexical", n_features=64).fit([e.text for e in ex])
    X = f.transform([e.text for e in ex])
    y = np.array([e.y for e in ex])
    size = np.array([e.fraction for e in ex])
    cls_only = TwoStageModel(hidden=0, lam=1.0, epochs=100, l2=0.0).fit(X, y, size)
    size_only = TwoStageModel(hidden=0, lam=0.0, epochs=100, l2=0.0).fit(X, y, size)
    # one step from the same seeded init: the head without loss gets no gradient at all
    init_c = TwoStageModel(hidden=0, lam=1.0, epochs=1, l2=0.0).fit(X, y, size)
    init_s = TwoStageModel(hidden=0, lam=0.0, epochs=1, l2=0.0).fit(X, y, size)
    assert np.array_equal(cls_only.params["ws"], init_c.params["ws"])  # size head untouched
    assert np.array_equal(size_only.params["wc"], init_s.params["wc"])  # classifier untouched
    assert not np.array_equal(cls_only.params["wc"], init_c.params["wc"])
    assert auc(y, cls_only.predict_raw(X)["prob"]) > 0.6
    pos = y == 1
    mae_trained = np.abs(size_only.predict_raw(X)["size"][pos] - size[pos]).mean()
    mae_cls = np.abs(cls_only.predict_raw(X)["size"][pos] - size[pos]).mean()
    assert mae_trained < mae_cls


def test_class_weighting_balances_rare_positives(signal_data):
    """With positives made rare (1 in 6), the balanced model still ranks them and flags some."""
    ex = signal_data.examples
    keep = [e for e in ex if e.y == 0] + [e for e in ex if e.y == 1][:16]
    from shepherd.predictor.features import get_featurizer

    f = get_featurizer("lexical", n_features=0).fit([e.text for e in keep])
    X = f.transform([e.text for e in keep])
    y = np.array([e.y for e in keep])
    size = np.array([e.fraction for e in keep])
    balanced = TwoStageModel(hidden=0, epochs=200).fit(X, y, size).predict_raw(X)["prob"]
    unweighted = TwoStageModel(hidden=0, epochs=200, pos_weight=1.0).fit(X, y, size).predict_raw(X)["prob"]
    assert (balanced >= 0.5).sum() > (unweighted >= 0.5).sum()
    assert (balanced[y == 1] >= 0.5).mean() > 0.5




@pytest.mark.slow
@pytest.mark.slow  # needs the embeddings extra (installed by .ci/run)
async def test_minilm_artifact_and_policy(signal_data, tmp_path):
    """The embedding featurizer trains, saves (config only: nothing fitted), loads, and decides off the
    event loop inside the policy."""
    from shepherd.models.base import GenerationRequest
    from shepherd.models.scripted import ScriptedBackend
    from shepherd.policies.base import PolicyContext
    from shepherd.policies.registry import make_policy

    ex = signal_data.examples[:80]
    pred, report = train(ex, TrainSettings(featurizer="minilm", model=NetConfig(**FAST_MODEL), reactive=False))
    assert report["featurizer"]["name"] == "minilm"
    assert (pred.models["proactive"].sd != 1.0).mean() > 0.9  # embeddings are z-scored (lexical ones not)
    pred.save(tmp_path / "m")
    loaded = Predictor.load(tmp_path / "m")
    texts = [e.text for e in ex[:10]]
    assert [(p.kind, p.hint_tokens) for p in pred.predict("proactive", texts)] == \
        [(p.kind, p.hint_tokens) for p in loaded.predict("proactive", texts)]
    policy = make_policy("proactive", artifact=str(tmp_path / "m"))
    d = await policy.decide(PolicyContext(request=GenerationRequest.create(texts[0]), slm=ScriptedBackend(),
                                          llm=ScriptedBackend()))
    assert d.kind == loaded.decide(texts[0]).kind


def test_samples_with_token_confidence_train_a_reactive_model_that_reads_it(signal_data, tmp_path):
    """Examples whose samples carry confidence features (traces scored with log-probabilities) train a
    reactive model with the extra columns; the artifact restores them, and its decisions reload identical.
    Here the confidence is made to carry the label (a doubtful SLM needs the hint), so the reactive model's
    out-of-fold AUC must rise above the same model's without it."""
    from shepherd.predictor.features import SampleInfo

    rng = random.Random(0)
    ex = []
    for e in signal_data.examples:
        base = -0.9 if e.y else -0.2
        samples = [SampleInfo(*s[:5], tuple(base + rng.gauss(0, 0.15) for _ in range(3))) for s in e.samples]
        ex.append(replace(e, samples=samples))
    settings = TrainSettings(featurizer="lexical", featurizer_config={"n_features": 256},
                             model=NetConfig(**FAST_MODEL), val_fraction=0.25, seed=0, cv=4)
    pred, report = train(ex, settings, grid=signal_data.grid)
    assert pred.sample_featurizer.confidence and "lowest_window16_min" in pred.sample_featurizer.feature_names
    plain, plain_report = train(signal_data.examples, settings, grid=signal_data.grid)
    assert not plain.sample_featurizer.confidence
    assert report["cv"]["reactive"]["auc"] > plain_report["cv"]["reactive"]["auc"]
    path = pred.save(tmp_path / "p")
    loaded = Predictor.load(path)
    assert loaded.sample_featurizer.dim == pred.sample_featurizer.dim
    texts, samples = [e.text for e in ex], [e.samples for e in ex]
    assert [(d.kind, d.hint_tokens) for d in pred.predict("reactive", texts, samples)] == \
           [(d.kind, d.hint_tokens) for d in loaded.predict("reactive", texts, samples)]
