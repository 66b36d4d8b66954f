"""Packed traces: no question text in the file, an exact rebuild from the task's data, loud failure when
the data or the file is not what the sweep used."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from trace_fakes import FakeTask, run_fake_sweep
from typer.testing import CliRunner

from shepherd.cli import app
from shepherd.evaluation.suite import sweeps_fingerprint
from shepherd.tasks.base import Item
from shepherd.traces.compact import CompactTraceError, export_compact, import_compact, read_compact
from shepherd.traces.store import TraceStore


class RenamedTask(FakeTask):
    """Same item ids, but every question says it in other words (another copy of a dataset)."""

    def __init__(self, n: int = 8):
        super().__init__(n)
        self.items = [Item(it.id, it.question.replace("What is", "What's"), it.reference, it.metadata)
                      for it in self.items]


@pytest.fixture
def packed(swept_store, tmp_path):
    store, task = swept_store
    path = tmp_path / "fake.jsonl.gz"
    summary = export_compact(store, path)
    return store, task, path, summary


def test_pack_holds_outputs_but_no_question_text(packed):
    _store, task, path, summary = packed
    assert summary.items == 8 and summary.generations > 0 and summary.calls > 0
    raw = gzip.decompress(path.read_bytes()).decode()
    for item in task.items:
        assert item.question not in raw
    header, records = read_compact(path)
    assert header["task"] == "fake-add" and len(records) == 8
    assert all("messages" not in g["request"] for r in records for g in r["generations"])
    assert all(r["messages_sha256"] for r in records)


def test_unpack_rebuilds_the_same_traces_and_repacks_byte_identically(packed, tmp_path):
    store, task, path, _ = packed
    rebuilt = TraceStore(tmp_path / "rebuilt.sqlite")
    summary = import_compact(path, rebuilt, task=task)
    assert summary.items == 8
    assert sweeps_fingerprint(rebuilt.item_sweeps(task.name)) == sweeps_fingerprint(store.item_sweeps(task.name))
    assert rebuilt.labels(task.name) == store.labels(task.name)
    assert len(rebuilt.call_log()) == len(store.call_log()) and not rebuilt.duplicate_calls()
    again = tmp_path / "again.jsonl.gz"
    export_compact(rebuilt, again)
    assert again.read_bytes() == path.read_bytes()
    # a second unpack changes nothing: items and call log are not doubled
    second = import_compact(path, rebuilt, task=task)
    assert second.items == 0 and len(second.skipped) == 8
    assert len(rebuilt.call_log()) == len(store.call_log())


def test_token_logprobs_travel_in_a_version_2_pack_and_a_pack_without_them_stays_version_1(packed, tmp_path):
    from shepherd.models.base import TokenLogprobs

    store, task, path, _ = packed
    assert read_compact(path)[0]["version"] == 1  # nothing scored yet: the bytes of a version 1 pack
    it = store.item_sweeps(task.name)[0]
    greedy = it.slm_greedy.generation
    key = next(r["key"] for r in store._query("SELECT key FROM generations WHERE text = ? AND model = ?",
                                                (greedy.text, greedy.model)))
    lp = TokenLogprobs([-0.5] * 3, [0.1] * 3, [1.0] * 3, [1, 2, len(greedy.text)])
    assert store.set_logprobs(key, lp)
    v2 = tmp_path / "v2.jsonl.gz"
    export_compact(store, v2)
    header, records = read_compact(v2)
    assert header["version"] == 2 and sum("logprobs" in g for r in records for g in r["generations"]) == 1
    rebuilt = TraceStore(tmp_path / "rebuilt2.sqlite")
    import_compact(v2, rebuilt, task=task)
    assert rebuilt.get(key).logprobs.logprobs == [-0.5] * 3
    assert rebuilt.item_sweeps(task.name)[0].slm_greedy.generation.logprobs.ends[-1] == len(greedy.text)


def test_unpack_refuses_other_questions_under_the_same_ids(packed, tmp_path):
    _, _, path, _ = packed
    with pytest.raises(CompactTraceError, match="messages hash differs"):
        import_compact(path, TraceStore(tmp_path / "x.sqlite"), task=RenamedTask(8))


def test_unpack_refuses_a_changed_request_key(packed, tmp_path):
    _, task, path, _ = packed
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    rec = json.loads(lines[1])
    rec["generations"][0]["request"]["max_tokens"] = 7  # no longer the request that key addresses
    lines[1] = json.dumps(rec)
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(CompactTraceError, match="stored key"):
        import_compact(bad, TraceStore(tmp_path / "x.sqlite"), task=task)


@pytest.mark.parametrize("content,match", [
    (b"not gzip at all", "not a readable gzip"),
    (gzip.compress(b'{"format": "shepherd-traces", "version": 1}\n{broken'), "broken JSON"),
    (gzip.compress(b'{"format": "something-else"}\n'), "not a shepherd-traces"),
    (gzip.compress(b'{"format": "shepherd-traces", "version": 99}\n'), "newer"),
    (gzip.compress(b""), "empty"),
])
def test_bad_files_fail_clearly(tmp_path, content, match):
    p = tmp_path / "t.jsonl.gz"
    p.write_bytes(content)
    with pytest.raises(CompactTraceError, match=match):
        read_compact(p)


def test_unfinished_items_are_left_out(tmp_path):
    store = TraceStore(tmp_path / "s.sqlite")
    task = FakeTask(4)
    run_fake_sweep(store, task)
    sweep = store.resolve_sweep(task.name).sweep
    store._write("UPDATE sweep_items SET done_at = NULL WHERE item_id = 'fake/2'")
    summary = export_compact(store, tmp_path / "p.jsonl.gz")
    assert summary.items == 3 and summary.skipped == ["fake/2"]
    assert sweep == summary.sweep


def test_cli_pack_and_unpack(tmp_path, monkeypatch):
    # the CLI loads the task by name from the registry: use GSM8K items swept by scripted models
    from shepherd.models.scripted import ScriptedBackend
    from shepherd.tasks.gsm8k import GSM8K
    from shepherd.traces.executor import LocalExecutor
    from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep

    task = GSM8K()
    items = task.load("test", limit=3)
    slm = ScriptedBackend(lambda r: "The answer is 1.", model_id="s")
    llm = ScriptedBackend(lambda r: "Step one. Step two. The answer is 18.", model_id="l")
    store = TraceStore(tmp_path / "g.sqlite")
    cfg = SweepConfig(task="gsm8k", slm="s", llm="l", max_tokens=32)
    plan = SweepPlan(trials=1, samples=1, temperature=0.7)
    register_sweep(store, cfg, plan, "test")
    list(LocalExecutor(slm, llm, task, store).run(make_units(task, items, cfg, plan, "test")))
    store.close()

    runner = CliRunner()
    packed = tmp_path / "g.jsonl.gz"
    r = runner.invoke(app, ["sweep", "pack", str(packed), "--store", str(tmp_path / "g.sqlite")])
    assert r.exit_code == 0, r.output
    assert items[0].question not in gzip.decompress(packed.read_bytes()).decode()
    r = runner.invoke(app, ["sweep", "unpack", str(packed), "--store", str(tmp_path / "re.sqlite")])
    assert r.exit_code == 0, r.output
    rebuilt = TraceStore(tmp_path / "re.sqlite", readonly=True)
    assert [s.item_id for s in rebuilt.item_sweeps("gsm8k")] == [it.id for it in items]
    assert rebuilt.item_sweeps("gsm8k")[0].messages == task.messages(items[0])
    assert rebuilt.item_sweeps("gsm8k")[0].messages[-1]["content"].startswith(items[0].question)
    r = runner.invoke(app, ["sweep", "unpack", str(tmp_path / "missing.jsonl.gz"), "--store",
                            str(tmp_path / "re.sqlite")])
    assert r.exit_code != 0 and "no packed trace file" in r.output


@pytest.mark.parametrize("name", ["humaneval", "mbpp"])
def test_committed_code_traces_still_unpack(tmp_path, name):
    """The chat-style prompts (messages and no assistant prefix) are what the committed traces were swept
    with: `import_compact` checks every item's messages hash and every rebuilt request's key against them."""
    path = Path(__file__).resolve().parents[2] / "traces" / f"{name}.jsonl.gz"
    store = TraceStore(tmp_path / "t.sqlite")
    summary = import_compact(path, store)
    assert summary.items >= 100 and summary.task == name
    info = store.resolve_sweep(name, None)
    assert all(e.request.prefix == "" for e in store.item_entries(info.sweep))
    store.close()
