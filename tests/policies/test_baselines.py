"""Every baseline's decisions on a small trace store (scripted models, known outcomes), live and in
replay, and the learned baselines' artifacts (JSON + .npz, no pickle)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
from eval_fakes import FakeMath, build_store, is_hard, llm_wrong, models, samples_agree_wrong

from shepherd.evaluation.replay import replay
from shepherd.policies import make_policy
from shepherd.policies.baselines import (
    ABC,
    FixedRatio,
    FrugalGPT,
    GraphRouter,
    KNNRouter,
    RandomMix,
    RouteLLMClassifier,
    RouteLLMMF,
)
from shepherd.routers.learned import fit_baseline, load_baseline, rows_from_sweeps
from shepherd.runner import Runner, RunSettings

N = 24


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    store, task, _ = build_store(tmp_path_factory.mktemp("store") / "fake.sqlite", n=N)
    sweeps = store.item_sweeps(task.name)
    return store, task, sweeps


@pytest.fixture(scope="module")
def scorers(swept):
    _, _, sweeps = swept
    return {k: fit_baseline(k, sweeps, featurizer="lexical", settings={"k": 3} if k == "graphrouter" else None)
            for k in ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt")}


def _replay(policy, swept):
    store, task, _ = swept
    return {r.item_id: r for r in replay(policy, task, task.load(), store)}


def _idx(item_id):
    return int(item_id.split("/")[1])


def test_training_rows_come_from_the_sweeps(swept):
    _, _, sweeps = swept
    rows = rows_from_sweeps(sweeps)
    assert len(rows) == N
    for r in rows:
        i = _idx(r.item_id)
        assert r.slm_correct == (not is_hard(i))
        assert r.llm_correct == (not llm_wrong(i))
        assert len(r.samples) == 3
        assert r.query.startswith("Tricky" if is_hard(i) else "Simple")


@pytest.mark.parametrize("cls,kind", [(RouteLLMClassifier, "routellm-classifier"), (RouteLLMMF, "routellm-mf"),
                                      (GraphRouter, "graphrouter"), (KNNRouter, "knn")])
def test_routers_send_hard_queries_to_the_llm_in_replay(swept, scorers, cls, kind):
    recs = _replay(cls(scorers[kind]), swept)
    for iid, r in recs.items():
        want = "llm" if is_hard(_idx(iid)) else "slm"
        assert r.answer.decision.kind == want, (kind, iid, r.answer.decision)
        assert "score" in r.answer.decision.details
        # a router pays for one model only
        assert r.answer.usage["slm" if want == "llm" else "llm"].calls == 0
    # easy items are right (the SLM); routed hard ones unless the LLM itself is wrong
    assert all(r.correct == (not (is_hard(_idx(i)) and llm_wrong(_idx(i)))) for i, r in recs.items())


@pytest.mark.parametrize("cls,kind", [(RouteLLMClassifier, "routellm-classifier"), (RouteLLMMF, "routellm-mf"),
                                      (GraphRouter, "graphrouter"), (KNNRouter, "knn"), (FrugalGPT, "frugalgpt")])
def test_knob_ends_are_all_slm_and_all_llm(swept, scorers, cls, kind):
    none = _replay(cls(scorers[kind], llm_fraction=0.0), swept)
    every = _replay(cls(scorers[kind], llm_fraction=1.0), swept)
    assert {r.answer.decision.kind for r in none.values()} == {"slm"}
    assert {r.answer.decision.kind for r in every.values()} == {"llm"}
    # with_threshold shares the fitted model
    p = cls(scorers[kind])
    q = p.with_threshold(123.0)
    assert q.scorer is p.scorer and q.threshold == 123.0 and p.threshold != 123.0


def test_frugalgpt_pays_for_the_slm_then_escalates_doubtful_answers(swept, scorers):
    recs = _replay(FrugalGPT(scorers["frugalgpt"]), swept)
    for iid, r in recs.items():
        d = r.answer.decision
        assert d.spent and d.spent[0][0] == "slm"  # the SLM's answer is always paid for
        assert r.answer.usage["slm"].calls == 1
        if is_hard(_idx(iid)):
            assert d.kind == "llm" and r.answer.usage["llm"].calls == 1
        else:
            assert d.kind == "slm" and d.answer_text == d.spent[0][1].text and r.correct
            assert r.answer.usage["llm"].calls == 0


def test_abc_escalates_on_disagreement(swept):
    recs = _replay(ABC(k=3), swept)
    for iid, r in recs.items():
        i = _idx(iid)
        d = r.answer.decision
        assert len(d.spent) == 3 and all(role == "slm" for role, _ in d.spent)
        if not is_hard(i) or samples_agree_wrong(i):
            assert d.kind == "slm" and d.details["agreeing"] == 3
            assert r.correct == (not is_hard(i))  # agreeing on a wrong answer stays wrong
        else:
            assert d.kind == "llm" and d.details["agreeing"] == 1
    # 1 of 3: any answer is a majority of itself, nothing escalates; k=2 uses two samples
    low = _replay(ABC(k=3, agree=1), swept)
    assert {r.answer.decision.kind for r in low.values()} == {"slm"}
    two = _replay(ABC(k=2), swept)
    assert all(len(r.answer.decision.spent) == 2 for r in two.values())


def test_abc_counts_the_greedy_answer_as_one_more_voter(swept):
    """3 of 4: the SLM's greedy answer (the sweep's no-hint level, so replay has it) votes with 3 samples."""
    recs = _replay(ABC(k=3, agree=3, greedy_voter=True), swept)
    for iid, r in recs.items():
        d = r.answer.decision
        assert len(d.spent) == 4 and d.details["voters"] == 4 and d.spent[0][1].finish_reason
        if not is_hard(_idx(iid)):
            assert d.kind == "slm" and d.details["agreeing"] == 4 and "greedy + 3 samples" in d.reason
        else:
            assert (d.kind == "slm") == (d.details["agreeing"] >= 3)
    assert ABC(k=3, agree=4, greedy_voter=True).describe()["greedy_voter"] is True
    with pytest.raises(ValueError):
        ABC(k=3, agree=5, greedy_voter=True)


def test_abc_live_on_scripted_models_matches_replay(swept):
    _, task, _ = swept
    slm, llm = models()
    runner = Runner(slm, llm, settings=RunSettings(max_tokens=64))
    replayed = _replay(ABC(k=3), swept)
    for item in task.load()[:6]:
        req = runner.build_request(task.messages(item))
        import asyncio

        ans = asyncio.run(runner.answer(req, ABC(k=3), item=item))
        assert ans.decision.kind == replayed[item.id].answer.decision.kind
        assert ans.text == replayed[item.id].answer.text


@pytest.mark.parametrize("cls,kind", [(RouteLLMClassifier, "routellm-classifier"), (RouteLLMMF, "routellm-mf"),
                                      (GraphRouter, "graphrouter"), (KNNRouter, "knn"), (FrugalGPT, "frugalgpt")])
def test_learned_baselines_live_decide_as_in_replay(swept, scorers, cls, kind):
    import asyncio

    _, task, _ = swept
    slm, llm = models()
    runner = Runner(slm, llm, settings=RunSettings(max_tokens=64))
    replayed = _replay(cls(scorers[kind]), swept)
    for item in task.load()[:6]:
        ans = asyncio.run(runner.answer(runner.build_request(task.messages(item)), cls(scorers[kind]), item=item))
        assert ans.decision.kind == replayed[item.id].answer.decision.kind
        assert ans.text == replayed[item.id].answer.text
        if kind == "frugalgpt" and ans.decision.kind == "llm":  # paid for both models
            assert ans.usage["slm"].calls == 1 and ans.usage["llm"].calls == 1


def test_random_mix_is_deterministic_and_respects_p(swept):
    zero = _replay(RandomMix(p=0.0), swept)
    one = _replay(RandomMix(p=1.0), swept)
    assert {r.answer.decision.kind for r in zero.values()} == {"slm"}
    assert {r.answer.decision.kind for r in one.values()} == {"llm"}
    half1 = _replay(RandomMix(p=0.5, seed=1), swept)
    half2 = _replay(RandomMix(p=0.5, seed=1), swept)
    kinds = [r.answer.decision.kind for r in half1.values()]
    assert kinds == [r.answer.decision.kind for r in half2.values()]
    assert 4 <= kinds.count("llm") <= 20


def test_fixed_ratio_uses_the_sweep_length_and_lands_on_the_grid(swept):
    _, _, sweeps = swept
    lengths = {s.item_id: s.full_tokens for s in sweeps}
    recs = _replay(FixedRatio(0.3, lengths=lengths), swept)
    for iid, r in recs.items():
        L = lengths[iid]
        assert r.answer.decision.kind == "hint"
        assert r.answer.decision.hint_tokens == int(0.3 * L + 0.5) == 6
        assert r.mapped == [] or r.mapped[0].served_tokens == 6
        assert r.correct == (not llm_wrong(_idx(iid)))  # 6 words >= the 5 the SLM needs
    # 0.1 of 20 = 2 words: not enough for hard items
    low = _replay(FixedRatio(0.1, lengths=lengths), swept)
    assert all(r.correct == (not is_hard(_idx(i))) for i, r in low.items())
    # without lengths (live), the expected length is used
    live = FixedRatio(0.5, expected_tokens=10)
    import asyncio

    from shepherd.policies.base import PolicyContext

    d = asyncio.run(live.decide(PolicyContext(request=None, slm=None, llm=None)))
    assert d.hint_tokens == 5 and d.details["L_source"] == "expected"
    assert asyncio.run(FixedRatio(1.0).decide(PolicyContext(None, None, None))).kind == "llm"


def test_learned_baselines_save_and_load_without_pickle(swept, scorers, tmp_path):
    _, _, sweeps = swept
    rows = rows_from_sweeps(sweeps)
    for kind, sc in scorers.items():
        out = sc.save(tmp_path / kind)
        assert sorted(p.name for p in out.iterdir()) == ["arrays.npz", "baseline.json"]
        manifest = json.loads((out / "baseline.json").read_text())
        assert manifest["kind"] == kind and manifest["format"] == "shepherd-baseline"
        assert manifest["training"]["items"] == N and len(manifest["training"]["fingerprint"]) == 64
        # the npz holds plain arrays only: it loads with allow_pickle=False
        import numpy as np

        with np.load(out / "arrays.npz", allow_pickle=False) as z:
            assert all(z[k].dtype != object for k in z.files)
        back = load_baseline(out)
        assert back.fingerprint == sc.fingerprint
        assert back.needs(rows) == pytest.approx(sc.needs(rows))
        assert back.calibration == pytest.approx(sc.calibration)
        # a policy from the artifact path decides as the in-memory one
        pol = make_policy(kind, artifact=str(out))
        assert pol.threshold == sc.default_threshold
        assert pol.describe()["baseline_fingerprint"] == sc.fingerprint


def test_training_records_out_of_fold_calibration(scorers):
    for kind, sc in scorers.items():
        t = sc.training
        assert t["calibration"] == "out-of-fold"
        assert len(sc.calibration) == N
        # the signal is in the wording: the held-out AUC is high for the query routers
        if kind in ("routellm-classifier", "graphrouter", "knn", "frugalgpt"):
            assert t["oof_auc"] >= 0.8, (kind, t["oof_auc"])


def test_registry_knows_the_baselines():
    from shepherd.policies import policy_names

    names = policy_names()
    for n in ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt", "abc", "random-mix",
              "fixed-ratio"):
        assert n in names
    assert make_policy("abc", k=2, agree=1).describe()["k"] == 2
    with pytest.raises(ValueError):
        make_policy("routellm-mf")  # needs an artifact
    with pytest.raises(ValueError):
        make_policy("random-mix", p=2.0)


def test_wrong_kind_of_artifact_is_refused(scorers, tmp_path):
    out = scorers["routellm-mf"].save(tmp_path / "mf")
    with pytest.raises(ValueError, match="not 'graphrouter'"):
        GraphRouter(str(out))
    with pytest.raises(ValueError):
        RouteLLMClassifier(scorers["routellm-classifier"], threshold=0.5, llm_fraction=0.5)


def test_oracles_in_replay_bound_the_baselines(swept):
    from shepherd.policies.oracles import OracleCascade, OracleRouting

    _, _, sweeps = swept
    route = _replay(OracleRouting(sweeps), swept)
    casc = _replay(OracleCascade(sweeps), swept)
    for iid, r in route.items():
        i = _idx(iid)
        assert r.answer.decision.kind == ("llm" if is_hard(i) else "slm")
        assert casc[iid].answer.usage["slm"].calls == 1
    assert FakeMath(n=3).load()[2].id == "fakemath/2"
