"""Compact, committable traces: a sweep without the benchmark's question texts.

A trace store holds every prompt in full, and a benchmark's questions are not ours to redistribute in
git. The compact form keeps what the study needs to be recomputed without calling a model: item ids,
every model output, token counts, latencies, grades, the hint cuts and the call log. The prompt of each
request is replaced by the sha256 of its messages; `import_compact` rebuilds the messages from the task's
own data (local files or the hub), checks that hash, then checks that every rebuilt request has exactly
the content key the sweep stored. A completion-style task's assistant prefix (HumanEval's stub: question
text too) is left out the same way: each request keeps only what follows it, the item records its sha256,
and the import puts the task's own prefix back. A different copy of the data, or a changed prompt format, therefore
fails loudly instead of silently evaluating other questions.

File: gzip-compressed JSON lines. Line 1 is a header (format, version, the sweep's task, models and
settings); each further line is one finished item with its generations, hints, rows and calls. Version 2
adds each generation's packed token log-probabilities (`logprobs`) where the store has them; a file
without any is still written as version 1, so re-exporting unchanged traces gives the same bytes, and
version 1 files read as before. Version 3 adds the SLM's self-verifications (`shepherd sweep verify`):
such a generation names the answer it checks (`verifies`), and its request is rebuilt from that answer and
the item's question; a file is written as version 3 only when it carries one. Written
in item order and byte-stable (sorted keys, no timestamps but the sweep's own), so a re-export of the
same traces gives the same file and git diffs stay small.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.base import Generation, GenerationRequest, TokenLogprobs
from ..verification import verification_request
from .store import TraceStore, messages_key, request_from_json
from .sweep import task_prefix

FORMAT = "shepherd-traces"
VERSION = 3


class CompactTraceError(ValueError):
    """A compact trace file cannot be imported as it is (bad file, or data that does not match it)."""


@dataclass
class CompactSummary:
    path: str
    sweep: str
    task: str
    items: int
    generations: int
    calls: int
    skipped: list[str] = field(default_factory=list)  # items left out (unfinished) or already present


def _request_without_messages(blob: str, prefix: str = "") -> dict[str, Any]:
    """The request without its messages, and without the item's own assistant prefix (`prefix`, which
    every request about the item starts with): the question text stays out of the file."""
    d = json.loads(blob)
    d.pop("messages", None)
    if prefix:
        if not d.get("prefix", "").startswith(prefix):
            raise CompactTraceError("a generation's prefix does not start with its item's assistant prefix")
        d["prefix"] = d["prefix"][len(prefix):]
    return d


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def export_compact(store: TraceStore, path: str | os.PathLike, *, task: str | None = None,
                   sweep: str | None = None) -> CompactSummary:
    """Write the finished items of one sweep to `path` (.jsonl.gz) without any question text."""
    info = store.resolve_sweep(task, sweep)
    q = store._query  # the store's own read path (same package)
    items = q("SELECT * FROM sweep_items WHERE sweep = ? AND done_at IS NOT NULL AND full_key IS NOT NULL "
              "ORDER BY seq", (info.sweep,))
    header = {"format": FORMAT, "version": 1, "sweep": info.sweep, "task": info.task, "slm": info.slm,
              "llm": info.llm, "config": info.config,
              "omitted": "question texts, gold answers and item metadata: rebuilt from the task's data on import"}
    n_gen = n_calls = 0
    lines = [""]  # the header, written last: its version depends on what the generations carry
    skipped = [r["item_id"] for r in q("SELECT item_id FROM sweep_items WHERE sweep = ? AND done_at IS NULL "
                                       "ORDER BY seq", (info.sweep,))]
    for it in items:
        iid = it["item_id"]
        base = request_from_json(it["request"])
        mkey = messages_key(base)
        rows = q("SELECT kind, fraction, trial, key, hint_tokens, correct, extracted, reason FROM rows "
                 "WHERE sweep = ? AND item_id = ? ORDER BY kind, fraction, trial", (info.sweep, iid))
        hints = q("SELECT fraction, hint_tokens, hint_text, hint_key FROM hints WHERE sweep = ? AND item_id = ? "
                  "ORDER BY fraction", (info.sweep, iid))
        keys = {it["full_key"]} | {r["key"] for r in rows if r["key"]} | {h["hint_key"] for h in hints if h["hint_key"]}
        keys |= _rescue_keys(store, base, rows, info.llm)
        checks = {r["key"] for r in rows if r["kind"] == "verify" and r["key"]}
        gens = []
        for key in sorted(keys):
            g = q("SELECT * FROM generations WHERE key = ?", (key,))
            if not g:
                continue
            g = g[0]
            verifies = None
            if key in checks:  # the SLM's check of its greedy answer: rebuilt from that answer on import
                verifies = _verified_key(store, base, info.slm, key)
                if verifies is None:
                    raise CompactTraceError(f"{info.task} {iid}: verification {key[:12]} is not the current form "
                                            "of the SLM's check of its stored greedy answer")
                keys.add(verifies)
            elif messages_key(request_from_json(g["request"])) != mkey:
                raise CompactTraceError(f"{info.task} {iid}: generation {key[:12]} was asked with other messages "
                                        "than the item's; it cannot be stored without its prompt")
            gens.append({"key": key, "model": g["model"], "request": _request_without_messages(g["request"], base.prefix),
                         "text": g["text"], "prompt_tokens": g["prompt_tokens"],
                         "completion_tokens": g["completion_tokens"], "finish_reason": g["finish_reason"],
                         "latency_s": g["latency_s"], "mean_logprob": g["mean_logprob"], "origin": g["origin"],
                         "derived_from": g["derived_from"]})
            if verifies is not None:
                gens[-1]["verifies"] = verifies
                header["version"] = VERSION
            if "logprobs" in g.keys() and g["logprobs"]:  # noqa: SIM118 - a Row's `in` tests values
                gens[-1]["logprobs"] = g["logprobs"]
                header["version"] = max(header["version"], 2)
        marks = ",".join("?" * len(keys))
        calls = [[c["key"], c["model"], c["prompt_tokens"], c["completion_tokens"], c["latency_s"], c["at"]]
                 for c in q(f"SELECT * FROM calls WHERE key IN ({marks}) ORDER BY id", tuple(sorted(keys)))]
        rec = {"item": iid, "split": it["split"], "messages_sha256": mkey,
               "request": _request_without_messages(it["request"], base.prefix), "full_key": it["full_key"],
               "full_tokens": it["full_tokens"], "plan": json.loads(it["plan"]) if it["plan"] else None,
               "done_at": it["done_at"],
               "hints": [[h["fraction"], h["hint_tokens"], h["hint_text"], h["hint_key"]] for h in hints],
               "rows": [[r["kind"], r["fraction"], r["trial"], r["key"], r["hint_tokens"], r["correct"],
                         r["extracted"], r["reason"]] for r in rows],
               "generations": gens, "calls": calls}
        if base.prefix:  # a chat-style item's record stays as it was (same bytes)
            rec["prefix_sha256"] = _sha256(base.prefix)
        lines.append(_dump(rec))
        n_gen += len(gens)
        n_calls += len(calls)
    lines[0] = _dump(header)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    raw = ("\n".join(lines) + "\n").encode("utf-8")
    # mtime=0 and no file name: the same traces give the same bytes
    with open(tmp, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    os.replace(tmp, path)
    return CompactSummary(str(path), info.sweep, info.task, len(items), n_gen, n_calls, skipped)


def _verified_key(store: TraceStore, base: GenerationRequest, slm: str, key: str) -> str | None:
    """The key of the SLM's greedy answer that verification `key` checks (None: it checks something else, or
    was asked in another prompt form)."""
    answer_key = base.key(slm)
    answer = store.get(answer_key)
    if answer is None or verification_request(base, answer.text).key(slm) != key:
        return None
    return answer_key


def _rescue_keys(store: TraceStore, base: GenerationRequest, rows: list[Any], llm: str) -> set[str]:
    """The LLM's rescue generations behind an item's rescue rows (a row names the SLM's continuation, not
    the rescue it continued): rebuilt from the cut (the row's fraction, a character offset in the SLM's
    no-hint answer) and n (its trial), with the real call each shorter rescue was derived from."""
    from ..hinting import rescue_request

    rescues = [r for r in rows if r["kind"] == "rescue"]
    own_key = next((r["key"] for r in rows if r["kind"] == "hint" and r["fraction"] == 0 and r["trial"] == 0), None)
    own = store.get(own_key) if rescues and own_key else None
    if own is None or own.logprobs is None:
        return set()
    keys: set[str] = set()
    for r in rescues:
        cut, n = int(r["fraction"]), int(r["trial"])
        t = sum(1 for e in own.logprobs.ends if e <= cut)
        key = rescue_request(base, own.text[:cut], t, n).key(llm)
        keys.add(key)
        for g in store._query("SELECT derived_from FROM generations WHERE key = ?", (key,)):
            if g["derived_from"]:
                keys.add(g["derived_from"])
    return keys


def read_compact(path: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and item records of a compact trace file (validated shallowly)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CompactTraceError(f"{path}: not a readable gzip trace file: {exc}") from exc
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise CompactTraceError(f"{path}: empty")
    try:
        header = json.loads(lines[0])
        records = [json.loads(ln) for ln in lines[1:]]
    except json.JSONDecodeError as exc:
        raise CompactTraceError(f"{path}: broken JSON line: {exc}") from exc
    if header.get("format") != FORMAT:
        raise CompactTraceError(f"{path}: not a {FORMAT} file")
    if int(header.get("version", 0)) > VERSION:
        raise CompactTraceError(f"{path}: format version {header['version']} is newer than this shepherd "
                                f"({VERSION}); upgrade llm-shepherd")
    for r in records:
        missing = {"item", "messages_sha256", "request", "full_key", "rows", "generations", "hints"} - set(r)
        if missing:
            raise CompactTraceError(f"{path}: item record without {sorted(missing)}")
    return header, records


def _rebuild(d: dict[str, Any], messages: tuple[tuple[str, str], ...], prefix: str = "") -> GenerationRequest:
    return request_from_json(json.dumps({**d, "messages": [list(m) for m in messages],
                                         "prefix": prefix + d.get("prefix", "")}))


def import_compact(path: str | os.PathLike, store: TraceStore, *, task: Any = None,
                   data: str | None = None) -> CompactSummary:
    """Rebuild a compact trace file into `store` (idempotent: items already there are skipped).

    `task` (or the header's task name, loaded from `data`) supplies each item's messages; every one is
    checked against the recorded messages hash and every rebuilt request against its stored key."""
    header, records = read_compact(path)
    if task is None:
        from ..tasks.registry import get_task

        task = get_task(header["task"], data) if data else get_task(header["task"])
    sweep = header["sweep"]
    store.ensure_sweep(sweep, header["task"], header["slm"], header["llm"], header.get("config") or {})
    by_split: dict[str | None, list[str]] = {}
    for r in records:
        by_split.setdefault(r.get("split"), []).append(str(r["item"]))
    items: dict[str, Any] = {}
    for split, ids in by_split.items():
        try:
            loaded = task.load(split, ids=ids)
        except (KeyError, LookupError, ValueError) as exc:
            raise CompactTraceError(f"{path}: the {header['task']} data lacks items of these traces: {exc}") from exc
        items.update({str(it.id): it for it in loaded})

    n_items = n_gen = n_calls = 0
    skipped: list[str] = []
    for r in records:
        iid = str(r["item"])
        if store.done_plan(sweep, iid) is not None:
            skipped.append(iid)
            continue
        item = items[iid]
        messages = tuple((m["role"], m["content"]) if isinstance(m, dict) else tuple(m)
                         for m in task.messages(item))
        prefix = task_prefix(task, item) if r.get("prefix_sha256") else ""
        if prefix and _sha256(prefix) != r["prefix_sha256"]:
            raise CompactTraceError(
                f"{path}: {header['task']} item {iid}: the assistant prefix built from this data is not the one "
                "the sweep continued (prefix hash differs): another version of the dataset or of the prompt format")
        base = _rebuild(r["request"], messages, prefix)
        if messages_key(base) != r["messages_sha256"]:
            raise CompactTraceError(
                f"{path}: {header['task']} item {iid}: the question built from this data is not the one the "
                "sweep asked (messages hash differs): another version of the dataset or of the prompt format")
        texts = {g["key"]: g["text"] for g in r["generations"]}
        for g in r["generations"]:
            if g.get("verifies"):  # the SLM's check of its own answer: asked with that answer, not the item
                if g["verifies"] not in texts:
                    raise CompactTraceError(f"{path}: {header['task']} item {iid}: verification {g['key'][:12]} "
                                            "without the answer it checks")
                req = verification_request(base, texts[g["verifies"]])
            else:
                req = _rebuild(g["request"], messages, prefix)
            if req.key(g["model"]) != g["key"]:
                raise CompactTraceError(f"{path}: {header['task']} item {iid}: rebuilt request does not have the "
                                        f"stored key {g['key'][:12]} (prompt format changed?)")
            gen = Generation(text=g["text"], prompt_tokens=g["prompt_tokens"],
                             completion_tokens=g["completion_tokens"], finish_reason=g["finish_reason"],
                             latency_s=g["latency_s"], model=g["model"], mean_logprob=g.get("mean_logprob"),
                             logprobs=TokenLogprobs.unpack(g["logprobs"]) if g.get("logprobs") else None)
            # the call log is restored from the file below, not written as new calls
            store.put(g["key"], g["model"], req, gen, origin=g["origin"], derived_from=g.get("derived_from"),
                      log_call=False)
            n_gen += 1
        store.put_item(sweep, iid, r.get("split"), base, getattr(item, "reference", None),
                       getattr(item, "metadata", None))
        store.set_full(sweep, iid, r["full_key"], int(r["full_tokens"] or 0))
        for fraction, n, text, hkey in r["hints"]:
            store.put_hint(sweep, iid, fraction, n, text, hkey)
        for kind, fraction, trial, key, n, correct, extracted, reason in r["rows"]:
            store.put_row(sweep, iid, kind, fraction, trial, key, bool(correct), extracted, reason, hint_tokens=n)
        store.restore_calls(r.get("calls") or [])
        n_calls += len(r.get("calls") or [])
        store.mark_done(sweep, iid, r.get("plan") or {}, at=r.get("done_at"))
        n_items += 1
    return CompactSummary(str(path), sweep, header["task"], n_items, n_gen, n_calls, skipped)


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["FORMAT", "VERSION", "CompactSummary", "CompactTraceError", "export_compact", "file_sha256",
           "import_compact", "read_compact"]
