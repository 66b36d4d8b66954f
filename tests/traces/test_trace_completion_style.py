"""A completion-style task's sweep: the assistant turn starts with the task's prefix (a stub), which stays
input; the LLM's stored answer, the hints and the grades are about what follows it; replay maps hints up to
the grid from that answer; a pack leaves the prefix out and the import puts the task's own back."""

from __future__ import annotations

import gzip

import pytest
from trace_fakes import STUB, FakeTask, StubTask, run_fake_sweep

from shepherd.evaluation.replay import replay
from shepherd.policies import FixedHint, SLMOnly
from shepherd.traces.compact import CompactTraceError, export_compact, import_compact
from shepherd.traces.store import TraceStore


@pytest.fixture
def stub_store(tmp_path):
    store = TraceStore(tmp_path / "stub.sqlite")
    task = StubTask(8)
    run_fake_sweep(store, task)
    return store, task


def test_the_stub_is_input_and_hints_are_cut_from_what_follows_it(stub_store):
    store, task = stub_store
    (entry, *_) = store.item_entries(store.resolve_sweep(task.name, None).sweep)
    assert entry.request.prefix == STUB
    for s in store.item_sweeps(task.name):
        full = s.llm_full.generation
        assert full.text.startswith("First take") and STUB not in full.text
        assert s.llm_full.correct == (s.item_id not in ("fake/4",))
        half = s.level(0.5)
        assert full.text.startswith(half.hint_text) and not half.hint_text.startswith(STUB)
        # the SLM continued stub + hint: with a long enough hint it follows the LLM's answer
        assert (half.hint_text + half.trials[0].generation.text).split() == full.text.split() or not half.trials[0].correct


def test_replay_maps_an_off_grid_hint_up_from_the_answer_after_the_stub(stub_store):
    store, task = stub_store
    s = store.item_sweeps(task.name)[3]
    assert s.grid_tokens == [0, 2, 4, 6, 8, 11, 13, 15, 17, 19]  # L = 21, as in chat style: the stub is not counted
    (rec,) = replay(FixedHint(tokens=9), task, [s.item_id], store)
    (m,) = rec.mapped
    assert (m.requested_tokens, m.served_tokens) == (9, 11)
    assert rec.answer.text == s.level(0.5).hint_text + s.level(0.5).trials[0].generation.text
    assert rec.correct
    (rec,) = replay(SLMOnly(), task, [s.item_id], store)
    assert rec.answer.text == s.slm_greedy.generation.text


def test_a_pack_leaves_the_stub_out_and_the_import_puts_it_back(stub_store, tmp_path):
    store, task = stub_store
    packed = tmp_path / "stub.jsonl.gz"
    export_compact(store, packed)
    assert STUB not in gzip.decompress(packed.read_bytes()).decode()
    again = TraceStore(tmp_path / "again.sqlite")
    summary = import_compact(packed, again, task=task)  # every rebuilt request checked against its key
    assert summary.items == 8
    assert {s.item_id: s.llm_full.generation.text for s in again.item_sweeps(task.name)} == \
           {s.item_id: s.llm_full.generation.text for s in store.item_sweeps(task.name)}

    class OtherStub(StubTask):
        def prefix(self, item):
            return "Thinking :\n"

    with pytest.raises(CompactTraceError, match="prefix hash differs"):
        import_compact(packed, TraceStore(tmp_path / "other.sqlite"), task=OtherStub(8))


def test_a_chat_style_pack_is_as_before(tmp_path):
    store = TraceStore(tmp_path / "chat.sqlite")
    run_fake_sweep(store, FakeTask(3))
    packed = tmp_path / "chat.jsonl.gz"
    export_compact(store, packed)
    assert "prefix_sha256" not in gzip.decompress(packed.read_bytes()).decode()
