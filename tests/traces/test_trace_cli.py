"""`shepherd sweep ...` end to end on scripted models (the real-model run is in test_trace_resume)."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shepherd.cli import app

CONFIG = """
[slm]
backend = "scripted"
model = "slm-script"
script = "I am not sure . The answer is 7."
[llm]
backend = "scripted"
model = "llm-script"
script = "Natalia sold 48 in April and 24 in May . 48 + 24 = 72 . The answer is 72."
"""


def test_sweep_labels_export_oracles_replay(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "s.sqlite"
    runner = CliRunner()
    args = ["sweep", "run", "gsm8k", "--split", "train", "--limit", "3", "--store", str(store), "--config", str(cfg),
            "--grid", "0,0.25,0.5,0.75", "--samples", "2", "--trials", "2"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "3/3" in r.output or "done in" in r.output
    # a second run finds everything done
    r2 = runner.invoke(app, args)
    assert r2.exit_code == 0 and "0 model calls" in r2.output, r2.output

    r = runner.invoke(app, ["sweep", "status", "--store", str(store)])
    assert r.exit_code == 0
    status = json.loads(r.stdout)
    assert status["duplicate_calls"] == 0 and status["sweeps"][0]["done"] == 3
    assert status["in_progress"] == []  # a finished sweep leaves no claim behind

    r = runner.invoke(app, ["sweep", "labels", "gsm8k", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    # item 0 (Natalia, 72): the SLM is wrong alone, right once the hint holds the LLM's "72"
    lab0 = next(x for x in data["labels"] if x["item_id"] == "gsm8k/train/0")
    assert lab0["llm_correct"] is True and lab0["kind"] in ("hint", "llm")
    assert data["stats"]["items"] == 3
    r = runner.invoke(app, ["sweep", "labels", "gsm8k", "--store", str(store)])
    assert r.exit_code == 0 and "hint fraction" in r.stdout

    out = tmp_path / "rows.jsonl"
    r = runner.invoke(app, ["sweep", "export", str(out), "--store", str(store)])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["kind"] for x in rows} == {"llm_full", "hint", "sample"}

    r = runner.invoke(app, ["sweep", "oracles", "gsm8k", "--store", str(store), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    c = {k: v["cost_usd"] for k, v in rep["strategies"].items()}
    assert c["oracle-shepherd"] <= c["oracle-routing"] <= c["oracle-cascade"]

    r = runner.invoke(app, ["sweep", "replay", "gsm8k", "--store", str(store), "--policy", "fixed-hint",
                            "--settings", '{"tokens": 6}', "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["items"] == 3 and summary["mapped_hints"] == 3  # 6 tokens is not a grid level (19-word answer: 5, 10, 14)

    r = runner.invoke(app, ["sweep", "labels", "nope", "--store", str(store)])
    assert r.exit_code == 2 and "no sweep" in r.output
    r = runner.invoke(app, ["sweep", "labels", "gsm8k", "--store", str(tmp_path / "missing.sqlite")])
    assert r.exit_code == 2 and "no trace store" in r.output


@pytest.mark.slow
def test_sweep_score_adds_the_slms_logprobs_to_committed_traces_without_regenerating(tmp_path):
    """`shepherd sweep score` on the committed GSM8K test traces (first item): the SLM's no-hint answer and
    its samples get token log-probabilities from the real 0.5B model; texts, counts and the call log stay;
    a second run finds nothing left to do; a wrong model is refused."""
    from shepherd.traces.store import TraceStore

    repo = Path(__file__).resolve().parents[2]
    store_path = tmp_path / "gsm8k.sqlite"
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "unpack", str(repo / "traces" / "gsm8k-test.jsonl.gz"), "--store", str(store_path)])
    assert r.exit_code == 0, r.output
    before = TraceStore(store_path, readonly=True)
    calls = len(before.call_log())
    first = before.item_sweeps("gsm8k")[0]
    before.close()
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--limit", "1"])
    assert r.exit_code == 0, r.output
    assert f"{1 + len(first.samples)} generations scored" in r.output
    store = TraceStore(store_path, readonly=True)
    it = store.item_sweeps("gsm8k")[0]
    for g in [it.slm_greedy, *it.samples]:
        lp = g.generation.logprobs
        assert lp is not None and abs(len(lp) - g.generation.completion_tokens) <= 2
        assert lp.ends[-1] == len(g.generation.text) and all(x <= 0 for x in lp.logprobs)
        assert g.generation.mean_logprob == pytest.approx(lp.mean, abs=1e-3)  # the packed values are float16
    assert it.slm_greedy.generation.text == first.slm_greedy.generation.text
    assert it.llm_full.generation.logprobs is None  # the LLM's answers are not the SLM's to score
    assert len(store.call_log()) == calls
    store.close()
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--limit", "1"])
    assert r.exit_code == 0 and "0 generations scored" in r.output
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--limit", "1",
                            "--slm", "qwen2.5-coder-1.5b-instruct-q4_k_m"])
    assert r.exit_code != 0 and "written by" in r.output
    # the continuations at chosen hint levels only (the rungs a confidence ladder judges)
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--limit", "1", "--kinds", "hint",
                            "--levels", "0.1,0.3"])
    assert r.exit_code == 0 and "2 generations scored" in r.output, r.output
    store = TraceStore(store_path, readonly=True)
    levels = {lv.fraction: lv.trials[0].generation.logprobs for lv in store.item_sweeps("gsm8k")[0].levels}
    store.close()
    assert levels[0.1] is not None and levels[0.3] is not None and levels[0.5] is None
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--kinds", "hint", "--levels", "x"])
    assert r.exit_code != 0
    # a named subset (as `sweep run --ids` sweeps it): only that item's answer, wherever it is in the order
    store = TraceStore(store_path, readonly=True)
    third = store.item_sweeps("gsm8k")[2].item_id
    store.close()
    (tmp_path / "ids").write_text(f"{third}\n")
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--kinds", "hint0", "--ids", f"@{tmp_path / 'ids'}"])
    assert r.exit_code == 0 and "1 generations scored" in r.output, r.output
    store = TraceStore(store_path, readonly=True)
    greedy = [it.slm_greedy.generation.logprobs for it in store.item_sweeps("gsm8k")[:4]]
    store.close()
    assert greedy[2] is not None and greedy[1] is None and greedy[3] is None
    r = runner.invoke(app, ["sweep", "score", "--store", str(store_path), "--ids", f"@{tmp_path / 'none'}"])
    assert r.exit_code != 0 and "none" in r.output


def test_sweep_run_records_its_engine_and_rejects_an_unknown_one(tmp_path):
    """The sweep's settings say which engine and executor ran it (not part of its id: a resumed sweep with
    another engine is the same sweep); an unknown engine or executor is a clear error."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "s.sqlite"
    runner = CliRunner()
    base = ["sweep", "run", "gsm8k", "--split", "train", "--limit", "2", "--store", str(store), "--config", str(cfg),
            "--grid", "0,0.5", "--samples", "1"]
    r = runner.invoke(app, [*base, "--engine", "warp"])
    assert r.exit_code != 0 and "--engine must be auto, batched or sequential" in r.output
    r = runner.invoke(app, [*base, "--executor", "spark"])
    assert r.exit_code != 0 and "--executor must be local or ray" in r.output
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    from shepherd.traces.store import TraceStore

    (info,) = TraceStore(store, readonly=True).sweeps()
    assert info.config["engine"] == {"slm": "scripted", "llm": "scripted"}
    assert info.config["executor"] == "local" and info.config["concurrency"] == 1
    assert "prompt_style" not in info.config  # chat style, recorded as sweeps always were
    r = runner.invoke(app, [*base, "--engine", "sequential"])
    assert r.exit_code == 0 and "0 model calls" in r.output
    assert [s.sweep for s in TraceStore(store, readonly=True).sweeps()] == [info.sweep]  # the same sweep


def test_a_completion_style_sweep_says_so_and_starts_the_assistant_turn_with_the_stub(tmp_path):
    from shepherd.traces.store import TraceStore

    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "s.sqlite"
    r = CliRunner().invoke(app, ["sweep", "run", "humaneval-completion", "--ids", "HumanEval/23", "--store",
                                 str(store), "--config", str(cfg), "--grid", "0,0.5", "--samples", "0"])
    assert r.exit_code == 0, r.output
    (info,) = TraceStore(store, readonly=True).sweeps()
    assert info.task == "humaneval-completion" and info.config["prompt_style"] == "completion"
    (entry,) = TraceStore(store, readonly=True).item_entries(info.sweep)
    assert entry.request.prefix.startswith("```python\n") and "def strlen(string: str) -> int:" in entry.request.prefix
