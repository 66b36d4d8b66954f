"""Sweeping recorded traffic: queries served (and rated) by the real app with scripted models, swept from the
record without paying again for what serving paid for, labelled from feedback or by the proxy, trained on."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from trace_fakes import models
from typer.testing import CliRunner

from shepherd.cli import app as cli
from shepherd.config import parse_config
from shepherd.models.base import GenerationRequest
from shepherd.server import create_app
from shepherd.traces.executor import LocalExecutor
from shepherd.traces.from_record import RecordTask, record_units, seed_store
from shepherd.traces.record import RecordStore
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, register_sweep


def question(i: int) -> str:
    return f"What is {i} + {2 * i + 3}?"


def serve(record, n: int = 10, feedback: dict | None = None):
    """Serve n queries with recording on (even ones LLM-only, odd ones with a 3-token hint); rate some.
    Returns (response ids, the scripted slm, llm)."""
    slm, llm = models()
    cfg = parse_config({"llm": {"backend": "scripted", "model": "fake-llm"},
                        "slm": {"backend": "scripted", "model": "fake-slm"}, "run": {"max_tokens": 64},
                        "server": {"warmup": False, "record": {"store": str(record)},
                                   "models": {"big": {"policy": "llm-only"},
                                              "hinted": {"policy": "fixed-hint", "settings": {"tokens": 3}}}}})
    ids = []
    with TestClient(create_app(cfg, {"slm": slm, "llm": llm})) as client:
        for i in range(n):
            r = client.post("/v1/chat/completions", json={
                "model": "big" if i % 2 == 0 else "hinted",
                "messages": [{"role": "user", "content": question(i)}]})
            assert r.status_code == 200, r.text
            ids.append(r.json()["id"])
        for i, body in (feedback or {}).items():
            r = client.post("/v1/feedback", json={"response_id": ids[i], **body})
            assert r.status_code == 200, r.text
    return ids, slm, llm


def sweep(record, store_path, plan=None):
    task = RecordTask(record)
    slm, llm = models()
    store = TraceStore(store_path)
    seeded = seed_store(record, store)
    task.bind(store, llm.model_id)
    plan = plan or SweepPlan(grid=(0.0, 0.2, 0.4, 0.6, 0.8), samples=2, temperature=0.7)
    cfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=64)
    register_sweep(store, cfg, plan, task.default_split, settings={"labels": "proxy"})
    items = task.load()
    results = list(LocalExecutor(slm, llm, task, store).run(record_units(task, items, cfg, plan)))
    assert all(r.error is None for r in results), [r.error for r in results]
    return store, task, items, slm, llm, seeded


def test_sweep_reuses_every_generation_paid_for_while_serving(tmp_path):
    record = tmp_path / "served.sqlite"
    ids, served_slm, served_llm = serve(record)
    store, task, items, slm, llm, seeded = sweep(record, tmp_path / "sweep.sqlite")
    assert [it.id for it in items] == ids
    assert seeded.copied == len(served_slm.calls) + len(served_llm.calls)
    # the LLM-only answers served are the sweep's full answers: not one of them is generated again
    served = {("llm", r.key("fake-llm")) for r in served_llm.calls} | {("slm", r.key("fake-slm")) for r in served_slm.calls}
    swept = {("llm", r.key("fake-llm")) for r in llm.calls} | {("slm", r.key("fake-slm")) for r in slm.calls}
    assert served and not served & swept
    full_keys = {it.metadata["request"].key("fake-llm") for it in items}
    served_full = {k for role, k in served if role == "llm" and k in full_keys}
    assert len(served_full) == len(items) // 2  # the LLM-only queries' answers were full LLM answers ...
    assert not {r.key("fake-llm") for r in llm.calls} & served_full  # ... and the sweep paid for none of them
    assert len(llm.calls) == len(items) // 2  # the hinted queries' full answers: the only LLM calls left
    assert store.duplicate_calls() == []
    # a rerun pays for nothing
    again = list(LocalExecutor(*models(), task, store).run(record_units(
        task, items, SweepConfig(task="record", slm="fake-slm", llm="fake-llm", max_tokens=64),
        SweepPlan(grid=(0.0, 0.2, 0.4, 0.6, 0.8), samples=2, temperature=0.7))))
    assert all(r.skipped for r in again)


def test_labels_come_from_feedback_first_then_the_proxy(tmp_path):
    record = tmp_path / "served.sqlite"
    # item 4: the LLM is wrong (the fakes' every fifth item); its user corrects it. Item 2 is rated wrong
    # (it was the LLM's answer: the LLM is wrong there). Item 6 is rated right.
    ids, _, _ = serve(record, n=8, feedback={4: {"corrected_answer": "The answer is 15."},
                                             2: {"score": 0.0}, 6: {"score": 1.0}})
    store, task, items, *_ = sweep(record, tmp_path / "sweep.sqlite")
    by = {it.id: it for it in items}
    assert by[ids[4]].metadata["label"] == "corrected" and by[ids[2]].metadata["label"] == "served_wrong"
    assert by[ids[6]].metadata["label"] == "served_right" and by[ids[0]].metadata["label"] == "proxy"
    sweeps = {s.item_id: s for s in store.item_sweeps("record")}
    assert sweeps[ids[4]].llm_full.correct is False  # "The answer is 16." against the correction 15
    assert task.grade(by[ids[4]], "so it is 15 . The answer is 15.").correct
    assert sweeps[ids[2]].llm_full.correct is False  # rated wrong, and it was the LLM's own answer
    assert sweeps[ids[6]].llm_full.correct is True and sweeps[ids[0]].llm_full.correct is True
    # the proxy: the SLM's answer agrees with the LLM's full answer (item 0 needs no hint, item 1 does)
    assert sweeps[ids[0]].levels[0].trials[0].correct is True
    assert sweeps[ids[1]].levels[0].trials[0].correct is False
    assert store.sweeps("record")[0].config["labels"] == "proxy"


def test_proxy_grading_of_free_text_uses_the_similarity(tmp_path):
    record = tmp_path / "served.sqlite"
    rs = RecordStore(record)
    from shepherd.traces.record import ServedRecord

    req = GenerationRequest.create([{"role": "user", "content": "Describe the sea."}], max_tokens=32)
    rs.write([ServedRecord("r1", "anonymous", "shepherd", "p", req, "It is big and blue.", {}, 0.0, 0.0, 0.0)])
    rs.close()
    task = RecordTask(record, similarity=lambda a, b: 1.0 if "blue" in a and "blue" in b else 0.1)
    store = TraceStore(tmp_path / "s.sqlite")
    (item,) = task.load()
    from shepherd.models.base import Generation

    store.put(item.metadata["request"].key("llm"), "llm", item.metadata["request"],
              Generation("The sea is vast and blue.", 5, 6, "stop", 0.1, "llm"))
    task.bind(store, "llm")
    g = task.grade(item, "Blue, and very big: blue.")
    assert g.correct and "embedding" in g.reason
    assert not task.grade(item, "It is made of sand.").correct


def test_hash_only_record_cannot_be_swept(tmp_path):
    record = tmp_path / "served.sqlite"
    rs = RecordStore(record)
    from shepherd.traces.record import ServedRecord

    req = GenerationRequest.create([{"role": "user", "content": "hi"}], max_tokens=8)
    rs.write([ServedRecord("r1", "anonymous", "shepherd", "p", req, "hello", {}, 0.0, 0.0, 0.0)], hash_messages=True)
    rs.close()
    with pytest.raises(ValueError, match="hash_messages"):
        RecordTask(record).load()


CONFIG = """
[slm]
backend = "scripted"
model = "fake-slm"
[llm]
backend = "scripted"
model = "fake-llm"
"""


def test_cli_sweep_from_record_then_train(tmp_path, monkeypatch):
    """`shepherd sweep run --from-record` and `shepherd train --task record` on the fakes' models (the config's
    scripted backends are replaced by the fakes' scripts through the factory)."""
    from shepherd.models import factory

    slm, llm = models()
    monkeypatch.setattr(factory, "build_backend", lambda m: slm if m.model == "fake-slm" else llm)
    record = tmp_path / "served.sqlite"
    serve(record, n=16, feedback={3: {"score": 1.0}})
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    store = tmp_path / "sweep.sqlite"
    runner = CliRunner()
    args = ["sweep", "run", "--from-record", str(record), "--store", str(store), "--config", str(cfg),
            "--grid", "0,0.2,0.4,0.6,0.8", "--samples", "2", "--engine", "sequential"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "16 recorded queries" in r.output and "served generations copied" in r.output
    assert len(llm.calls) == 8  # only the hinted queries' full answers
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "0 model calls" in r.output, r.output
    assert runner.invoke(cli, ["sweep", "run", "gsm8k", "--from-record", str(record), "--store", str(store)]
                         ).exit_code != 0
    out = tmp_path / "predictor"
    r = runner.invoke(cli, ["train", "--store", str(store), "--task", "record", "--out", str(out), "--json",
                            "--epochs", "40", "--no-reactive"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["items"] >= 8 and (out / "manifest.json").is_file()
