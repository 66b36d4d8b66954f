"""Sweeps of recorded traffic: the queries a server answered become sweep items, graded without gold answers.

`RecordTask` is a task whose items are the recorded queries (`shepherd.traces.record`). Its grader uses the
best label each item has, in this order:
  1. a corrected answer from feedback: the reference (an answer is right when it agrees with it);
  2. a feedback score >= 0.5: the served answer is the reference; a score < 0.5: the served answer is known
     wrong (an answer agreeing with it is wrong; when it was the LLM's own answer, the LLM is wrong too);
  3. no feedback: `agreement.proxy_verdict` against the LLM's full answer (which the sweep generates as its
     usual first step: the grader reads it back from the sweep's store).
"Agrees" is `proxy_verdict`: the same final answer for math-like text, the same results on the query's
example calls for code, MiniLM cosine >= threshold for free text.

Each item is swept from the request that was served (its token budget and stop sequences, made greedy), so
the generations paid for while serving are found in the store under the same keys and not paid again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from ..agreement import PROXY_SIMILARITY, normalize_answer, proxy_verdict, query_text
from ..models.base import GenerationRequest
from ..tasks.base import Grade, Item, Task
from .record import RecordedQuery, RecordStore
from .store import TraceStore
from .sweep import SweepConfig, SweepPlan, SweepUnit

RECORD_TASK = "record"


def item_label(q: RecordedQuery) -> tuple[str, str]:
    """(label, reference): how a recorded query is graded, and against what ("" for the proxy)."""
    fb = q.feedback
    if fb is not None and fb.corrected_answer:
        return "corrected", fb.corrected_answer
    if fb is not None and fb.score is not None:
        return ("served_right" if fb.score >= 0.5 else "served_wrong"), q.answer or ""
    return "proxy", ""


def base_request(request: GenerationRequest) -> GenerationRequest:
    """The sweep's request for a served one: the same prompt, budget and stops, greedy (what the shepherding
    routes serve unless the caller asked for sampling)."""
    if request.greedy and not request.prefix:
        return request
    return replace(request, prefix="", temperature=0.0, top_p=1.0, seed=0 if request.seed is None else request.seed)


class RecordTask(Task):
    """The recorded queries of a record store as a task (not in the task registry: it needs the store)."""

    name: ClassVar[str] = RECORD_TASK
    description: ClassVar[str] = "queries a server answered, recorded with [server.record]"
    kind: ClassVar[Any] = "math"  # answers compare by final answer first; code and free text by `proxy_verdict`
    splits: ClassVar[tuple[str, ...]] = ("served",)
    default_split: ClassVar[str] = "served"

    def __init__(self, record: str | Path, *, since: float | None = None, threshold: float = PROXY_SIMILARITY,
                 similarity: Callable[[str, str], float] | None = None) -> None:
        super().__init__(None, source="local")
        self.record_path = Path(record)
        if not self.record_path.is_file():
            raise FileNotFoundError(f"no record store at {record}")
        self.since = since
        self.threshold = threshold
        self.similarity = similarity
        #: the sweep's store, where the grader finds each item's LLM full answer (`bind`)
        self.store: TraceStore | None = None
        self.llm: str | None = None
        with RecordStore(self.record_path, readonly=True) as rs:
            self.queries = rs.queries(since)

    def bind(self, store: TraceStore, llm_model_id: str) -> None:
        """The sweep's store and LLM: the proxy label reads the LLM's full answer from there."""
        self.store, self.llm = store, llm_model_id

    # -- items --------------------------------------------------------------------------------------
    def _load_split(self, split: str) -> list[Item]:
        hashed = [q for q in self.queries if q.request is None]
        if hashed and len(hashed) == len(self.queries):
            raise ValueError(f"{self.record_path} was recorded with hash_messages = true: it keeps no messages, "
                             "so there is nothing to sweep")
        chosen: dict[str, RecordedQuery] = {}  # one item per distinct request: rated ones first, then newest
        for q in self.queries:
            if q.request is None:
                continue
            k = base_request(q.request).key("")
            old = chosen.get(k)
            if old is None or (q.feedback is not None or old.feedback is None):
                chosen[k] = q
        items = []
        for q in sorted(chosen.values(), key=lambda q: q.at):
            assert q.request is not None
            label, reference = item_label(q)
            base = base_request(q.request)
            items.append(Item(id=q.response_id, question=query_text(base.messages), reference=reference,
                              metadata={"label": label, "served_answer": q.answer or "",
                                        "messages": base.message_dicts, "route": q.route, "key": q.key_name,
                                        "request": base}))
        self.dropped = []
        return items

    def messages(self, item: Item) -> list[dict[str, str]]:
        return list(item.metadata["messages"])

    # -- grading ------------------------------------------------------------------------------------
    def _agree(self, item: Item, answer: str, reference: str):
        return proxy_verdict(None, None, answer, reference, item.question, threshold=self.threshold,
                             similarity=self.similarity)

    def llm_full(self, item: Item) -> str | None:
        if self.store is None or self.llm is None:
            return None
        gen = self.store.get(item.metadata["request"].key(self.llm))
        return None if gen is None else gen.text

    def grade(self, item: Item, response: str) -> Grade:
        label = item.metadata["label"]
        extracted = normalize_answer(response)
        if label in ("corrected", "served_right"):
            v = self._agree(item, response, item.reference)
            return Grade(v.agree, extracted, f"{label} ({v.basis})")
        served = item.metadata["served_answer"]
        if label == "served_wrong" and self._agree(item, response, served).agree:
            return Grade(False, extracted, "agrees with an answer rated wrong")
        full = self.llm_full(item)
        if full is None:
            raise LookupError(f"record item {item.id}: the LLM's full answer is not in the sweep's store (the sweep "
                              "stores it first; call RecordTask.bind(store, llm_model_id))")
        if label == "served_wrong" and self._agree(item, full, served).agree:
            return Grade(False, extracted, "the LLM's answer agrees with an answer rated wrong")
        v = self._agree(item, response, full)
        return Grade(v.agree, extracted, f"proxy ({v.basis}{'' if v.similarity is None else f' {v.similarity:.3f}'})")


@dataclass
class Seeded:
    """What seeding a sweep store with the served generations did."""

    copied: int
    already: int


def seed_store(record: str | Path, store: TraceStore) -> Seeded:
    """Copy the generations paid for while serving into the sweep's store (the same file: nothing to do), so
    that the sweep finds them under their keys instead of calling the models again."""
    if Path(store.path).resolve() == Path(record).resolve():
        return Seeded(0, 0)
    copied = already = 0
    with RecordStore(record, readonly=True) as rs:
        for row in rs.traces._query("SELECT key FROM generations WHERE origin = 'served'"):
            key = row[0]
            if store.has(key):
                already += 1
                continue
            gen, req = rs.traces.get(key), rs.traces.get_request(key)
            if gen is None or req is None:
                continue
            store.put(key, gen.model, req, gen, origin="served", log_call=False)
            copied += 1
    return Seeded(copied, already)


def record_units(task: RecordTask, items: Sequence[Item], config: SweepConfig, plan: SweepPlan) -> list[SweepUnit]:
    """One sweep unit per recorded query, swept from the request that was served."""
    return [SweepUnit(sweep=config.sweep_id, config=config, plan=plan, item=it, split=task.default_split,
                      messages=task.messages(it), base=it.metadata["request"]) for it in items]
