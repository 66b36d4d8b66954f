"""`shepherd study`: packed traces in, the whole study out, identical on every run; and the committed
docs/results are exactly what the committed traces give."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shepherd.cli import app
from shepherd.evaluation.study import StudyError, load_spec, render_discussion, run_study
from shepherd.traces.compact import export_compact
from shepherd.traces.store import TraceStore

REPO = Path(__file__).resolve().parents[2]


def _signal_store():
    spec = importlib.util.spec_from_file_location("study_signal_store", REPO / "tests/predictor/signal_store.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


SPEC = """
title = "Test study"
train_traces = ["train.jsonl.gz"]
train_target_items = 500
cv = 3
predictor_candidates = [{ featurizer = "lexical", hidden = 0, l2 = 1.0 }, { featurizer = "lexical", hidden = 16, l2 = 0.1 }]
select_repeats = 1
recipe_sensitivity = true
discussion = "Hand-written discussion goes here: SLM {{benchmarks.GSM8K.references.slm-free.slm.accuracy | pct1}}."

[[benchmarks]]
name = "GSM8K"
task = "gsm8k"
traces = ["test.jsonl.gz"]
setting = "in-domain"
target_items = 30
cap_probe = "cap_probe.json"

[[benchmarks]]
name = "GSM8K-again"
task = "gsm8k"
traces = ["test.jsonl.gz"]
setting = "in-domain"
same_items_as = "GSM8K"
subset_of = "GSM8K"
"""

CAP_PROBE = {"items": 30, "old_cap": 512, "new_cap": 1024, "cut_off": 4, "regenerated": 2, "finished_now": 2,
             "correct_now": 1, "prefix_kept": 2, "llm_accuracy_old_cap": 0.5, "llm_accuracy_new_cap_est": 0.5667,
             "mean_new_tokens": 700.0, "rows": []}


@pytest.fixture(scope="module")
def traces_dir(tmp_path_factory, data_dir):
    sig = _signal_store()
    work = tmp_path_factory.mktemp("study_traces")
    for name, split, n in (("train", "train", 60), ("test", "test", 30)):
        store = sig.build_store(work / f"{name}.sqlite", n_items=n, seed=0, split=split)
        export_compact(TraceStore(store, readonly=True), work / f"{name}.jsonl.gz")
    (work / "study.toml").write_text(SPEC, encoding="utf-8")
    (work / "cap_probe.json").write_text(json.dumps(CAP_PROBE), encoding="utf-8")
    return work


def test_study_writes_results_and_is_deterministic(traces_dir, tmp_path):
    spec = load_spec(traces_dir / "study.toml")
    a = run_study(spec, traces_dir, tmp_path / "a", tmp_path / "work_a")
    b = run_study(spec, traces_dir, tmp_path / "b", tmp_path / "work_b")
    sa = (tmp_path / "a/results/summary.json").read_text()
    assert sa == (tmp_path / "b/results/summary.json").read_text()
    s = json.loads(sa)
    g = s["benchmarks"]["GSM8K"]
    assert g["items"] == 30 and s["train"]["items"] == 60
    assert set(g["policies"]) >= {"slm-only", "llm-only", "fixed-ratio", "proactive", "reactive", "routellm-mf",
                                  "graphrouter", "knn", "frugalgpt", "abc", "oracle-shepherd"}
    # oracle shepherding is never worse than oracle routing, and routing never costs more than LLM-only
    pol = g["policies"]
    assert pol["oracle-shepherd"]["point"]["accuracy"] >= pol["oracle-routing"]["point"]["accuracy"]
    assert pol["oracle-routing"]["point"]["slm-free"]["cost_reduction"] >= 0
    assert s["predictor"]["cv"]["proactive"]["auc"] > 0.5  # the scripted traces carry a learnable signal
    # the scripted answers all end well below the 512-token cap
    assert g["llm_tokens"]["cut_off_share"] == 0.0 and g["llm_tokens"]["slm_cut_off_share"] == 0.0
    assert g["max_tokens"] == s["train"]["max_tokens"] == 512  # the cap the scripted sweeps ran with
    assert g["cap_probe"] == {k: v for k, v in CAP_PROBE.items() if k != "rows"}  # the probe's counts, as given
    sel = s["predictor"]["selection"]  # the recipe chosen on the training items, and the one trained
    best = max(sel["candidates"], key=lambda c: c["score"])
    assert sel["chosen"] == best["label"] and len(sel["candidates"]) == 2
    assert s["predictor"]["model"] == {"hidden": best["hidden"], "l2": best["l2"], "lam": 0.5,
                                       "size_target": "fraction", "length_weight": 0.1}
    assert s["predictor"]["fitted_on_items"] == s["predictor"]["items"]  # the deployed model saw every item
    assert sel["by"] == "auc" and sel["target"] == 0.9  # the decision-aware cost is reported beside the AUC
    assert sel["alternative"] in [c["label"] for c in sel["candidates"]]  # what choosing by cost would take
    assert all(set(c["cost"]) == {"proactive", "reactive"} for c in sel["candidates"])
    cal = s["predictor"]["calibration"]  # one fold assignment: the chosen recipe's cost is its calibration's
    for mode, c in next(c for c in sel["candidates"] if c["label"] == sel["chosen"])["cost"].items():
        assert c == (pytest.approx(cal[mode]["relative_cost"], abs=1e-4) if cal[mode]["feasible"] else None)
    # the learning curve: shares as the spec asks (default), fewer items per model at smaller shares, and its
    # full-share point is the study's own cross-validation (same folds, one fold assignment)
    lc = s["predictor"]["learning_curve"]["points"]
    assert [p["fraction"] for p in lc] == [0.25, 0.5, 0.75, 1.0]
    assert [p["train_items"] for p in lc] == sorted(p["train_items"] for p in lc) and lc[0]["train_items"] < 15
    assert lc[-1]["auc"]["proactive"] == pytest.approx(s["predictor"]["cv"]["proactive"]["auc"], abs=1e-4)
    # how the predictor ranks the test items: the scripted test traces carry the training signal too
    on_test = g["predictor_auc"]
    assert 0 < on_test["positives"] < on_test["items"] <= 30 and on_test["proactive"] > 0.6
    # and the same recipe cross-validated on the test items themselves (the in-domain reference)
    assert set(on_test["in_domain"]) == {"proactive", "reactive"} and on_test["in_domain"]["proactive"] > 0.55
    # every recipe replayed: the chosen one's entry is the study's own replay, the other one its own predictor
    rec = s["recipes"]["by_recipe"]
    assert [r["label"] for r in rec] == [c["label"] for c in sel["candidates"]]
    assert [r["label"] for r in rec if r["chosen"]] == [sel["chosen"]]
    chosen = next(r for r in rec if r["chosen"])["benchmarks"]["GSM8K"]
    for mode in ("proactive", "reactive"):
        main = pol[mode]["slm-free"]["at90"]
        assert chosen[mode]["at90"]["cost_reduction"] == main["cost_reduction"]
        assert chosen["auc"][mode] == on_test[mode]
    assert s["recipes"]["chosen"]["label"] == sel["chosen"]
    assert s["recipes"]["alternative"]["label"] == sel["alternative"]
    other = next(r for r in rec if not r["chosen"])
    other_pred = json.loads(next((tmp_path / "work_a/recipes").glob("recipe*/predictor/manifest.json")).read_text())
    assert other_pred["training"]["settings"]["model"]["hidden"] == next(
        c["hidden"] for c in sel["candidates"] if c["label"] == other["label"])
    assert other["benchmarks"]["GSM8K"]["auc"]["proactive"] > 0.6  # the other recipe learns the signal too
    span = s["recipes"]["span_at90"]["GSM8K"]["reactive"]
    reds = [r["benchmarks"]["GSM8K"]["reactive"]["at90"]["cost_reduction"] for r in rec
            if r["benchmarks"]["GSM8K"]["reactive"]["at90"]]
    assert (span["min"], span["max"], span["n"]) == (min(reds), max(reds), len(reds))
    # a benchmark over the same items asked again: the other's references on exactly its items
    same = s["benchmarks"]["GSM8K-again"]["same_items"]
    assert same == {"benchmark": "GSM8K", "items": 30,
                    "slm_accuracy": pytest.approx(g["references"]["slm-free"]["slm"]["accuracy"], abs=1e-6),
                    "llm_accuracy": pytest.approx(g["references"]["slm-free"]["llm"]["accuracy"], abs=1e-6),
                    "oracle_shepherd_accuracy": pytest.approx(pol["oracle-shepherd"]["point"]["accuracy"], abs=1e-6)}
    # a subset is reported like any benchmark but stays out of the spans, the paper's side and the recipes
    again = s["benchmarks"]["GSM8K-again"]
    assert again["items"] == 30 and again["crossfit"]["slm-free"]["splits"] == 100 and "predictor_auc" not in again
    assert all("GSM8K-again" not in r["benchmarks"] for r in rec)
    spans = s["comparison"]["at90"]["shepherding_cost_reduction"]
    assert spans["n"] == (1 if g["headline"]["slm-free"]["at90"].get("shepherding") else 0)
    # the out-of-sample headline: both sides chose on one half and were scored on the other, every policy too
    cf = g["crossfit"]["slm-free"]
    assert cf["splits"] == 100 and {"proactive", "reactive", "abc", "frugalgpt"} <= set(cf["policies"])
    for key in ("at90", "at100"):
        for side in ("shepherding", "baseline"):
            row = cf[key][side]
            assert row is None or (0.0 <= row["met_share"] <= 1.0
                                   and row["cost_reduction_range"][0] <= row["cost_reduction"]
                                   <= row["cost_reduction_range"][1])
    # llm-only is a baseline-side point, so the best baseline always reaches 100% on its half
    assert cf["at100"]["baseline"] is not None and cf["at100"]["baseline"]["met_share"] > 0
    assert pol["proactive"]["knob"] == "(threshold,scale)" and pol["proactive"]["points"] > 40
    # the point shown is the calibrated (threshold, scale), as the artifact would run it
    cal = s["predictor"]["calibration"]["proactive"]
    assert pol["proactive"]["point"]["label"] == f"proactive threshold={cal['threshold']:.4g} scale={cal['scale']:g}"
    md = (tmp_path / "a/results.md").read_text()
    assert md.index("Headline, knobs chosen out of sample (SLM free") < md.index("Headline, best case on the test items")
    assert "Every policy out of sample (slm-free" in md
    slm_acc = f"{100 * g['references']['slm-free']['slm']['accuracy']:.1f}%"
    for needle in ("Partial study", "Side by side with the paper", f"Hand-written discussion goes here: SLM {slm_acc}.",
                   "Proactive vs reactive", "Wall-clock per query", "results/gsm8k/figures/gsm8k_cost_accuracy_slm-free.png",
                   "results/hint_fraction_all.png", "The recipe was chosen among 2",
                   "the same predictor ranks", "Would more training items help?",
                   "cost at 90% proactive", "own-items AUC proactive",
                   "How much do the shepherding results depend on the recipe?",
                   "LLM answers cut off at the token cap", "answers up to 512 tokens.",
                   "on 30 swept items, a sample of 2 was asked again", "| in-domain, a subset of GSM8K |",
                   "## GSM8K-again (in-domain, 30 items of GSM8K)",
                   "2 finish (mean 700 tokens) and 1 are right", "about 57% instead of 50%"):
        assert needle in md, needle
    assert (tmp_path / "a/results/gsm8k/figures/gsm8k_cost_accuracy_slm-free.png").stat().st_size > 1000
    assert (tmp_path / "a/results/hint_fraction_all.png").is_file()
    assert (tmp_path / "a/results/gsm8k/report.md").is_file()
    assert a.summary == b.summary
    assert md == (tmp_path / "b/results.md").read_text()  # the document too, wherever it is written


def test_study_cli_and_bad_specs(traces_dir, tmp_path):
    r = CliRunner().invoke(app, ["study", str(traces_dir / "study.toml"), "--out", str(tmp_path / "o"),
                                 "--work", str(tmp_path / "w")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "o/results.md").is_file()

    bad = tmp_path / "bad.toml"
    for old, new, match in (
            ("cv = 3", "cv = 3\nfeaturiser = 'lexical'", "featuriser"),
            ("cv = 3", "cv = 3\nselect_by = 'price'", "select_by"),
            ("cv = 3", "cv = 3\nlearning_curve = [0.5, 1.5]", "learning_curve.1"),
            ("predictor_candidates = [", "predictor_candidates = [] #",
             "recipe_sensitivity compares the predictor_candidates"),
            ('subset_of = "GSM8K"', 'subset_of = "GSM8k"', "subset_of names 'GSM8k', which is not another benchmark"),
            ('same_items_as = "GSM8K"', 'same_items_as = "GSM8K-again"', "same_items_as names 'GSM8K-again'"),
            ("hidden = 0,", "hidden = -1,", "predictor_candidates.0.hidden")):
        bad.write_text(SPEC.replace(old, new))
        with pytest.raises(StudyError, match=match):
            load_spec(bad)
    # a benchmark not swept yet is listed as such; missing training traces are an error
    spec = SPEC.replace('"train.jsonl.gz"', f'"{traces_dir / "train.jsonl.gz"}"')
    bad.write_text(spec.replace('traces = ["test.jsonl.gz"]', 'traces = ["missing.jsonl.gz"]'))
    r = CliRunner().invoke(app, ["study", str(bad), "--out", str(tmp_path / "o2"), "--work", str(tmp_path / "w2")])
    assert r.exit_code == 0, r.output
    md = (tmp_path / "o2/results.md").read_text()
    assert "No swept items yet." in md and "Hand-written discussion goes here: SLM not swept yet." in md
    bad.write_text(SPEC.replace('train_traces = ["train.jsonl.gz"]', 'train_traces = ["missing.jsonl.gz"]'))
    r = CliRunner().invoke(app, ["study", str(bad), "--out", str(tmp_path / "o3"), "--work", str(tmp_path / "w3")])
    assert r.exit_code != 0 and "not found" in r.output
    bad.write_text("title = [broken")
    with pytest.raises(StudyError, match="not a readable TOML"):
        load_spec(bad)


def test_discussion_numbers_come_from_the_summary():
    summary = {"benchmarks": {"GSM8K": {"hint_curve": [{"acc": 0.2}, {"acc": 0.35}],
                                        "at100": None, "ratio": 0.348, "red": 0.127}}}
    text = ("{{benchmarks.GSM8K.hint_curve.0.acc|pct}} -> {{ benchmarks.GSM8K.hint_curve.1.acc | pct }}, "
            "{{benchmarks.GSM8K.at100.cost_reduction|red}}, {{benchmarks.GSM8K.ratio|x}}, "
            "{{benchmarks.GSM8K.red|red}}, {{benchmarks.GSM8K.ratio}}; {plain braces} stay")
    assert render_discussion(text, summary) == "20% -> 35%, not reached, 0.35x, −13%, 0.35; {plain braces} stay"
    with pytest.raises(StudyError, match="names no field.*'MBPP'"):
        render_discussion("{{benchmarks.MBPP.items}}", summary)
    with pytest.raises(StudyError, match="unknown format 'percent'"):
        render_discussion("{{benchmarks.GSM8K.ratio|percent}}", summary)
    with pytest.raises(StudyError, match="not a number"):
        render_discussion("{{benchmarks.GSM8K.hint_curve}}", summary)
    with pytest.raises(StudyError, match="names no field"):
        render_discussion("{{benchmarks.GSM8K.hint_curve.7.acc}}", summary)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_committed_results_are_what_the_committed_traces_give(tmp_path):
    """docs/results/summary.json must be regenerated whenever traces/ changes: recompute and compare.

    The whole study, unshortened: it is the proof. About 12 minutes on a quiet 2-core machine (18 with a sweep beside it)
    (benchmarks/study_time.py); its own time limit leaves room for a machine doing other work, where the
    suite-wide 900 s once ended it."""
    spec_path = REPO / "traces" / "study.toml"
    committed = REPO / "docs" / "results" / "summary.json"
    assert spec_path.is_file() and committed.is_file()
    run = run_study(load_spec(spec_path), spec_path.parent, tmp_path / "docs", tmp_path / "work")
    fresh = json.loads((tmp_path / "docs/results/summary.json").read_text())
    assert fresh == json.loads(committed.read_text()), "docs/results is stale: run `shepherd study` and commit"
    # the prose too: its numbers are placeholders filled from the summary
    assert (tmp_path / "docs/results.md").read_text() == (REPO / "docs/results.md").read_text()
    assert run.summary["benchmarks"]


def test_the_baseline_ratio_verdict_reads_the_bootstrap_interval():
    from shepherd.evaluation.study import _agree_ratio, _templates

    assert _agree_ratio(2.0) == "clearly" and _agree_ratio(1.2) == "direction"
    assert _agree_ratio(2.0, {"low": 0.8, "high": 3.0}) == "spans_one"
    assert _agree_ratio(2.0, {"low": 1.6, "high": 3.0}) == "clearly"
    assert _agree_ratio(0.7, {"low": 0.5, "high": 0.9}) == "baseline_cheaper"
    assert _agree_ratio(None) == "unknown"
    words = _templates().get_template("results_words.j2").module  # what results.md says for each case
    assert words.agree_ratio("clearly", 2.0).startswith("yes") and words.agree_ratio("direction", 1.2).startswith(
        "direction")
    assert words.agree_ratio("spans_one", 2.0).startswith("not shown: the largest ratio (2.00x)")
    assert words.agree_ratio("baseline_cheaper", 0.7).startswith("no") and words.agree_ratio("unknown", None) == (
        "cannot tell")


def test_the_setup_line_names_every_answer_cap():
    from shepherd.evaluation.study import _caps, _templates

    words = _templates().get_template("results_words.j2").module
    assert words.caps(_caps({"train": 512, "GSM8K": 512, "CNK12": 1024})) == "512 tokens (CNK12: 1024)"
    assert words.caps(_caps({"train": 1024, "GSM8K": 512, "MBPP": 1024})) == "1024 tokens (GSM8K: 512)"
    assert words.caps(_caps({"train": 512, "GSM8K": 1024, "MBPP": 1024})) == "1024 tokens (training: 512)"
    assert words.caps(_caps({"train": None})) == "the sweeps' token cap"


def test_a_broken_cap_probe_is_a_clear_error(tmp_path):
    from shepherd.evaluation.study import _load_cap_probe

    probe = tmp_path / "probe.json"
    probe.write_text('{"items": 3', encoding="utf-8")
    with pytest.raises(StudyError, match="not a benchmarks/token_cap.py report"):
        _load_cap_probe(probe)
    probe.write_text(json.dumps({"items": 3}), encoding="utf-8")  # not the token_cap report's fields
    with pytest.raises(StudyError, match="old_cap"):
        _load_cap_probe(probe)
    with pytest.raises(StudyError, match="not a benchmarks/token_cap.py report"):
        _load_cap_probe(tmp_path / "missing.json")
