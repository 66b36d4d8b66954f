"""Recorded traffic: what a server answered, kept in a trace store so that it can be swept and trained on.

A record store is a trace store (`TraceStore`: the served generations land in its `generations` table under
their content keys, exactly as a sweep would store them, so a sweep of the recorded queries finds them
paid for) with two more tables:
  served    one row per answered request: who asked (the key's name), the request, the answer, the
            decision, what it cost, the artifact that decided, and the keys of every generation it made
  feedback  the caller's verdict on one answer: a score in [0, 1] and/or a corrected answer

`hash_messages` keeps only hashes of what users sent: the request's messages key and the generation keys,
never the messages, nor generations (whose requests hold the messages), nor the answer (which often repeats
what the user wrote). Such a store can be rated and counted, not swept.

The server never writes on its event loop: `Recorder.submit` puts a record on a queue and one writer thread
commits what has piled up in one transaction.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.base import Generation, GenerationRequest
from .store import TraceStore, messages_key, request_from_json

log = logging.getLogger("shepherd.record")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    response_id TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    at REAL NOT NULL,
    route TEXT NOT NULL,
    policy TEXT NOT NULL,
    artifact TEXT,
    messages_key TEXT NOT NULL,
    request TEXT,
    answer TEXT,
    decision TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    llm_only_cost_usd REAL NOT NULL,
    latency_s REAL NOT NULL,
    generations TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS served_at ON served(at);
CREATE TABLE IF NOT EXISTS feedback (
    response_id TEXT PRIMARY KEY,
    key_name TEXT NOT NULL,
    at REAL NOT NULL,
    score REAL,
    corrected_answer TEXT
);
"""


@dataclass
class ServedGeneration:
    """One model call an answer made, with the request that addresses it."""

    role: str
    model: str
    request: GenerationRequest
    generation: Generation

    @property
    def key(self) -> str:
        return self.request.key(self.model)


@dataclass
class ServedRecord:
    """One answered request, as the server hands it to the recorder."""

    response_id: str
    key_name: str
    route: str
    policy: str
    request: GenerationRequest
    answer: str
    decision: dict[str, Any]
    cost_usd: float
    llm_only_cost_usd: float
    latency_s: float
    artifact: str | None = None
    generations: list[ServedGeneration] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass
class Feedback:
    score: float | None = None
    corrected_answer: str | None = None


@dataclass
class RecordedQuery:
    """A served request read back for a sweep: the request (None in a hash-only store) and its feedback."""

    response_id: str
    key_name: str
    at: float
    route: str
    request: GenerationRequest | None
    messages_key: str
    answer: str | None
    decision: dict[str, Any]
    cost_usd: float
    artifact: str | None
    generation_keys: list[str]
    feedback: Feedback | None = None


def _request_json(request: GenerationRequest) -> str:
    """`store.request_to_json` without `dataclasses.asdict` (a deep copy, the writer thread's largest cost)."""
    d = {f: getattr(request, f) for f in _REQUEST_FIELDS}
    return json.dumps(d, ensure_ascii=False, sort_keys=True)


_REQUEST_FIELDS = tuple(GenerationRequest.__dataclass_fields__)


class RecordStore:
    """A trace store with the served and feedback tables. Thread-safe (the trace store's lock)."""

    def __init__(self, path: str | Path, *, readonly: bool = False) -> None:
        self.traces = TraceStore(path, readonly=readonly)
        self.path = self.traces.path
        if not readonly:
            with self.traces._lock:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self.traces._conn.execute(stmt)

    def close(self) -> None:
        self.traces.close()

    def __enter__(self) -> RecordStore:  # noqa: PYI034 (never subclassed)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing ------------------------------------------------------------------------------------
    def write(self, records: list[ServedRecord], *, hash_messages: bool = False) -> None:
        """Commit served records (and, unless hash-only, their generations) in one transaction."""
        stmts: list[tuple[str, tuple]] = []
        now = time.time()
        for r in records:
            gens = [{"role": g.role, "model": g.model, "key": g.key, "prompt_tokens": g.generation.prompt_tokens,
                     "completion_tokens": g.generation.completion_tokens, "cached": g.generation.cached}
                    for g in r.generations]
            stmts.append((
                ("INSERT OR IGNORE INTO served(response_id, key_name, at, route, policy, artifact, messages_key, "
                 "request, answer, decision, cost_usd, llm_only_cost_usd, latency_s, generations) "
                 "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"),
                (r.response_id, r.key_name, r.at, r.route, r.policy, r.artifact, messages_key(r.request),
                 None if hash_messages else _request_json(r.request), None if hash_messages else r.answer,
                 json.dumps(r.decision, default=str), r.cost_usd, r.llm_only_cost_usd, r.latency_s,
                 json.dumps(gens))))
            if hash_messages:
                continue
            for g in r.generations:
                gen = g.generation
                if gen.cached:  # a store hit while serving: stored already, under its own key
                    continue
                stmts.append((
                    ("INSERT OR IGNORE INTO generations(key, model, request, text, prompt_tokens, "
                     "completion_tokens, finish_reason, latency_s, mean_logprob, origin, derived_from, created_at, "
                     "logprobs) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"),
                    (g.key, g.model, _request_json(g.request), gen.text, int(gen.prompt_tokens),
                     int(gen.completion_tokens), gen.finish_reason, float(gen.latency_s), gen.mean_logprob,
                     "served", None, now, gen.logprobs.pack() if gen.logprobs is not None else None)))
        if stmts:
            self.traces._tx(stmts)

    def owner(self, response_id: str) -> str | None:
        """The name of the key a response was served to (None: no such recorded response)."""
        rows = self.traces._query("SELECT key_name FROM served WHERE response_id = ?", (response_id,))
        return rows[0][0] if rows else None

    def put_feedback(self, response_id: str, key_name: str, fb: Feedback) -> None:
        """The latest feedback on a response wins; a score or a correction given before is kept when the
        new feedback leaves it out."""
        self.traces._tx([(
            ("INSERT INTO feedback(response_id, key_name, at, score, corrected_answer) VALUES (?,?,?,?,?) "
             "ON CONFLICT(response_id) DO UPDATE SET at = excluded.at, "
             "score = COALESCE(excluded.score, feedback.score), "
             "corrected_answer = COALESCE(excluded.corrected_answer, feedback.corrected_answer)"),
            (response_id, key_name, time.time(), fb.score, fb.corrected_answer))])

    def prune(self, *, max_requests: int | None = None, max_age_days: float | None = None) -> int:
        """Drop served requests (with their feedback) past the retention limits, and the served generations
        no remaining request names. Returns the number of requests dropped."""
        stmts: list[tuple[str, tuple]] = []
        if max_age_days is not None:
            stmts.append(("DELETE FROM served WHERE at < ?", (time.time() - max_age_days * 86400.0,)))
        if max_requests is not None:
            stmts.append((("DELETE FROM served WHERE response_id NOT IN "
                           "(SELECT response_id FROM served ORDER BY at DESC, rowid DESC LIMIT ?)"), (max_requests,)))
        if not stmts:
            return 0
        stmts.append(("DELETE FROM feedback WHERE response_id NOT IN (SELECT response_id FROM served)", ()))
        stmts.append((("DELETE FROM generations WHERE origin = 'served' AND key NOT IN "
                       "(SELECT json_extract(j.value, '$.key') FROM served s, json_each(s.generations) j)"), ()))
        counts = self.traces._tx(stmts)
        return sum(counts[:-2])

    # -- reading ------------------------------------------------------------------------------------
    def count(self) -> int:
        return self.traces._query("SELECT COUNT(*) FROM served")[0][0]

    def queries(self, since: float | None = None) -> list[RecordedQuery]:
        """The recorded requests (oldest first) with their feedback."""
        rows = self.traces._query(
            "SELECT s.*, f.score, f.corrected_answer, f.response_id AS fid FROM served s "
            "LEFT JOIN feedback f ON f.response_id = s.response_id WHERE s.at >= ? ORDER BY s.at, s.rowid",
            (float(since or 0.0),))
        out = []
        for r in rows:
            fb = Feedback(r["score"], r["corrected_answer"]) if r["fid"] is not None else None
            out.append(RecordedQuery(
                response_id=r["response_id"], key_name=r["key_name"], at=r["at"], route=r["route"],
                request=request_from_json(r["request"]) if r["request"] else None, messages_key=r["messages_key"],
                answer=r["answer"], decision=json.loads(r["decision"]), cost_usd=r["cost_usd"],
                artifact=r["artifact"], generation_keys=[g["key"] for g in json.loads(r["generations"])],
                feedback=fb))
        return out


class Recorder:
    """The server's side: records go on a queue, one thread commits them in batches (off the event loop),
    and applies the retention limits every `prune_every` records."""

    def __init__(self, path: str | Path, *, hash_messages: bool = False, max_requests: int | None = None,
                 max_age_days: float | None = None, batch: int = 512, prune_every: int = 1000,
                 linger_s: float = 0.05) -> None:
        self.store = RecordStore(path)
        self.hash_messages = hash_messages
        self.max_requests = max_requests
        self.max_age_days = max_age_days
        self.batch = batch
        self.prune_every = prune_every
        #: after the first record of a batch, wait this long for more: fewer, larger transactions, and fewer
        #: handovers of the GIL between the writer and the event loop under load
        self.linger_s = linger_s
        self._since_prune = 0
        self.errors = 0
        self._q: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="shepherd-recorder", daemon=True)
        self._thread.start()
        self._prune()

    def submit(self, record: ServedRecord) -> None:
        """Called on the event loop: never blocks."""
        self._q.put_nowait(record)

    def flush(self) -> None:
        """Wait until every record submitted so far is committed (blocks: call it off the event loop)."""
        self._q.join()

    def feedback(self, response_id: str, key_name: str, fb: Feedback) -> bool:
        """Store feedback from `key_name` on its own response. False when no such response was served to that
        key (unknown, pruned, or another key's). Blocks: call it off the event loop."""
        self.flush()  # a response answered a moment ago may still be on the queue
        if self.store.owner(response_id) != key_name:
            return False
        self.store.put_feedback(response_id, key_name, fb)
        return True

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=30)
        self.store.close()

    def _prune(self) -> None:
        if self.max_requests is None and self.max_age_days is None:
            return
        try:
            self.store.prune(max_requests=self.max_requests, max_age_days=self.max_age_days)
        except Exception:  # retention must not stop the recording
            log.exception("pruning the record store failed")
        self._since_prune = 0

    def _run(self) -> None:
        while True:
            first = self._q.get()
            items = [first]
            if first is not None and self.linger_s > 0 and self._q.qsize() < self.batch:
                time.sleep(self.linger_s)
            while len(items) < self.batch:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in items if r is not None]
            try:
                if records:
                    self.store.write(records, hash_messages=self.hash_messages)
                    self._since_prune += len(records)
                    if self._since_prune >= self.prune_every or (
                            self.max_requests is not None and self.store.count() > self.max_requests):
                        self._prune()
            except Exception:  # a failed write loses those records, never the server
                self.errors += len(records)
                log.exception("recording %d served requests failed", len(records))
            finally:
                for _ in items:
                    self._q.task_done()
            if any(r is None for r in items):
                return
