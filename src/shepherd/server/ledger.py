"""An atomic dollar ledger: reserve a worst case before a paid call, settle the real cost after.

Two stores with one interface: `Ledger` (SQLite, one machine) and `PgLedger` (PostgreSQL, for server
replicas on several machines sharing one set of budgets); `open_ledger(settings)` picks one.

SQLite:

Every reservation runs in one `BEGIN IMMEDIATE` transaction that takes the database's write lock, reads
`spent + reserved` of each account it touches and refuses if the new amount would pass a budget. So
any number of concurrent requests, threads or server processes sharing the file can never commit more
than a budget: at worst a request is refused that would have fit once others settled below their worst
case. Amounts are integer nano-dollars, so sums never drift.

Synchronous on purpose (easy to reason about and to test from threads and processes); the server calls
it on one dedicated thread.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # pragma: no cover
    from .settings import ServerSettings

NANO = 1_000_000_000  # nano-dollars per dollar
log = logging.getLogger("shepherd.server")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    name TEXT PRIMARY KEY,
    budget_nusd INTEGER,                 -- NULL: no limit
    spent_nusd INTEGER NOT NULL DEFAULT 0,
    reserved_nusd INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT NOT NULL,
    account TEXT NOT NULL REFERENCES accounts(name),
    amount_nusd INTEGER NOT NULL,
    created REAL NOT NULL,
    pid INTEGER NOT NULL,
    PRIMARY KEY (id, account)
);
"""


def to_nano(usd: float, *, up: bool = False) -> int:
    x = usd * NANO
    return math.ceil(x - 1e-6) if up else round(x)


@dataclass(frozen=True)
class Balance:
    account: str
    budget_usd: float | None
    spent_usd: float
    reserved_usd: float

    @property
    def remaining_usd(self) -> float | None:
        if self.budget_usd is None:
            return None
        return max(self.budget_usd - self.spent_usd - self.reserved_usd, 0.0)

    @property
    def committed_fraction(self) -> float:
        """(spent + reserved) / budget; 0 without a budget."""
        if not self.budget_usd:
            return 0.0 if self.budget_usd is None else 1.0
        return (self.spent_usd + self.reserved_usd) / self.budget_usd

    @property
    def exhausted(self) -> bool:
        return self.budget_usd is not None and self.spent_usd >= self.budget_usd

    def to_dict(self) -> dict:
        return {"account": self.account, "budget_usd": self.budget_usd, "spent_usd": self.spent_usd,
                "reserved_usd": self.reserved_usd, "remaining_usd": self.remaining_usd}


class BudgetExceeded(Exception):
    """A reservation would pass an account's budget."""

    def __init__(self, balance: Balance, amount_usd: float) -> None:
        self.balance = balance
        self.amount_usd = amount_usd
        b = balance
        super().__init__(
            f"budget of {b.account} is spent: ${b.spent_usd:.6f} spent and ${b.reserved_usd:.6f} reserved "
            f"of ${b.budget_usd:.6f}; this call may cost up to ${amount_usd:.6f}")


def _balance(row) -> Balance:
    name, budget, spent, reserved = row
    return Balance(name, None if budget is None else budget / NANO, spent / NANO, reserved / NANO)


class LedgerError(Exception):
    """The ledger's store cannot be reached or used (the message never shows a password)."""


class Ledger:
    #: seconds between `maintain()` calls from the server's background thread (None: none needed)
    maintain_every_s: float | None = 0.5

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, autocheckpoint: bool = True) -> None:
        """`autocheckpoint=False`: commits never copy the WAL back into the database (the fsync that
        makes a commit slow now and then); call `checkpoint()` from another thread instead."""
        self.path = str(path)
        self.autocheckpoint = autocheckpoint
        if autocheckpoint:
            self.maintain_every_s = None
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._memory_conn: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()
        with self._memory_lock if self.path == ":memory:" else _NULL:
            self._conn().executescript(_SCHEMA)

    # -- connections -------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self.path == ":memory:":  # tests: one connection shared under a lock
            if self._memory_conn is None:
                self._memory_conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            return self._memory_conn
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            if not self.autocheckpoint:
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self):
        """BEGIN IMMEDIATE: the write lock is taken before anything is read."""
        with self._memory_lock if self.path == ":memory:" else _NULL:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            else:
                conn.execute("COMMIT")

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking writers (PASSIVE)."""
        if self.path != ":memory:":
            self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def maintain(self) -> None:
        """The background thread's periodic work: here, checkpointing the WAL."""
        self.checkpoint()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_conn is not None:
            self._memory_conn.close()
            self._memory_conn = None

    # -- accounts ------------------------------------------------------------------------------
    def set_budget(self, account: str, budget_usd: float | None) -> Balance:
        """Create the account or change its budget; what was spent stays."""
        budget = None if budget_usd is None else to_nano(budget_usd)
        with self._tx() as c:
            c.execute("INSERT INTO accounts(name, budget_nusd) VALUES (?, ?) "
                      "ON CONFLICT(name) DO UPDATE SET budget_nusd = excluded.budget_nusd", (account, budget))
            return _balance(self._row(c, account))

    @staticmethod
    def _row(c: sqlite3.Connection, account: str):
        row = c.execute("SELECT name, budget_nusd, spent_nusd, reserved_nusd FROM accounts WHERE name = ?",
                        (account,)).fetchone()
        if row is None:
            c.execute("INSERT INTO accounts(name, budget_nusd) VALUES (?, NULL)", (account,))
            row = (account, None, 0, 0)
        return row

    def balance(self, account: str) -> Balance:
        c = self._conn()
        with self._memory_lock if self.path == ":memory:" else _NULL:
            row = c.execute("SELECT name, budget_nusd, spent_nusd, reserved_nusd FROM accounts WHERE name = ?",
                            (account,)).fetchone()
        return _balance(row) if row else Balance(account, None, 0.0, 0.0)

    def balances(self, accounts: list[str]) -> list[Balance]:
        return [self.balance(a) for a in accounts]

    def nano_balance(self, account: str) -> tuple[int | None, int, int]:
        """(budget, spent, reserved) in integer nano-dollars, for exact checks."""
        with self._memory_lock if self.path == ":memory:" else _NULL:
            row = self._conn().execute("SELECT budget_nusd, spent_nusd, reserved_nusd FROM accounts "
                                       "WHERE name = ?", (account,)).fetchone()
        return tuple(row) if row else (None, 0, 0)  # type: ignore[return-value]

    def open_reservations(self) -> int:
        with self._memory_lock if self.path == ":memory:" else _NULL:
            return self._conn().execute("SELECT COUNT(DISTINCT id) FROM reservations").fetchone()[0]

    # -- reserve / settle ----------------------------------------------------------------------
    def reserve(self, accounts: list[str], amount_usd: float) -> tuple[str, list[Balance]]:
        """Reserve `amount_usd` on every account at once, or on none (raises BudgetExceeded)."""
        amount = to_nano(amount_usd, up=True)
        rid = uuid.uuid4().hex
        now = time.time()
        pid = os.getpid()
        with self._tx() as c:
            rows = [self._row(c, a) for a in accounts]
            for row in rows:
                _, budget, spent, reserved = row
                if budget is not None and spent + reserved + amount > budget:
                    raise BudgetExceeded(_balance(row), amount / NANO)
            out = []
            for name, budget, spent, reserved in rows:
                c.execute("UPDATE accounts SET reserved_nusd = reserved_nusd + ? WHERE name = ?", (amount, name))
                c.execute("INSERT INTO reservations(id, account, amount_nusd, created, pid) VALUES (?,?,?,?,?)",
                          (rid, name, amount, now, pid))
                out.append(_balance((name, budget, spent, reserved + amount)))
        return rid, out

    def settle(self, reservation_id: str, actual_usd: float) -> list[Balance]:
        """Replace a reservation by what the call really cost. Settling twice is a no-op."""
        actual = max(to_nano(actual_usd), 0)
        out = []
        with self._tx() as c:
            rows = c.execute("SELECT account, amount_nusd FROM reservations WHERE id = ?",
                             (reservation_id,)).fetchall()
            for account, amount in rows:
                c.execute("UPDATE accounts SET reserved_nusd = MAX(reserved_nusd - ?, 0), "
                          "spent_nusd = spent_nusd + ? WHERE name = ?", (amount, actual, account))
                out.append(_balance(self._row(c, account)))
            c.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
        return out

    def release(self, reservation_id: str) -> list[Balance]:
        return self.settle(reservation_id, 0.0)

    def charge(self, accounts: list[str], amount_usd: float) -> list[Balance]:
        """Record a spend that needed no reservation (it is counted even past the budget)."""
        amount = max(to_nano(amount_usd), 0)
        with self._tx() as c:
            out = []
            for a in accounts:
                self._row(c, a)
                c.execute("UPDATE accounts SET spent_nusd = spent_nusd + ? WHERE name = ?", (amount, a))
                out.append(_balance(self._row(c, a)))
        return out

    def expire_stale(self, older_than_s: float) -> int:
        """Reservations a crashed process left behind: their cost is unknown, so count the worst case."""
        cutoff = time.time() - older_than_s
        with self._tx() as c:
            rows = c.execute("SELECT id, account, amount_nusd FROM reservations WHERE created < ?",
                             (cutoff,)).fetchall()
            for _, account, amount in rows:
                c.execute("UPDATE accounts SET reserved_nusd = MAX(reserved_nusd - ?, 0), "
                          "spent_nusd = spent_nusd + ? WHERE name = ?", (amount, amount, account))
            c.execute("DELETE FROM reservations WHERE created < ?", (cutoff,))
        return len({r[0] for r in rows})


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NULL = _Null()


# -- PostgreSQL: one ledger for many server replicas ---------------------------------------------------

_PG_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS shepherd;
CREATE TABLE IF NOT EXISTS shepherd.accounts (
    name TEXT PRIMARY KEY,
    budget_nusd BIGINT,                  -- NULL: no limit
    spent_nusd BIGINT NOT NULL DEFAULT 0,
    reserved_nusd BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS shepherd.replicas (
    id TEXT PRIMARY KEY,
    heartbeat TIMESTAMPTZ NOT NULL,
    started TIMESTAMPTZ NOT NULL DEFAULT now(),
    host TEXT,
    pid INTEGER
);
CREATE TABLE IF NOT EXISTS shepherd.reservations (
    id TEXT NOT NULL,
    account TEXT NOT NULL REFERENCES shepherd.accounts(name),
    amount_nusd BIGINT NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    replica TEXT NOT NULL,
    PRIMARY KEY (id, account)
);
CREATE INDEX IF NOT EXISTS reservations_replica ON shepherd.reservations (replica);

-- reserve and settle as functions: one round trip each on the request path (statements inside run one
-- after the other, each seeing what committed before it, after the locks it waited for)
CREATE OR REPLACE FUNCTION shepherd.reserve(p_id TEXT, p_names TEXT[], p_amount BIGINT, p_replica TEXT,
                                           p_beat BOOLEAN, p_host TEXT, p_pid INTEGER)
RETURNS TABLE(name TEXT, budget_nusd BIGINT, spent_nusd BIGINT, reserved_nusd BIGINT, fits BOOLEAN)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE ok BOOLEAN;
BEGIN
    IF p_beat THEN  -- this replica's heartbeat, when the background one may be late
        INSERT INTO shepherd.replicas(id, heartbeat, host, pid) VALUES (p_replica, now(), p_host, p_pid)
        ON CONFLICT (id) DO UPDATE SET heartbeat = now();
    END IF;
    -- missing accounts are created unlimited; then every touched row is locked, in sorted order
    INSERT INTO shepherd.accounts(name) SELECT n FROM unnest(p_names) AS n ORDER BY n ON CONFLICT DO NOTHING;
    PERFORM 1 FROM shepherd.accounts a WHERE a.name = ANY(p_names) ORDER BY a.name FOR UPDATE;
    SELECT bool_and(a.budget_nusd IS NULL OR a.spent_nusd + a.reserved_nusd + p_amount <= a.budget_nusd)
      INTO ok FROM shepherd.accounts a WHERE a.name = ANY(p_names);
    IF ok THEN
        UPDATE shepherd.accounts a SET reserved_nusd = a.reserved_nusd + p_amount WHERE a.name = ANY(p_names);
        INSERT INTO shepherd.reservations(id, account, amount_nusd, replica)
        SELECT p_id, n, p_amount, p_replica FROM unnest(p_names) AS n;
    END IF;
    RETURN QUERY SELECT a.name, a.budget_nusd, a.spent_nusd, a.reserved_nusd, ok
                 FROM shepherd.accounts a WHERE a.name = ANY(p_names);
END $$;

-- settle: the reservation's rows first, then the accounts in sorted order (the order every writer uses);
-- p_actual NULL counts each reservation's own worst case
CREATE OR REPLACE FUNCTION shepherd.settle(p_id TEXT, p_actual BIGINT)
RETURNS TABLE(name TEXT, budget_nusd BIGINT, spent_nusd BIGINT, reserved_nusd BIGINT)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM shepherd.reservations r WHERE r.id = p_id ORDER BY r.account FOR UPDATE;
    PERFORM 1 FROM shepherd.accounts a
     WHERE a.name IN (SELECT r.account FROM shepherd.reservations r WHERE r.id = p_id)
     ORDER BY a.name FOR UPDATE;
    RETURN QUERY
    WITH d AS (DELETE FROM shepherd.reservations r WHERE r.id = p_id RETURNING r.account, r.amount_nusd)
    UPDATE shepherd.accounts a SET reserved_nusd = GREATEST(a.reserved_nusd - d.amount_nusd, 0),
                                   spent_nusd = a.spent_nusd + COALESCE(p_actual, d.amount_nusd)
      FROM d WHERE a.name = d.account
    RETURNING a.name, a.budget_nusd, a.spent_nusd, a.reserved_nusd;
END $$;
"""
#: pg_advisory_xact_lock key for creating the schema: two replicas starting at once must not race
_SCHEMA_LOCK = 0x5348_4550_4845_5244 & 0x7FFF_FFFF_FFFF_FFFF  # "SHEPHERD"

_ACCOUNT_COLS = "name, budget_nusd, spent_nusd, reserved_nusd"


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return parts._replace(netloc=f"{user}:***@{netloc[1]}").geturl()
    except ValueError:
        return "<unparsable URL>"


def check_pg_url(url: str) -> None:
    """Raise ValueError (a message without the URL in it) unless `url` is a postgresql:// URL."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("not a valid URL (expected postgresql://user:password@host:port/dbname)") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("must start with postgresql:// (postgresql://user:password@host:port/dbname)")


class PgLedger:
    """The ledger in PostgreSQL, shared by server replicas (same interface as `Ledger`).

    - Amounts are BIGINT nano-dollars, as in SQLite.
    - A reservation is one transaction (the function `shepherd.reserve`, one round trip) that locks the
      rows of the accounts it touches in sorted order (`SELECT ... FOR UPDATE`), checks
      `spent + reserved + amount <= budget` on each and adds the amount: concurrent reservations from
      any number of replicas serialize per account, so together they can never pass a budget; sorted
      locking means two reservations never deadlock.
    - Settling (`shepherd.settle`) locks the reservation's rows first, then the accounts in the same
      sorted order; every writer takes its locks in that order.
    - Each replica has a row in `shepherd.replicas` whose heartbeat it refreshes every `heartbeat_s`
      (`maintain()`, called by the server's background thread). **The dead-replica rule**: reservations
      of a replica whose heartbeat is older than `lease_s` (by the database's clock) are released and
      counted as spent at their worst case, since the call they guarded may have been paid for; a
      budget is never under-counted, at worst over-counted by the calls that a crashed replica had in
      flight. Any replica's `maintain()` applies the rule, so the survivors free the money.
    The schema (`shepherd.*`) is created on first use under an advisory lock.
    """

    def __init__(self, url: str, *, lease_s: float = 15.0, heartbeat_s: float = 2.0,
                 replica_id: str | None = None, connect_timeout_s: float = 5.0) -> None:
        try:
            check_pg_url(url)
        except ValueError as exc:
            raise LedgerError(f"PostgreSQL ledger URL: {exc}") from None
        try:
            import psycopg
        except ModuleNotFoundError:
            raise LedgerError("the PostgreSQL ledger needs psycopg: pip install 'llm-shepherd[postgres]'") from None
        self._psycopg = psycopg
        self.url = url
        self.path = redact_url(url)  # what messages show
        self.lease_s = float(lease_s)
        self.heartbeat_s = float(heartbeat_s)
        self.maintain_every_s: float | None = self.heartbeat_s
        #: concurrent writers are fine (the server settles on a thread of its own)
        self.concurrent = True
        self.connect_timeout_s = connect_timeout_s
        self.replica_id = replica_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local = threading.local()
        self._beat_at = -math.inf  # monotonic time of the last committed heartbeat
        self._run(self._create_schema)
        self.heartbeat()

    # -- connections -------------------------------------------------------------------------
    def _connect(self, *, durable: bool = True):
        psycopg = self._psycopg
        password = urlsplit(self.url).password
        extra = {} if durable else {"options": "-c synchronous_commit=off"}
        try:
            return psycopg.connect(self.url, autocommit=True, connect_timeout=max(1, int(self.connect_timeout_s)),
                                   **extra)
        except (psycopg.Error, ValueError) as exc:
            raise LedgerError(f"cannot connect to the ledger database {self.path}: "
                              f"{_clean(exc, password)}") from None

    def _conn(self, *, durable: bool = True):
        """This thread's connection; `durable=False`: one whose commits do not wait for the disk."""
        attr = "conn" if durable else "lazy_conn"
        conn = getattr(self._local, attr, None)
        if conn is None or conn.closed:
            conn = self._connect(durable=durable)
            setattr(self._local, attr, conn)
        return conn

    def _run(self, fn, *args):
        """fn(conn, *args) in one transaction; a dropped connection is reopened on the next call."""
        psycopg = self._psycopg
        conn = self._conn()
        try:
            with conn.transaction():
                return fn(conn, *args)
        except psycopg.OperationalError as exc:
            self.close()
            raise LedgerError(f"ledger database {self.path}: {_clean(exc, urlsplit(self.url).password)}") from None

    def _query(self, sql: str, params: tuple = (), *, durable: bool = True) -> list[tuple]:
        """One statement, its own transaction (autocommit): one round trip."""
        psycopg = self._psycopg
        try:
            return self._conn(durable=durable).execute(sql, params).fetchall()
        except psycopg.OperationalError as exc:
            self.close()
            raise LedgerError(f"ledger database {self.path}: {_clean(exc, urlsplit(self.url).password)}") from None

    @staticmethod
    def _create_schema(c) -> None:
        c.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        c.execute(_PG_SCHEMA)

    def close(self) -> None:
        """Close this thread's connections (each thread has its own)."""
        for attr in ("conn", "lazy_conn"):
            conn = getattr(self._local, attr, None)
            if conn is not None:
                try:
                    conn.close()
                finally:
                    setattr(self._local, attr, None)

    # -- replicas ------------------------------------------------------------------------------
    def _beat(self, c) -> None:
        c.execute("INSERT INTO shepherd.replicas(id, heartbeat, host, pid) VALUES (%s, now(), %s, %s) "
                  "ON CONFLICT (id) DO UPDATE SET heartbeat = now()",
                  (self.replica_id, socket.gethostname(), os.getpid()))

    def heartbeat(self) -> None:
        """This replica is alive: its reservations stay its own for `lease_s` more seconds."""
        t0 = time.monotonic()
        self._run(self._beat)
        self._beat_at = t0

    def reap_dead(self) -> int:
        """Apply the dead-replica rule: the reservations of replicas silent for `lease_s` count as spent
        at their worst case. Returns how many reservations were released."""
        def tx(c):
            dead = [r[0] for r in c.execute(
                "SELECT id FROM shepherd.replicas WHERE heartbeat < now() - make_interval(secs => %s) "
                "AND id <> %s ORDER BY id FOR UPDATE SKIP LOCKED", (self.lease_s, self.replica_id))]
            # reservations whose replica row is gone (a replica reaped, then back) count once old enough
            rows = c.execute(
                "DELETE FROM shepherd.reservations WHERE (id, account) IN ("
                " SELECT r.id, r.account FROM shepherd.reservations r"
                " LEFT JOIN shepherd.replicas p ON p.id = r.replica"
                " WHERE r.replica = ANY(%s)"
                "    OR (p.id IS NULL AND r.created < now() - make_interval(secs => %s))"
                " ORDER BY r.id, r.account FOR UPDATE OF r SKIP LOCKED)"
                " RETURNING id, account, amount_nusd", (dead, self.lease_s)).fetchall()
            self._count_spent(c, rows)
            if dead:
                c.execute("DELETE FROM shepherd.replicas WHERE id = ANY(%s)", (dead,))
            return len({r[0] for r in rows})

        return self._run(tx)

    def maintain(self) -> None:
        """The background thread's periodic work: heartbeat, then release what dead replicas left."""
        self.heartbeat()
        n = self.reap_dead()
        if n:
            log.warning("counted %d reservations of dead replicas (no heartbeat for %gs) as spent at their "
                        "worst case", n, self.lease_s)

    def replicas(self) -> list[tuple[str, float]]:
        """(replica id, seconds since its heartbeat) of the replicas the database knows."""
        return [(r[0], float(r[1])) for r in self._run(lambda c: c.execute(
            "SELECT id, EXTRACT(EPOCH FROM now() - heartbeat) FROM shepherd.replicas ORDER BY id").fetchall())]

    # -- accounts ------------------------------------------------------------------------------
    @staticmethod
    def _lock(c, names: list[str]) -> dict[str, tuple]:
        """Lock the accounts' rows in sorted order (creating missing ones, unlimited); name -> row."""
        rows = c.execute(f"SELECT {_ACCOUNT_COLS} FROM shepherd.accounts WHERE name = ANY(%s) "
                         "ORDER BY name FOR UPDATE", (names,)).fetchall()
        if len(rows) < len(names):
            c.execute("INSERT INTO shepherd.accounts(name) SELECT n FROM unnest(%s::text[]) AS n ORDER BY n "
                      "ON CONFLICT (name) DO NOTHING", (names,))
            rows = c.execute(f"SELECT {_ACCOUNT_COLS} FROM shepherd.accounts WHERE name = ANY(%s) "
                             "ORDER BY name FOR UPDATE", (names,)).fetchall()
        return {r[0]: r for r in rows}

    def set_budget(self, account: str, budget_usd: float | None) -> Balance:
        """Create the account or change its budget; what was spent stays."""
        budget = None if budget_usd is None else to_nano(budget_usd)
        row = self._run(lambda c: c.execute(
            "INSERT INTO shepherd.accounts(name, budget_nusd) VALUES (%s, %s) ON CONFLICT (name) "
            f"DO UPDATE SET budget_nusd = excluded.budget_nusd RETURNING {_ACCOUNT_COLS}",
            (account, budget)).fetchone())
        return _balance(row)

    def balance(self, account: str) -> Balance:
        return self.balances([account])[0]

    def balances(self, accounts: list[str]) -> list[Balance]:
        rows = self._query(f"SELECT {_ACCOUNT_COLS} FROM shepherd.accounts WHERE name = ANY(%s)", (list(accounts),))
        by_name = {r[0]: r for r in rows}
        return [_balance(by_name[a]) if a in by_name else Balance(a, None, 0.0, 0.0) for a in accounts]

    def nano_balance(self, account: str) -> tuple[int | None, int, int]:
        """(budget, spent, reserved) in integer nano-dollars, for exact checks."""
        row = self._run(lambda c: c.execute(
            "SELECT budget_nusd, spent_nusd, reserved_nusd FROM shepherd.accounts WHERE name = %s",
            (account,)).fetchone())
        return tuple(row) if row else (None, 0, 0)  # type: ignore[return-value]

    def open_reservations(self) -> int:
        return self._run(lambda c: c.execute(
            "SELECT COUNT(DISTINCT id) FROM shepherd.reservations").fetchone()[0])

    # -- reserve / settle ----------------------------------------------------------------------
    def reserve(self, accounts: list[str], amount_usd: float) -> tuple[str, list[Balance]]:
        """Reserve `amount_usd` on every account at once, or on none (raises BudgetExceeded).
        One round trip: `shepherd.reserve()` in the database."""
        amount = to_nano(amount_usd, up=True)
        rid = uuid.uuid4().hex
        names = sorted(set(accounts))
        # the heartbeat rides along when the background one may be late, so that a reservation is never
        # made under a heartbeat that other replicas already take for dead
        beat = time.monotonic() - self._beat_at > self.heartbeat_s
        t0 = time.monotonic()
        rows = self._query("SELECT * FROM shepherd.reserve(%s, %s, %s, %s, %s, %s, %s)",
                           (rid, names, amount, self.replica_id, beat, socket.gethostname() if beat else None,
                            os.getpid()))
        if beat:
            self._beat_at = t0
        by_name = {r[0]: r[:4] for r in rows}
        if not rows[0][4]:
            for a in accounts:
                _, budget, spent, reserved = by_name[a]
                if budget is not None and spent + reserved + amount > budget:
                    raise BudgetExceeded(_balance(by_name[a]), amount / NANO)
            raise AssertionError("the database refused a reservation that fits")  # pragma: no cover
        return rid, [_balance(by_name[a]) for a in accounts]

    @staticmethod
    def _count_spent(c, rows: list[tuple[Any, str, int]], actual: int | None = None) -> list[Balance]:
        """Move released reservations (id, account, amount) from reserved to spent (`actual`, or each
        reservation's own amount when None), locking the accounts in sorted order."""
        if not rows:
            return []
        per_account: dict[str, list[int]] = {}
        for _, account, amount in rows:
            add = per_account.setdefault(account, [0, 0])
            add[0] += amount
            add[1] += amount if actual is None else actual
        names = sorted(per_account)
        c.execute("SELECT 1 FROM shepherd.accounts WHERE name = ANY(%s) ORDER BY name FOR UPDATE", (names,))
        out = c.execute(
            "UPDATE shepherd.accounts a SET reserved_nusd = GREATEST(a.reserved_nusd - d.released, 0), "
            "spent_nusd = a.spent_nusd + d.spent FROM (SELECT unnest(%s::text[]) AS name, "
            "unnest(%s::bigint[]) AS released, unnest(%s::bigint[]) AS spent) d WHERE a.name = d.name "
            "RETURNING a.name, a.budget_nusd, a.spent_nusd, a.reserved_nusd",
            (names, [per_account[n][0] for n in names], [per_account[n][1] for n in names])).fetchall()
        return [_balance(r) for r in sorted(out)]

    def settle(self, reservation_id: str, actual_usd: float) -> list[Balance]:
        """Replace a reservation by what the call really cost. Settling twice is a no-op.

        Its commit does not wait for the disk (`synchronous_commit=off`): were PostgreSQL to crash and lose
        it, the reservation would still stand, counted at its worst case; never an under-count."""
        actual = max(to_nano(actual_usd), 0)
        rows = self._query("SELECT * FROM shepherd.settle(%s, %s)", (reservation_id, actual), durable=False)
        return [_balance(r) for r in sorted(rows)]

    def release(self, reservation_id: str) -> list[Balance]:
        return self.settle(reservation_id, 0.0)

    def charge(self, accounts: list[str], amount_usd: float) -> list[Balance]:
        """Record a spend that needed no reservation (it is counted even past the budget)."""
        amount = max(to_nano(amount_usd), 0)
        names = sorted(set(accounts))

        def tx(c):
            self._lock(c, names)
            rows = c.execute(f"UPDATE shepherd.accounts SET spent_nusd = spent_nusd + %s WHERE name = ANY(%s) "
                             f"RETURNING {_ACCOUNT_COLS}", (amount, names)).fetchall()
            by_name = {r[0]: r for r in rows}
            return [_balance(by_name[a]) for a in accounts]

        return self._run(tx)

    def expire_stale(self, older_than_s: float) -> int:
        """Reservations older than `older_than_s`, whoever made them: their cost is unknown, so count the
        worst case. (Dead replicas are handled sooner by `reap_dead`.)"""
        def tx(c):
            rows = c.execute(
                "DELETE FROM shepherd.reservations WHERE (id, account) IN ("
                " SELECT id, account FROM shepherd.reservations WHERE created < now() - make_interval(secs => %s)"
                " ORDER BY id, account FOR UPDATE SKIP LOCKED) RETURNING id, account, amount_nusd",
                (float(older_than_s),)).fetchall()
            self._count_spent(c, rows)
            return len({r[0] for r in rows})

        return self._run(tx)


def _clean(exc: BaseException, password: str | None) -> str:
    """An exception's first line, with the password (if any) blanked out."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if password:
        text = text.replace(password, "***")
    return text


def open_ledger(settings: ServerSettings) -> Ledger | PgLedger:
    """The ledger the `[server]` settings ask for: PostgreSQL when `[server.ledger]` names a URL, else
    the SQLite file."""
    cfg = settings.ledger
    url = cfg.resolved_url() if cfg is not None else None
    if url:
        return PgLedger(url, lease_s=cfg.lease_s, heartbeat_s=cfg.heartbeat_s)  # type: ignore[union-attr]
    return Ledger(settings.resolved_ledger_path(), autocheckpoint=False)
