"""The trace store: content keys, durable single-transaction writes, schema version, export."""

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time

import pytest

from shepherd.models.base import Generation, GenerationRequest
from shepherd.traces.store import SCHEMA_VERSION, StoreError, TraceStore, request_from_json, request_to_json


def gen(text="hello world", **kw):
    base = {"text": text, "prompt_tokens": 5, "completion_tokens": 2, "finish_reason": "stop", "latency_s": 0.5,
            "model": "m"}
    base.update(kw)
    return Generation(**base)


def req(**kw):
    kw.setdefault("max_tokens", 64)
    return GenerationRequest.create([{"role": "user", "content": "What is 2+2?"}], **kw)


def test_same_request_same_key_and_every_field_counts():
    r = req()
    assert r.key("m") == req().key("m")
    variants = [req(prefix="The"), req(temperature=0.7), GenerationRequest.create("What is 2+3?", max_tokens=64),
                GenerationRequest.create("What is 2+2?", max_tokens=65), req(stop=["\n"])]
    keys = {v.key("m") for v in variants} | {r.key("m"), r.key("other-model")}
    assert len(keys) == len(variants) + 2
    # greedy requests ignore the seed; sampled ones do not
    assert req(seed=1).key("m") == req(seed=2).key("m")
    assert req(temperature=0.7, seed=1).key("m") != req(temperature=0.7, seed=2).key("m")


def test_put_get_round_trip_and_first_write_wins(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    r = req()
    k = r.key("m")
    assert store.get(k) is None
    assert store.put(k, "m", r, gen("first")) is True
    assert store.put(k, "m", r, gen("second")) is False  # INSERT OR IGNORE: nothing paid twice is stored twice
    got = store.get(k)
    assert got.text == "first" and got.cached and got.completion_tokens == 2 and got.finish_reason == "stop"
    assert store.get_request(k) == r
    assert request_from_json(request_to_json(r)) == r
    # the call log has one line per real call (a duplicate call would show up here)
    assert len(store.call_log()) == 2
    assert store.duplicate_calls() == [(k, 2)]


def test_derived_generations_are_not_model_calls(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    r = req(max_tokens=3)
    store.put(r.key("m"), "m", r, gen("hello"), origin="derived", derived_from="abc")
    assert store.call_log() == []
    assert store.origin(r.key("m")) == "derived"
    assert store.counts()["derived"] == 1


def test_wal_schema_version_and_reopen(tmp_path):
    path = tmp_path / "t.sqlite"
    store = TraceStore(path)
    store.put(req().key("m"), "m", req(), gen())
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        TraceStore(path)


def test_not_a_store(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError):
        TraceStore(bad)


def test_readonly_open(tmp_path):
    path = tmp_path / "t.sqlite"
    TraceStore(path).put(req().key("m"), "m", req(), gen())
    ro = TraceStore(path, readonly=True)
    assert ro.get(req().key("m")).text == "hello world"


def test_export_jsonl_and_parquet(tmp_path, swept_store):
    store, _task = swept_store
    n = store.export(tmp_path / "rows.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert n == len(lines) > 0
    kinds = {x["kind"] for x in lines}
    assert kinds == {"llm_full", "hint", "sample"}
    hint = next(x for x in lines if x["kind"] == "hint" and x["hint_tokens"] > 0)
    assert hint["hint_text"] and hint["item_id"].startswith("fake/") and "correct" in hint
    g = store.export(tmp_path / "gens.jsonl", what="generations")
    assert g == store.counts()["generations"]
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="pyarrow"):
            store.export(tmp_path / "rows.parquet")
    else:
        import pyarrow.parquet as pq

        assert store.export(tmp_path / "rows.parquet") == n
        assert pq.read_table(tmp_path / "rows.parquet").num_rows == n


def test_claims_keep_an_item_to_one_live_process_and_free_a_dead_ones(tmp_path):
    store = TraceStore(tmp_path / "t.sqlite")
    assert store.claim("s", "a") is None
    assert store.claim("s", "a") is None  # ours already: claiming again is fine
    host = socket.gethostname()
    # a live process on this host holds "b": not ours
    live = os.getppid()
    store._write("INSERT INTO claims(sweep, item_id, host, pid, at) VALUES ('s', 'b', ?, ?, ?)",
                 (host, live, time.time()))
    assert store.claim("s", "b") == f"{host}:{live}"
    # ... unless its claim is older than the stale limit
    assert store.claim("s", "b", stale_after_s=-1.0) is None
    # a process that has exited (a killed sweep) leaves a claim that the next sweep takes over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    store._write("INSERT INTO claims(sweep, item_id, host, pid, at) VALUES ('s', 'c', ?, ?, ?)",
                 (host, int(dead.stdout), time.time()))
    assert store.claim("s", "c") is None
    # release drops only this process's claims
    store._write("INSERT INTO claims(sweep, item_id, host, pid, at) VALUES ('s', 'd', ?, ?, ?)",
                 (host, live, time.time()))
    for item in "abcd":
        store.release("s", item)
    left = store.claims()
    assert [(c["item_id"], c["holder"]) for c in left] == [("d", f"{host}:{live}")]


def test_token_logprobs_are_stored_added_later_and_read_back(tmp_path):
    from shepherd.models.base import TokenLogprobs

    lp = TokenLogprobs([-0.5, -0.25], [0.7, 0.1], [0.2, 3.0], [5, 11])
    store = TraceStore(tmp_path / "t.sqlite")
    with_lp = gen()
    with_lp.logprobs, with_lp.mean_logprob = lp, lp.mean
    other = GenerationRequest.create("other question", max_tokens=4)
    store.put(req().key("m"), "m", req(), with_lp)
    store.put(other.key("m"), "m", other, gen())
    got = store.get(req().key("m"))
    assert got.logprobs.logprobs == [-0.5, -0.25] and got.logprobs.ends == [5, 11] and got.mean_logprob == -0.375
    assert store.get(other.key("m")).logprobs is None
    # scored afterwards: only a generation without them gets them, and its text and call log stay
    assert store.set_logprobs(other.key("m"), lp) is True
    assert store.set_logprobs(other.key("m"), TokenLogprobs([-9.0], [0.0], [0.0], [1])) is False
    assert store.get(other.key("m")).logprobs.mean == -0.375 and store.get(other.key("m")).text == "hello world"
    assert len(store.call_log()) == 2


def test_a_version_1_store_is_upgraded_on_a_writable_open_and_read_as_it_is_otherwise(tmp_path):
    path = tmp_path / "v1.sqlite"
    store = TraceStore(path)
    store.put(req().key("m"), "m", req(), gen())
    store.close()
    conn = sqlite3.connect(path)  # what a version 1 store looked like: no logprobs column
    conn.execute("ALTER TABLE generations DROP COLUMN logprobs")
    conn.execute("UPDATE meta SET value='1' WHERE key='schema_version'")
    conn.commit()
    conn.close()
    ro = TraceStore(path, readonly=True)
    assert ro.get(req().key("m")).logprobs is None and ro.schema_version == 1
    ro.close()
    rw = TraceStore(path)
    assert rw.schema_version == SCHEMA_VERSION == 2
    assert rw.get(req().key("m")).text == "hello world"
