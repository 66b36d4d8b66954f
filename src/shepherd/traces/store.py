"""The trace store: an embedded SQLite database of generations, content-addressed by request.

Tables (schema version 2; version 1 stores are upgraded in place on a writable open, read as they are):
  generations  key -> one model call's result (or a hint derived from a stored full answer), with its
               token log-probabilities packed (`TokenLogprobs.pack`) where the backend gave them or
               `shepherd sweep score` added them (version 2)
  calls        an append-only log of real model calls, written in the same transaction as the result
               (a key logged twice would be a generation paid for twice; tests assert it never is)
  sweeps       one row per sweep: task, models and the settings that shape its generation keys
  sweep_items  per sweep and item: the base request, the LLM's full answer key, L, done/plan
  hints        per sweep, item and grid fraction: n, the hint text and the derived hint's key
  rows         per sweep, item, kind (llm_full | hint | sample | rescue | verify), fraction and trial: the
               generation key and its grade (a `verify` row: the SLM's verification of its greedy answer,
               graded as that answer, its verdict as `extracted` and the prompt form as `reason`)

Every write is its own short transaction (WAL journal), so a process killed at any moment leaves the
store consistent, and every insert is INSERT OR IGNORE on a content key, so redoing work is harmless.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..models.base import Generation, GenerationRequest, TokenLogprobs
from ..verification import VERIFY_FORMAT
from .records import Graded, HintLevel, ItemSweep, Label

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    latency_s REAL NOT NULL,
    mean_logprob REAL,
    origin TEXT NOT NULL DEFAULT 'model',
    derived_from TEXT,
    created_at REAL NOT NULL,
    logprobs TEXT
);
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_key ON calls(key);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep TEXT PRIMARY KEY,
    task TEXT NOT NULL,
    slm TEXT NOT NULL,
    llm TEXT NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_items (
    sweep TEXT NOT NULL,
    item_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    split TEXT,
    messages_key TEXT NOT NULL,
    request TEXT NOT NULL,
    reference TEXT,
    metadata TEXT,
    full_key TEXT,
    full_tokens INTEGER,
    plan TEXT,
    done_at REAL,
    PRIMARY KEY (sweep, item_id)
);
CREATE INDEX IF NOT EXISTS sweep_items_messages ON sweep_items(messages_key);
CREATE TABLE IF NOT EXISTS hints (
    sweep TEXT NOT NULL,
    item_id TEXT NOT NULL,
    fraction REAL NOT NULL,
    hint_tokens INTEGER NOT NULL,
    hint_text TEXT NOT NULL,
    hint_key TEXT,
    PRIMARY KEY (sweep, item_id, fraction)
);
CREATE TABLE IF NOT EXISTS claims (
    sweep TEXT NOT NULL,
    item_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (sweep, item_id)
);
CREATE TABLE IF NOT EXISTS rows (
    sweep TEXT NOT NULL,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    fraction REAL NOT NULL,
    trial INTEGER NOT NULL,
    key TEXT,
    hint_tokens INTEGER NOT NULL DEFAULT 0,
    correct INTEGER NOT NULL,
    extracted TEXT,
    reason TEXT,
    created_at REAL NOT NULL,
    PRIMARY KEY (sweep, item_id, kind, fraction, trial)
);
"""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def _unpack_logprobs(row: sqlite3.Row) -> TokenLogprobs | None:
    packed = row["logprobs"] if "logprobs" in row.keys() else None  # noqa: SIM118 - a Row's `in` tests values
    return TokenLogprobs.unpack(packed) if packed else None


class StoreError(RuntimeError):
    """The store file cannot be used (newer schema, not a trace store, ...)."""


#: generations a read-only store keeps in memory once read (about 1 KB each)
READ_CACHE_SIZE = 200_000


def request_to_json(request: GenerationRequest) -> str:
    return json.dumps(asdict(request), ensure_ascii=False, sort_keys=True)


def request_from_json(blob: str) -> GenerationRequest:
    d = json.loads(blob)
    return GenerationRequest(
        messages=tuple((r, c) for r, c in d["messages"]),
        prefix=d.get("prefix", ""),
        max_tokens=d.get("max_tokens"),
        temperature=d.get("temperature", 0.0),
        top_p=d.get("top_p", 1.0),
        seed=d.get("seed", 0),
        stop=tuple(d.get("stop", ())),
    )


def messages_key(request: GenerationRequest) -> str:
    """Address of a prompt alone (messages only): finds an item's sweep from any request about it."""
    blob = json.dumps([list(m) for m in request.messages], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass
class SweepInfo:
    sweep: str
    task: str
    slm: str
    llm: str
    config: dict[str, Any]


@dataclass
class ItemEntry:
    """What the store knows of one item in one sweep (the replay backends look items up by prompt)."""

    sweep: str
    task: str
    item_id: str
    split: str | None
    request: GenerationRequest
    llm: str
    slm: str
    full_key: str | None
    full_tokens: int | None
    done: bool = False


class TraceStore:
    """A SQLite trace store. Thread-safe (one connection behind a lock); several processes may open the
    same file (WAL, busy timeout)."""

    def __init__(self, path: str | os.PathLike = ":memory:", *, readonly: bool = False) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        uri = f"file:{self.path}?mode=ro" if readonly else self.path
        self._conn = sqlite3.connect(uri, uri=readonly, isolation_level=None, check_same_thread=False,
                                     timeout=60.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self.readonly = readonly
        #: a read-only store's generations by key, as read: a replay asks for the same stored generation at
        #: every operating point (a key's generation never changes: keys are content addresses)
        self._read: dict[str, Generation] = {}
        try:
            self._conn.execute("PRAGMA busy_timeout = 60000")
            if not readonly:
                if self.path != ":memory:":
                    self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes
                self._init_schema()
            else:
                self._check_version()
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreError(f"{self.path} is not a usable trace store: {exc}") from exc

    # -- schema -------------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        self._conn.execute(stmt)
                row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._conn.execute("INSERT INTO meta(key, value) VALUES ('schema_version', ?)",
                                       (str(SCHEMA_VERSION),))
                elif int(row[0]) > SCHEMA_VERSION:
                    raise StoreError(f"{self.path} has schema version {row[0]}, newer than this shepherd's "
                                     f"{SCHEMA_VERSION}: upgrade llm-shepherd")
                elif int(row[0]) < 2:  # version 1 had no token log-probabilities
                    if not self._column_exists("generations", "logprobs"):
                        self._conn.execute("ALTER TABLE generations ADD COLUMN logprobs TEXT")
                    self._conn.execute("UPDATE meta SET value = ? WHERE key='schema_version'",
                                       (str(SCHEMA_VERSION),))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def _check_version(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            raise StoreError(f"{self.path} is not a trace store (no schema version)")
        if int(row[0]) > SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {row[0]}, newer than {SCHEMA_VERSION}")

    def _column_exists(self, table: str, column: str) -> bool:
        return any(r[1] == column for r in self._conn.execute(f"PRAGMA table_info({table})"))

    @property
    def _logprobs_column(self) -> str:
        """The generations' packed log-probabilities in a SELECT, or NULL for a version 1 store read as is."""
        has = self.__dict__.get("_has_logprobs")
        if has is None:
            with self._lock:
                has = self.__dict__["_has_logprobs"] = self._column_exists("generations", "logprobs")
        return "g.logprobs" if has else "NULL AS logprobs"

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> TraceStore:  # noqa: PYI034 (never subclassed)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _write(self, sql: str, params: Iterable[Any] = ()) -> int:
        with self._lock:
            cur = self._conn.execute(sql, tuple(params))
            return cur.rowcount

    def _tx(self, statements: list[tuple[str, tuple]]) -> list[int]:
        """Run statements in one transaction; returns each statement's rowcount."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                counts = [self._conn.execute(sql, params).rowcount for sql, params in statements]
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            return counts

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- generations --------------------------------------------------------------------------------
    @staticmethod
    def _gen_from_row(row: sqlite3.Row, cached: bool = True) -> Generation:
        return Generation(text=row["text"], prompt_tokens=row["prompt_tokens"],
                          completion_tokens=row["completion_tokens"], finish_reason=row["finish_reason"],
                          latency_s=row["latency_s"], model=row["model"], mean_logprob=row["mean_logprob"],
                          cached=cached, logprobs=_unpack_logprobs(row))

    def get(self, key: str) -> Generation | None:
        gen = self._read.get(key)
        if gen is not None:
            return gen
        rows = self._query("SELECT * FROM generations WHERE key = ?", (key,))
        gen = self._gen_from_row(rows[0]) if rows else None
        if gen is not None and self.readonly and len(self._read) < READ_CACHE_SIZE:
            self._read[key] = gen
        return gen

    def get_request(self, key: str) -> GenerationRequest | None:
        rows = self._query("SELECT request FROM generations WHERE key = ?", (key,))
        return request_from_json(rows[0]["request"]) if rows else None

    def origin(self, key: str) -> str | None:
        rows = self._query("SELECT origin FROM generations WHERE key = ?", (key,))
        return rows[0]["origin"] if rows else None

    def has(self, key: str) -> bool:
        return bool(self._query("SELECT 1 FROM generations WHERE key = ?", (key,)))

    def put(self, key: str, model: str, request: GenerationRequest, gen: Generation, *,
            origin: str = "model", derived_from: str | None = None, log_call: bool | None = None) -> bool:
        """Store a generation (and, for a real model call, its line in the call log) in one transaction.
        Returns False when the key was already stored (the first result is kept). `log_call=False` stores
        a model's generation without logging a call (an import brings its own call log)."""
        now = time.time()
        stmts = [(
            ("INSERT OR IGNORE INTO generations(key, model, request, text, prompt_tokens, completion_tokens, "
             "finish_reason, latency_s, mean_logprob, origin, derived_from, created_at, logprobs) "
             "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"),
            (key, model, request_to_json(request), gen.text, int(gen.prompt_tokens),
             int(gen.completion_tokens), gen.finish_reason, float(gen.latency_s), gen.mean_logprob, origin,
             derived_from, now, gen.logprobs.pack() if gen.logprobs is not None else None),
        )]
        if (origin == "model") if log_call is None else log_call:
            stmts.append((
                ("INSERT INTO calls(key, model, prompt_tokens, completion_tokens, latency_s, pid, at) "
                 "VALUES (?,?,?,?,?,?,?)"),
                (key, model, int(gen.prompt_tokens), int(gen.completion_tokens), float(gen.latency_s),
                 os.getpid(), now),
            ))
        return self._tx(stmts)[0] == 1

    def restore_calls(self, calls: Iterable[Sequence[Any]]) -> int:
        """Append call-log lines (key, model, prompt_tokens, completion_tokens, latency_s, at) brought by an
        import; a line already present (same key and time) is not added twice. Returns lines added."""
        stmts = []
        for key, model, pt, ct, lat, at in calls:
            if self._query("SELECT 1 FROM calls WHERE key = ? AND at = ?", (key, float(at))):
                continue
            stmts.append((("INSERT INTO calls(key, model, prompt_tokens, completion_tokens, latency_s, pid, at) "
                          "VALUES (?,?,?,?,?,?,?)"), (key, model, int(pt), int(ct), float(lat), 0, float(at))))
        if stmts:
            self._tx(stmts)
        return len(stmts)

    def set_logprobs(self, key: str, logprobs: TokenLogprobs) -> bool:
        """Add token log-probabilities to a stored generation that has none (scored after the fact: the
        text, counts and call log stay as they were). Returns False when the key is unknown or already has
        them."""
        n = self._tx([("UPDATE generations SET logprobs = ?, mean_logprob = ? WHERE key = ? AND logprobs IS NULL",
                       (logprobs.pack(), logprobs.mean, key))])[0]
        self._read.pop(key, None)
        return bool(n)

    def call_log(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._query("SELECT * FROM calls ORDER BY id")]

    def duplicate_calls(self) -> list[tuple[str, int]]:
        """Keys a model was called for more than once (a generation paid for twice). Should be empty."""
        return [(r[0], r[1]) for r in self._query(
            "SELECT key, COUNT(*) FROM calls GROUP BY key HAVING COUNT(*) > 1")]

    def counts(self) -> dict[str, int]:
        out = {}
        for table in ("generations", "calls", "sweeps", "sweep_items", "hints", "rows"):
            out[table] = self._query(f"SELECT COUNT(*) FROM {table}")[0][0]
        out["derived"] = self._query("SELECT COUNT(*) FROM generations WHERE origin='derived'")[0][0]
        return out

    # -- sweeps -------------------------------------------------------------------------------------
    def ensure_sweep(self, sweep: str, task: str, slm: str, llm: str, config: dict[str, Any]) -> None:
        self._write("INSERT OR IGNORE INTO sweeps(sweep, task, slm, llm, config, created_at) "
                    "VALUES (?,?,?,?,?,?)", (sweep, task, slm, llm, json.dumps(config, sort_keys=True),
                                             time.time()))

    def update_sweep_config(self, sweep: str, config: dict[str, Any]) -> None:
        """Record the latest plan (grid, trials, samples) run for a sweep."""
        self._write("UPDATE sweeps SET config = ? WHERE sweep = ?", (json.dumps(config, sort_keys=True), sweep))

    def sweeps(self, task: str | None = None) -> list[SweepInfo]:
        sql = "SELECT * FROM sweeps" + (" WHERE task = ?" if task else "") + " ORDER BY created_at"
        return [SweepInfo(r["sweep"], r["task"], r["slm"], r["llm"], json.loads(r["config"]))
                for r in self._query(sql, (task,) if task else ())]

    def resolve_sweep(self, task: str | None = None, sweep: str | None = None) -> SweepInfo:
        found = self.sweeps(task)
        if sweep is not None:
            found = [s for s in found if s.sweep == sweep]
            if not found:
                raise LookupError(f"no sweep {sweep!r}" + (f" for task {task!r}" if task else "")
                                  + f" in {self.path}")
        if not found:
            raise LookupError("no sweep" + (f" for task {task!r}" if task else "") + f" in {self.path}")
        if len(found) > 1:
            names = ", ".join(f"{s.sweep} ({s.slm} / {s.llm})" for s in found)
            raise LookupError(f"several sweeps for task {task!r} in {self.path}: {names}; pick one with sweep=")
        return found[0]

    def put_item(self, sweep: str, item_id: str, split: str | None, request: GenerationRequest,
                 reference: Any = None, metadata: dict[str, Any] | None = None) -> None:
        seq = self._query("SELECT COUNT(*) FROM sweep_items WHERE sweep = ?", (sweep,))[0][0]
        self._write(
            "INSERT OR IGNORE INTO sweep_items(sweep, item_id, seq, split, messages_key, request, reference, "
            "metadata) VALUES (?,?,?,?,?,?,?,?)",
            (sweep, str(item_id), seq, split, messages_key(request), request_to_json(request),
             None if reference is None else str(reference),
             json.dumps(metadata or {}, ensure_ascii=False, default=str)))

    def item_request(self, sweep: str, item_id: str) -> GenerationRequest | None:
        rows = self._query("SELECT request FROM sweep_items WHERE sweep = ? AND item_id = ?", (sweep, str(item_id)))
        return request_from_json(rows[0]["request"]) if rows else None

    def set_full(self, sweep: str, item_id: str, full_key: str, full_tokens: int) -> None:
        self._write("UPDATE sweep_items SET full_key = ?, full_tokens = ? WHERE sweep = ? AND item_id = ?",
                    (full_key, int(full_tokens), sweep, str(item_id)))

    def mark_done(self, sweep: str, item_id: str, plan: dict[str, Any], at: float | None = None) -> None:
        self._write("UPDATE sweep_items SET plan = ?, done_at = ? WHERE sweep = ? AND item_id = ?",
                    (json.dumps(plan, sort_keys=True), time.time() if at is None else float(at), sweep,
                     str(item_id)))

    def done_plan(self, sweep: str, item_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT plan FROM sweep_items WHERE sweep = ? AND item_id = ? AND done_at IS NOT NULL",
                           (sweep, str(item_id)))
        return json.loads(rows[0]["plan"]) if rows and rows[0]["plan"] else None

    # -- claims: several sweep processes on one store share out its items ----------------------------
    def claim(self, sweep: str, item_id: str, *, stale_after_s: float = 6 * 3600.0) -> str | None:
        """Claim an item for this process. None when it is ours now; else who holds it ("host:pid").

        A claim is taken over when its process is gone (same host, pid not alive: a killed sweep) or
        when it is older than `stale_after_s` (a process on another host cannot be checked)."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT host, pid, at FROM claims WHERE sweep=? AND item_id=?",
                                         (sweep, item_id)).fetchone()
                if row is not None and (row["host"], row["pid"]) != (host, pid):
                    alive = _pid_alive(row["pid"]) if row["host"] == host else True
                    if alive and now - row["at"] < stale_after_s:
                        self._conn.execute("COMMIT")
                        return f"{row['host']}:{row['pid']}"
                self._conn.execute("INSERT OR REPLACE INTO claims(sweep, item_id, host, pid, at) "
                                   "VALUES (?, ?, ?, ?, ?)", (sweep, item_id, host, pid, now))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
        return None

    def claims(self) -> list[dict[str, Any]]:
        """Items some sweep process is working on now (or was, when it died: the next run takes them over)."""
        return [{"sweep": r["sweep"], "item_id": r["item_id"], "holder": f"{r['host']}:{r['pid']}",
                 "since": r["at"]} for r in self._query("SELECT * FROM claims ORDER BY at")]

    def release(self, sweep: str, item_id: str) -> None:
        """Drop this process's claim on an item (done, failed or interrupted)."""
        self._write("DELETE FROM claims WHERE sweep=? AND item_id=? AND host=? AND pid=?",
                    (sweep, item_id, socket.gethostname(), os.getpid()))

    def put_hint(self, sweep: str, item_id: str, fraction: float, hint_tokens: int, hint_text: str,
                 hint_key: str | None) -> None:
        self._write("INSERT OR IGNORE INTO hints(sweep, item_id, fraction, hint_tokens, hint_text, hint_key) "
                    "VALUES (?,?,?,?,?,?)", (sweep, str(item_id), float(fraction), int(hint_tokens),
                                             hint_text, hint_key))

    def hints(self, sweep: str, item_id: str) -> list[tuple[float, int, str, str | None]]:
        return [(r["fraction"], r["hint_tokens"], r["hint_text"], r["hint_key"]) for r in self._query(
            "SELECT * FROM hints WHERE sweep = ? AND item_id = ? ORDER BY fraction", (sweep, str(item_id)))]

    def put_row(self, sweep: str, item_id: str, kind: str, fraction: float, trial: int, key: str | None,
                correct: bool, extracted: str | None = None, reason: str | None = None,
                hint_tokens: int = 0) -> bool:
        return self._write(
            "INSERT OR IGNORE INTO rows(sweep, item_id, kind, fraction, trial, key, hint_tokens, correct, "
            "extracted, reason, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (sweep, str(item_id), kind, float(fraction), int(trial), key, int(hint_tokens), int(bool(correct)),
             None if extracted is None else str(extracted), reason, time.time())) == 1

    def has_row(self, sweep: str, item_id: str, kind: str, fraction: float, trial: int) -> bool:
        return bool(self._query("SELECT 1 FROM rows WHERE sweep=? AND item_id=? AND kind=? AND fraction=? "
                                "AND trial=?", (sweep, str(item_id), kind, float(fraction), int(trial))))

    def find_items(self, messages_key_: str, *, llm: str | None = None, slm: str | None = None) -> list[ItemEntry]:
        """The sweeps' entries for a prompt (by its messages), optionally for one model."""
        sql = ("SELECT i.*, s.task, s.slm, s.llm FROM sweep_items i JOIN sweeps s ON s.sweep = i.sweep "
               "WHERE i.messages_key = ?")
        params: list[Any] = [messages_key_]
        if llm is not None:
            sql += " AND s.llm = ?"
            params.append(llm)
        if slm is not None:
            sql += " AND s.slm = ?"
            params.append(slm)
        return [self._entry(r) for r in self._query(sql + " ORDER BY s.created_at", params)]

    def item_entries(self, sweep: str) -> list[ItemEntry]:
        return [self._entry(r) for r in self._query(
            "SELECT i.*, s.task, s.slm, s.llm FROM sweep_items i JOIN sweeps s ON s.sweep = i.sweep "
            "WHERE i.sweep = ? ORDER BY i.seq", (sweep,))]

    @staticmethod
    def _entry(r: sqlite3.Row) -> ItemEntry:
        return ItemEntry(sweep=r["sweep"], task=r["task"], item_id=r["item_id"], split=r["split"],
                         request=request_from_json(r["request"]), llm=r["llm"], slm=r["slm"],
                         full_key=r["full_key"], full_tokens=r["full_tokens"], done=r["done_at"] is not None)

    # -- the read API for the predictor and the evaluation --------------------------------------------
    def item_sweeps(self, task: str, split: str | None = None, *, sweep: str | None = None,
                    item_ids: Iterable[str] | None = None, include_partial: bool = False) -> list[ItemSweep]:
        """Every swept item of a task (in sweep order) with its full answer, hint levels and samples.
        Items still being swept (a sweep running or interrupted) are left out unless `include_partial`."""
        info = self.resolve_sweep(task, sweep)
        wanted = None if item_ids is None else {str(i) for i in item_ids}
        done = "" if include_partial else " AND done_at IS NOT NULL"
        items = self._query("SELECT * FROM sweep_items WHERE sweep = ? AND full_key IS NOT NULL" + done
                            + " ORDER BY seq", (info.sweep,))
        rows = self._query(
            "SELECT r.*, g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason, g.latency_s, g.model, "
            f"g.mean_logprob, {self._logprobs_column} FROM rows r LEFT JOIN generations g ON g.key = r.key "
            "WHERE r.sweep = ? "
            "ORDER BY r.item_id, r.kind, r.fraction, r.trial", (info.sweep,))
        hints = self._query("SELECT * FROM hints WHERE sweep = ? ORDER BY item_id, fraction", (info.sweep,))
        by_item: dict[str, list[sqlite3.Row]] = {}
        for r in rows:
            by_item.setdefault(r["item_id"], []).append(r)
        grid = {round(float(f), 6) for f in (info.config.get("grid") or [])}
        token_grid = {int(n) for n in (info.config.get("token_grid") or [])}
        hints_by_item: dict[str, list[sqlite3.Row]] = {}
        for h in hints:
            hints_by_item.setdefault(h["item_id"], []).append(h)

        out = []
        for it in items:
            iid = it["item_id"]
            if split is not None and it["split"] != split:
                continue
            if wanted is not None and iid not in wanted:
                continue
            item_rows = by_item.get(iid, [])
            full = next((r for r in item_rows if r["kind"] == "llm_full"), None)
            if full is None:
                continue
            request = request_from_json(it["request"])
            levels: dict[float, HintLevel] = {}
            for h in hints_by_item.get(iid, []):
                levels[h["fraction"]] = HintLevel(h["fraction"], h["hint_tokens"], h["hint_text"], [],
                                                  by_tokens=h["hint_tokens"] in token_grid
                                                  and round(h["fraction"], 6) not in grid)
            samples, verification = [], None
            for r in item_rows:
                if r["kind"] == "hint":
                    lv = levels.get(r["fraction"])
                    if lv is not None:
                        lv.trials.append(self._graded(r, info.slm))
                elif r["kind"] == "sample" and not r["fraction"]:
                    samples.append(self._graded(r, info.slm))
                elif r["kind"] == "sample" and r["fraction"] in levels:  # sampled continuations of a hint
                    levels[r["fraction"]].samples.append(self._graded(r, info.slm))
                elif r["kind"] == "verify" and r["reason"] == VERIFY_FORMAT:  # `shepherd sweep verify`
                    verification = self._graded(r, info.slm)
            out.append(ItemSweep(
                task=info.task, item_id=iid, messages=request.message_dicts, llm_full=self._graded(full, info.llm),
                full_tokens=int(it["full_tokens"] or 0),
                levels=[lv for f, lv in sorted(levels.items()) if lv.trials],
                samples=samples, split=it["split"], reference=it["reference"],
                metadata=json.loads(it["metadata"] or "{}"), sweep={"sweep": info.sweep, **info.config},
                verification=verification))
        return out

    @staticmethod
    def _graded(r: sqlite3.Row, model: str) -> Graded:
        if r["text"] is None:  # a level whose hint is the whole answer: the SLM had nothing to add
            gen = Generation(text="", prompt_tokens=0, completion_tokens=0, finish_reason="stop",
                             latency_s=0.0, model=model, cached=True)
        else:
            gen = Generation(text=r["text"], prompt_tokens=r["prompt_tokens"],
                             completion_tokens=r["completion_tokens"], finish_reason=r["finish_reason"],
                             latency_s=r["latency_s"], model=r["model"], mean_logprob=r["mean_logprob"],
                             cached=True, logprobs=_unpack_logprobs(r))
        return Graded(gen, bool(r["correct"]), r["extracted"])

    def labels(self, task: str, filter: bool = True, split: str | None = None, *,
               sweep: str | None = None) -> dict[str, Label]:
        """n* per item (see `shepherd.traces.labels.label_item`); `filter` applies the paper's rule:
        drop items the LLM gets wrong or no swept hint fixes."""
        from .labels import labels_from_sweeps

        return labels_from_sweeps(self.item_sweeps(task, split, sweep=sweep), filter=filter)

    # -- export -------------------------------------------------------------------------------------
    def export_rows(self, sweep: str | None = None) -> Iterator[dict[str, Any]]:
        """One flat record per sweep row: item, kind, fraction, trial, hint, generation and grade."""
        sql = ("SELECT r.sweep, s.task, i.split, r.item_id, r.kind, r.fraction, r.trial, r.hint_tokens, "
               "h.hint_text, i.full_tokens, r.correct, r.extracted, r.reason, r.key, g.model, g.text, "
               "g.prompt_tokens, g.completion_tokens, g.finish_reason, g.latency_s, g.request "
               "FROM rows r JOIN sweeps s ON s.sweep = r.sweep "
               "JOIN sweep_items i ON i.sweep = r.sweep AND i.item_id = r.item_id "
               "LEFT JOIN hints h ON h.sweep = r.sweep AND h.item_id = r.item_id AND h.fraction = r.fraction "
               "AND r.kind = 'hint' LEFT JOIN generations g ON g.key = r.key")
        params: tuple = ()
        if sweep is not None:
            sql += " WHERE r.sweep = ?"
            params = (sweep,)
        sql += " ORDER BY r.sweep, i.seq, r.kind, r.fraction, r.trial"
        for r in self._query(sql, params):
            d = dict(r)
            d["correct"] = bool(d["correct"])
            req = json.loads(d.pop("request")) if d.get("request") else {}
            d["temperature"] = req.get("temperature")
            d["seed"] = req.get("seed")
            d["max_tokens"] = req.get("max_tokens")
            yield d

    def export_generations(self) -> Iterator[dict[str, Any]]:
        for r in self._query("SELECT * FROM generations ORDER BY created_at, key"):
            d = dict(r)
            d["request"] = json.loads(d["request"])
            yield d

    def export(self, path: str | os.PathLike, fmt: str | None = None, *, what: str = "rows",
               sweep: str | None = None) -> int:
        """Write rows (or generations) to JSONL or Parquet (pyarrow, imported only here). Returns the
        number of records written."""
        path = Path(path)
        fmt = fmt or ("parquet" if path.suffix == ".parquet" else "jsonl")
        records = list(self.export_rows(sweep) if what == "rows" else self.export_generations())
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "jsonl":
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
            os.replace(tmp, path)
        elif fmt == "parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError as exc:
                raise RuntimeError("Parquet export needs pyarrow: pip install 'llm-shepherd[eval]' "
                                   "(or export to .jsonl)") from exc
            if what != "rows":
                for rec in records:
                    rec["request"] = json.dumps(rec["request"], ensure_ascii=False)
            pq.write_table(pa.Table.from_pylist(records), path)
        else:
            raise ValueError(f"unknown export format {fmt!r}: jsonl or parquet")
        return len(records)
