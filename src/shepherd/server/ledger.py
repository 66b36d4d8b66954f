"""An atomic dollar ledger in SQLite: reserve a worst case before a paid call, settle the real cost after.

Every reservation runs in one `BEGIN IMMEDIATE` transaction that takes the database's write lock, reads
`spent + reserved` of each account it touches and refuses if the new amount would pass a budget. So
any number of concurrent requests, threads or server processes sharing the file can never commit more
than a budget: at worst a request is refused that would have fit once others settled below their worst
case. Amounts are integer nano-dollars, so sums never drift.

Synchronous on purpose (easy to reason about and to test from threads and processes); the server calls
it on one dedicated thread.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NANO = 1_000_000_000  # nano-dollars per dollar

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


class Ledger:
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, autocheckpoint: bool = True) -> None:
        """`autocheckpoint=False`: commits never copy the WAL back into the database (the fsync that
        makes a commit slow now and then); call `checkpoint()` from another thread instead."""
        self.path = str(path)
        self.autocheckpoint = autocheckpoint
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
