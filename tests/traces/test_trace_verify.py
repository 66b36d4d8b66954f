"""`shepherd sweep verify`: the SLM's checks of its own answers are added to a swept store once (resumable,
nothing paid twice), travel in packed traces, and let the `automix` policy replay with no model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from trace_fakes import slm_answer

from shepherd.costs import Price
from shepherd.evaluation.evaluate import evaluate_task, scenarios
from shepherd.evaluation.replay import replay
from shepherd.evaluation.suite import build_families
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.automix import AutoMixPolicy
from shepherd.traces.compact import export_compact, import_compact, read_compact
from shepherd.traces.store import TraceStore
from shepherd.traces.verify import verify_sweep
from shepherd.verification import VERIFY_QUESTION, verification_values


def _check(request) -> str:
    """The fake SLM's verdict: Yes when the answer's last number is the sum, else No (it knows, a model
    would not: orchestration only)."""
    content = request.messages[-1][1]
    a, b = map(int, re.search(r"What is (\d+) \+ (\d+)", content).groups())
    last = re.findall(r"-?\d+", content.split("Answer:", 1)[1])[-1]
    return "Yes" if int(last) == a + b else "No"


class Interrupted(BaseException):  # as a kill: not caught as one item's failure
    pass


def slm_with_checks(fail_after: int | None = None) -> ScriptedBackend:
    state = {"n": 0}

    def script(request):
        if request.messages[-1][1].endswith(VERIFY_QUESTION):
            state["n"] += 1
            if fail_after is not None and state["n"] > fail_after:
                raise Interrupted("killed")
            return _check(request)
        return slm_answer(request)

    return ScriptedBackend(script, model_id="fake-slm")


def test_verify_adds_one_check_per_item_and_a_rerun_after_an_interruption_pays_nothing_twice(swept_store):
    store, task = swept_store
    assert build_families(task.name, store.item_sweeps(task.name), scorers={}, predictor=None,
                          wanted=["automix"]) == []  # no checks yet: no family
    calls_before = len(store.call_log())
    first = slm_with_checks(fail_after=3)
    with pytest.raises(Interrupted):
        verify_sweep(store, first)
    assert len(first.calls) == 4  # three checks stored, the fourth was cut off before anything was written
    # a process killed between storing a check and writing its row: the check is stored, the row is not
    iid = store.item_sweeps(task.name)[2].item_id
    store._write("DELETE FROM rows WHERE kind = 'verify' AND item_id = ?", (iid,))
    second = slm_with_checks()
    summary = verify_sweep(store, second)
    assert summary.skipped == 2 and summary.verified == 6 and summary.calls == 5  # item 2's check was a hit
    assert len(second.calls) == 5 and not store.duplicate_calls()
    assert len(store.call_log()) == calls_before + 8  # one check per item, each paid once
    third = slm_with_checks()
    assert verify_sweep(store, third).skipped == 8 and third.calls == []

    sweeps = store.item_sweeps(task.name)
    for s in sweeps:
        v = s.verification
        assert v is not None and v.correct == s.slm_greedy.correct  # graded as the answer it checks
        assert v.extracted == ("yes" if s.slm_greedy.correct else "no")
    assert sorted(verification_values(sweeps)) == sorted(1.0 if s.slm_greedy.correct else 0.0 for s in sweeps)
    (fam,) = build_families(task.name, sweeps, scorers={}, predictor=None, wanted=["automix", "slm-only"])[1:]
    assert fam.name == "automix" and fam.values == [0.0, 1.0, 2.0]  # all stand, the Yes ones, none
    # the study replays it from the store alone; with the SLM priced the checks cost, free they do not
    res = evaluate_task(task, store, sweeps, [fam], sweep=store.resolve_sweep(task.name).sweep,
                        scens=scenarios(slm_price=Price(input=1.0, output=1.0)), n_boot=20)
    (stand_all, stand_yes, none) = res.family("automix").points
    assert not any(p.error for p in (stand_all, stand_yes, none))
    assert stand_all.accuracy.value < stand_yes.accuracy.value  # the fake SLM's verdicts are right
    assert stand_all.cost["slm-priced"] > stand_all.cost["slm-free"] == 0.0


def test_the_policy_replays_from_the_checks_and_they_survive_a_pack_round_trip(swept_store, tmp_path):
    store, task = swept_store
    with pytest.raises(ValueError, match="written by"):
        verify_sweep(store, ScriptedBackend("Yes", model_id="other-slm"))
    first, second = (s.item_id for s in store.item_sweeps(task.name)[:2])
    assert verify_sweep(store, slm_with_checks(), ids=[second]).verified == 1
    assert verify_sweep(store, slm_with_checks(), limit=1).verified == 1  # the first item in sweep order
    assert {s.item_id for s in store.item_sweeps(task.name) if s.verification} == {first, second}
    assert verification_values(store.item_sweeps(task.name)) == []  # not every item: no family yet
    verify_sweep(store, slm_with_checks())
    records = replay(AutoMixPolicy(0.5), task, None, store)
    greedy = {s.item_id: s.slm_greedy.correct for s in store.item_sweeps(task.name)}
    for r in records:
        assert r.answer.decision.kind == ("slm" if greedy[r.item_id] else "llm")
        assert r.answer.usage["slm"].calls == 2

    path = tmp_path / "v.jsonl.gz"
    export_compact(store, path)
    header, recs = read_compact(path)
    assert header["version"] == 3 and sum("verifies" in g for r in recs for g in r["generations"]) == 8
    rebuilt = TraceStore(tmp_path / "rebuilt.sqlite")
    import_compact(path, rebuilt, task=task)
    again = tmp_path / "again.jsonl.gz"
    export_compact(rebuilt, again)
    assert again.read_bytes() == path.read_bytes()
    assert [s.verification for s in rebuilt.item_sweeps(task.name)] == [s.verification for s in
                                                                         store.item_sweeps(task.name)]
    replayed = replay(AutoMixPolicy(0.5), task, None, rebuilt)
    assert [(r.answer.text, r.cost_usd, r.answer.decision.kind) for r in replayed] == \
        [(r.answer.text, r.cost_usd, r.answer.decision.kind) for r in records]
    # the study's reading of the checks: this fake verifier knows the truth, so it ranks perfectly
    from shepherd.evaluation.study import verification_auc

    v = verification_auc(Path(rebuilt.path), task.name)
    right = sum(greedy.values())
    assert v["items"] == len(greedy) and v["yes_share"] == pytest.approx(right / len(greedy), abs=1e-4)
    assert v["auc_slm_right"] == (1.0 if 0 < right < len(greedy) else None)


def test_a_pack_without_checks_stays_as_it_was(swept_store, tmp_path):
    store, _task = swept_store
    export_compact(store, tmp_path / "a.jsonl.gz")
    assert read_compact(tmp_path / "a.jsonl.gz")[0]["version"] == 1


def test_cli_verify_refuses_a_missing_store(tmp_path):
    from typer.testing import CliRunner

    from shepherd.cli import app

    r = CliRunner().invoke(app, ["sweep", "verify", "--store", str(tmp_path / "none.sqlite")])
    assert r.exit_code == 2 and "no trace store" in r.output


@pytest.mark.slow
def test_cli_verify_on_committed_traces_with_the_real_slm(tmp_path):
    """`shepherd sweep verify` on the first committed GSM8K test item with the real 0.5B model: one check
    stored with its call, a second run asks for nothing, another model is refused."""
    from pathlib import Path

    from typer.testing import CliRunner

    from shepherd.cli import app

    repo = Path(__file__).resolve().parents[2]
    store_path = tmp_path / "gsm8k.sqlite"
    runner = CliRunner()
    r = runner.invoke(app, ["sweep", "unpack", str(repo / "traces" / "gsm8k-test.jsonl.gz"), "--store", str(store_path)])
    assert r.exit_code == 0, r.output
    calls = len(TraceStore(store_path, readonly=True).call_log())
    r = runner.invoke(app, ["sweep", "verify", "--store", str(store_path), "--limit", "1"])
    assert r.exit_code == 0 and "1 answers verified (1 model calls" in r.output, r.output
    store = TraceStore(store_path, readonly=True)
    it = store.item_sweeps("gsm8k")[0]
    assert it.verification is not None and it.verification.extracted in ("yes", "no")
    assert len(store.call_log()) == calls + 1 and not store.duplicate_calls()
    store.close()
    r = runner.invoke(app, ["sweep", "verify", "--store", str(store_path), "--limit", "1"])
    assert r.exit_code == 0 and "0 answers verified (0 model calls" in r.output and "1 already were" in r.output
    r = runner.invoke(app, ["sweep", "verify", "--store", str(store_path), "--limit", "1",
                            "--slm", "qwen2.5-coder-1.5b-instruct-q4_k_m"])
    assert r.exit_code != 0 and "written by" in r.output
