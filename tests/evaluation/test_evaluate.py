"""`shepherd eval` end to end on a small scripted trace store: the report, the manifest that reruns it,
and the numbers it must get right by construction."""

import json

import pytest
from eval_fakes import build_store, is_hard, llm_wrong

from shepherd.costs import Price
from shepherd.evaluation import evaluate as E
from shepherd.evaluation.report import write_report
from shepherd.evaluation.suite import EvalConfig, run_eval
from shepherd.routers.learned import artifact_fingerprint
from shepherd.tasks import registry

N = 24


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("evalstore") / "fake.sqlite"
    store, _, _ = build_store(path, n=N)
    store.close()
    return path


@pytest.fixture(autouse=True)
def fake_task_registered(monkeypatch):
    monkeypatch.setitem(registry._TASKS, "fakemath", "eval_fakes:FakeMath")


def _cfg(store_path, out, **kw):
    base = {"test": str(store_path), "train": str(store_path), "out": str(out), "featurizer": "lexical",
            "n_boot": 200, "max_points": 9, "argv": ["shepherd", "eval", "(test)"]}
    base.update(kw)
    return EvalConfig(**base)


@pytest.fixture(scope="module")
def run_and_report(store_path, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setitem(registry._TASKS, "fakemath", "eval_fakes:FakeMath")
    out = tmp_path_factory.mktemp("report")
    run = run_eval(_cfg(store_path, out))
    path = write_report(run)
    mp.undo()
    return run, path, out


def _fam(res, name):
    f = res.family(name)
    assert f is not None, name
    return f


def test_report_files_are_written(run_and_report):
    _, path, out = run_and_report
    assert path == out / "report.md"
    text = path.read_text()
    for needle in ("## fakemath", "Headline (slm-free)", "Headline (slm-priced)", "APGR", "AIQ", "CPT(50%)",
                   "routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt", "abc", "proactive",
                   "reactive", "oracle-shepherd", "Accuracy vs hint fraction", "Appendix: every operating point"):
        assert needle in text, needle
    figs = sorted(p.name for p in (out / "figures").iterdir())
    assert figs == ["fakemath_cost_accuracy_slm-free.png", "fakemath_cost_accuracy_slm-priced.png",
                    "fakemath_hint_fraction.png"]
    for f in figs:
        data = (out / "figures" / f).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
        assert f"figures/{f}" in text
    results = json.loads((out / "results.json").read_text())
    assert results["tasks"][0]["task"] == "fakemath"


def test_manifest_records_what_a_rerun_needs(run_and_report, store_path):
    _, _, out = run_and_report
    m = json.loads((out / "manifest.json").read_text())
    test_ids = m["test"]["tasks"]["fakemath"]["items"]
    train_ids = m["train"]["tasks"]["fakemath"]["items"]
    assert len(test_ids) == len(train_ids) == N // 2 and not set(test_ids) & set(train_ids)
    assert "same store" in m["train"]["same_store_split"]
    assert m["models"] == [{"slm": "fake-slm", "llm": "fake-llm"}]
    assert m["prices"][0] == {"name": "slm-free", "llm": {"input": 0.59, "output": 0.79},
                              "slm": {"input": 0.0, "output": 0.0}}
    assert m["prices"][1]["slm"] == {"input": 0.05, "output": 0.08}
    assert m["test"]["store"]["sha256"] and len(m["test"]["tasks"]["fakemath"]["fingerprint"]) == 64
    for kind in ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt", "predictor"):
        a = m["artifacts"][kind]
        assert a["fingerprint"] == artifact_fingerprint(a["artifact"])
    pol = {p["family"]: p for p in m["policies"]["fakemath"]}
    assert pol["random-mix"]["values"] == [round(i / 10, 1) for i in range(11)]
    assert pol["abc"]["settings"][0]["k"] == 2
    assert m["config"]["featurizer"] == "lexical" and m["command"] == ["shepherd", "eval", "(test)"]


def test_numbers_hold_by_construction(run_and_report):
    run, _, _ = run_and_report
    (res,) = run.results
    ids = res.item_ids
    idx = [int(i.split("/")[1]) for i in ids]
    slm = _fam(res, "slm-only").points[0]
    llm = _fam(res, "llm-only").points[0]
    assert slm.accuracy.value == pytest.approx(sum(not is_hard(i) for i in idx) / len(idx))
    assert llm.accuracy.value == pytest.approx(sum(not llm_wrong(i) for i in idx) / len(idx))
    assert slm.cost["slm-free"] == 0.0 and slm.cost["slm-priced"] > 0.0
    assert llm.cost["slm-free"] == llm.cost["slm-priced"] > 0.0
    # oracle routing: right whenever either model is; costs what routing the hard items costs
    orc = _fam(res, "oracle-routing").points[0]
    assert orc.accuracy.value == pytest.approx(sum((not is_hard(i)) or not llm_wrong(i) for i in idx) / len(idx))
    # oracle shepherding is cheapest of the oracles (hints are shorter than answers)
    osh = _fam(res, "oracle-shepherd").points[0]
    assert osh.cost["slm-free"] < orc.cost["slm-free"]
    # cascades pay for the SLM: with a priced SLM, FrugalGPT's cheapest point costs what SLM-only does
    fr = [p for p in _fam(res, "frugalgpt").points if p.ok]
    assert min(p.cost["slm-priced"] for p in fr) == pytest.approx(slm.cost["slm-priced"])
    assert max(p.cost["slm-priced"] for p in fr) > llm.cost["slm-priced"]
    # every learned router's curve runs from SLM-only to LLM-only
    for name in ("routellm-classifier", "routellm-mf", "graphrouter", "knn"):
        pts = [p for p in _fam(res, name).points if p.ok]
        assert min(p.cost["slm-free"] for p in pts) == 0.0
        assert max(p.cost["slm-free"] for p in pts) == pytest.approx(llm.cost["slm-free"])
        m = _fam(res, name).metrics["slm-free"]
        assert m["apgr"] > 0.6 and m["aiq"] > 0.0  # the wording carries the signal
    # random mixing at p=0 and p=1 are the references themselves
    rm = {p.knob: p for p in _fam(res, "random-mix").points}
    assert rm[0.0].cost["slm-free"] == 0.0 and rm[1.0].cost["slm-free"] == pytest.approx(llm.cost["slm-free"])
    # the hint-fraction curve: hard items are fixed once the hint has 5 of 20 words (fraction 0.3)
    hc = {round(c["fraction"], 2): c["greedy_accuracy"] for c in res.hint_curve}
    assert hc[0.0] == pytest.approx(slm.accuracy.value)
    assert hc[0.3] == pytest.approx(sum(not llm_wrong(i) for i in idx) / len(idx))
    assert hc[1.0] == pytest.approx(llm.accuracy.value)
    # no failed points
    assert [p.label for f in res.families for p in f.points if not p.ok] == []


def test_rerun_from_the_saved_artifacts_gives_the_same_numbers(run_and_report, store_path, tmp_path):
    run, _, out = run_and_report
    again = run_eval(_cfg(store_path, tmp_path / "again", baselines=str(out / "artifacts"),
                          predictor=str(out / "artifacts" / "predictor")))
    a = {(f.name, str(p.knob)): (p.accuracy.value, p.cost["slm-free"]) for f in run.results[0].families
         for p in f.points if p.ok}
    b = {(f.name, str(p.knob)): (p.accuracy.value, p.cost["slm-free"]) for f in again.results[0].families
         for p in f.points if p.ok}
    assert a == b


def test_cli_eval_writes_a_report(store_path, tmp_path):
    from typer.testing import CliRunner

    from shepherd.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["eval", "--test", str(store_path), "--train", str(store_path), "--out", str(out),
                                   "--featurizer", "lexical", "--bootstrap", "100", "--policies",
                                   "routellm-mf,abc,oracle-routing", "--slm-price", "0.1,0.2"])
    assert res.exit_code == 0, res.output
    assert (out / "report.md").is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert {p["family"] for p in m["policies"]["fakemath"]} == {"slm-only", "llm-only", "routellm-mf", "abc",
                                                                "oracle-routing"}
    assert m["prices"][1]["slm"] == {"input": 0.1, "output": 0.2}
    bad = CliRunner().invoke(app, ["eval", "--test", str(tmp_path / "nope.sqlite")])
    assert bad.exit_code != 0 and "not found" in bad.output


def test_knob_helpers():
    assert E.thresholds_from_scores([0.2, 0.8, 0.5, 0.5]) == [-0.8, 0.2, 0.5, 0.8]
    many = E.thresholds_from_scores([i / 100 for i in range(100)], max_points=5)
    assert len(many) == 5 and many[0] < 0.0 and many[-1] == 0.99
    tr, te = E.split_items([f"x/{i}" for i in range(10)], 0.5, seed=1)
    assert len(tr) == len(te) == 5 and not set(tr) & set(te)
    assert E.split_items([f"x/{i}" for i in range(10)], 0.5, seed=1) == (tr, te)


def test_shepherding_knobs_sit_at_the_policys_own_scores():
    from shepherd.evaluation.suite import SHEPHERDING_SCALES, shepherding_knobs

    scores = [0.1, 0.4, 0.4, 0.7]
    knobs = shepherding_knobs(scores, threshold=0.33, scale=1.5, max_points=21)
    assert len(knobs) == len(set(knobs))  # no duplicate points
    thresholds = {t for t, _ in knobs}
    # every split of the scores: all hinted (0), each score as a cut, none hinted (just above 1, once)
    assert {0.0, 0.1, 0.4, 0.7} <= thresholds and [s for t, s in knobs if t > 1.0] == [1.5]
    assert (0.33, 1.5) in knobs  # the calibrated point itself
    assert {s for t, s in knobs if t == 0.4} == {*SHEPHERDING_SCALES, 1.5}  # every scale at every cut
    assert not [t for t in thresholds if 0.1 < t < 0.4 and t != 0.33]  # no grid points between the scores


def test_shepherding_curves_reach_llm_only_accuracy(run_and_report):
    """With the hint scale swept, the threshold-0 / largest-scale point hands most queries a full answer, so the
    shepherding curve reaches LLM-only accuracy on the scripted store (it could not with one fixed scale)."""
    run, _, _ = run_and_report
    (res,) = run.results
    llm = _fam(res, "llm-only").points[0]
    fam = _fam(res, "proactive")
    assert fam.knob == "(threshold,scale)" and len({p.knob for p in fam.points}) == len(fam.points)
    assert max(p.accuracy.value for p in fam.points if p.ok) >= llm.accuracy.value


def test_memo_task_uses_the_sweep_grades(store_path):
    from eval_fakes import FakeMath

    from shepherd.traces.store import TraceStore

    store = TraceStore(store_path, readonly=True)
    sweeps = store.item_sweeps("fakemath")
    task = FakeMath(n=N)
    memo = E.MemoTask(task)
    memo.seed(sweeps)
    s = sweeps[1]
    item = task.load(ids=[s.item_id])[0]
    assert memo.grade(item, s.llm_full.generation.text).correct == s.llm_full.correct
    assert memo.grade(item, s.samples[0].generation.text).correct == s.samples[0].correct
    assert task.grades == 0 and memo.graded == 0
    memo.grade(item, "The answer is 0.")
    assert task.grades == 1 and memo.graded == 1


def test_scenarios_price_the_same_usage_differently():
    o = E.ItemOutcome("a", True, "llm", 100, 50, 200, 80, 1, 1)
    free, priced = E.scenarios(Price(input=1.0, output=2.0), Price(input=0.5, output=0.5))
    assert o.cost(free) == pytest.approx((100 * 1 + 50 * 2) / 1e6)
    assert o.cost(priced) == pytest.approx((100 * 1 + 50 * 2 + 280 * 0.5) / 1e6)


def test_rerun_from_the_manifest_repeats_the_run_exactly(run_and_report, tmp_path):
    from typer.testing import CliRunner

    from shepherd.cli import app

    _, _, out = run_and_report
    again = tmp_path / "rerun"
    res = CliRunner().invoke(app, ["eval", "--rerun", str(out / "manifest.json"), "--out", str(again)])
    assert res.exit_code == 0, res.output
    m = json.loads((again / "manifest.json").read_text())
    check = m["rerun_check"]
    assert check["summary"] == "every trace and artifact fingerprint matches", check
    assert {"test:fakemath", "train:fakemath", "artifact:routellm-mf", "artifact:predictor"} <= set(check["checks"])
    first = json.loads((out / "manifest.json").read_text())
    assert m["test"]["tasks"]["fakemath"]["items"] == first["test"]["tasks"]["fakemath"]["items"]
    r1 = json.loads((out / "results.json").read_text())["tasks"][0]["families"]
    r2 = json.loads((again / "results.json").read_text())["tasks"][0]["families"]
    strip = [[(p["label"], p["accuracy"], p["cost_per_query"]) for p in f["points"]] for f in r1]
    assert strip == [[(p["label"], p["accuracy"], p["cost_per_query"]) for p in f["points"]] for f in r2]
    assert "rerun of" in (again / "report.md").read_text()


def test_hint_curve_counts_answers_cut_off_at_the_token_cap():
    from shepherd.models.base import Generation
    from shepherd.traces.records import Graded, HintLevel, ItemSweep

    def g(reason, tokens=10):
        return Generation("x", 5, tokens, reason, 0.1)

    def item(i, llm_reason, slm_reason, llm_ok):
        return ItemSweep("t", f"t/{i}", [], Graded(g(llm_reason, 512), llm_ok), 512,
                         levels=[HintLevel(0.0, 0, "", [Graded(g(slm_reason), False)]),
                                 HintLevel(0.5, 256, "h", [Graded(g("stop"), True)])])

    sweeps = [item(0, "length", "length", False), item(1, "stop", "length", True),
              item(2, "stop", "stop", True), item(3, "length", "stop", False)]
    hc = {c["fraction"]: c for c in E.hint_curve(sweeps)}
    assert hc[1.0]["cut_off_share"] == pytest.approx(0.5) and hc[1.0]["greedy_accuracy"] == pytest.approx(0.5)
    assert hc[1.0]["finished_accuracy"] == 1.0  # both answers that ended within the cap are right
    assert hc[0.0]["cut_off_share"] == pytest.approx(0.5)
    assert hc[0.5]["cut_off_share"] == 0.0 and hc[0.5]["greedy_accuracy"] == 1.0


def test_the_fingerprint_covers_what_only_some_sweeps_record():
    """A rerun's check must notice a changed self-verification or a sampled hint continuation too (automix and
    the agreement-after-hint policies read them); sweeps without them keep the fingerprint they had."""
    from dataclasses import replace

    from shepherd.evaluation.suite import sweeps_fingerprint
    from shepherd.models.base import Generation
    from shepherd.traces.records import Graded, HintLevel, ItemSweep

    def g(text: str, ok: bool) -> Graded:
        return Graded(Generation(text=text, prompt_tokens=3, completion_tokens=2, finish_reason="stop",
                                 latency_s=0.1, model="m"), ok, None)

    base = ItemSweep(task="t", item_id="1", messages=[{"role": "user", "content": "q"}], llm_full=g("42", True),
                     full_tokens=10, levels=[HintLevel(0.0, 0, "", [g("41", False)])], samples=[g("42", True)])
    fp = sweeps_fingerprint([base])
    checked = replace(base, verification=g("Yes", False))
    assert sweeps_fingerprint([checked]) != fp
    assert sweeps_fingerprint([replace(base, verification=g("No", False))]) != sweeps_fingerprint([checked])
    sampled = replace(base, levels=[HintLevel(0.0, 0, "", [g("41", False)], samples=[g("42", True)])])
    assert sweeps_fingerprint([sampled]) != fp
    assert sweeps_fingerprint([replace(base)]) == fp
