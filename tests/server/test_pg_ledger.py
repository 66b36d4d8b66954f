"""The budget ledger in a real PostgreSQL (`PgLedger`): the SQLite ledger's semantics, concurrency to the
nano-dollar across threads and processes, the dead-replica rule, and clean errors."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import threading
import time

import httpx
import psycopg
import pytest

from shepherd.config import ConfigError, parse_config
from shepherd.server import create_app
from shepherd.server.ledger import NANO, BudgetExceeded, Ledger, LedgerError, PgLedger, open_ledger
from shepherd.server.settings import server_settings

from .support import QUESTION, make_config, scripted
from .test_budget import check_reserve_settle_arithmetic

# -- the SQLite ledger's semantics -----------------------------------------------------------------------


def test_reserve_settle_arithmetic(pg_url):
    led = PgLedger(pg_url)
    check_reserve_settle_arithmetic(led)
    assert led.nano_balance("a") == (10 * NANO, 1_500_000_000, 0)
    rid, _ = led.reserve(["a"], 1.0)
    led.settle(rid, 0.5)
    assert led.settle(rid, 0.5) == []  # a second settle finds nothing to settle


def test_reservation_on_two_accounts_is_all_or_nothing(pg_url):
    led = PgLedger(pg_url)
    led.set_budget("key", 100.0)
    led.set_budget("global", 5.0)
    with pytest.raises(BudgetExceeded) as err:
        led.reserve(["key", "global"], 6.0)
    assert err.value.balance.account == "global"
    assert led.balance("key").reserved_usd == 0.0 and led.open_reservations() == 0
    rid, (k, g) = led.reserve(["key", "global"], 2.0)  # balances come back in the order asked
    assert (k.account, g.account) == ("key", "global") and k.reserved_usd == g.reserved_usd == 2.0
    led.settle(rid, 0.5)
    assert [b.spent_usd for b in led.balances(["key", "global", "nobody"])] == [0.5, 0.5, 0.0]


def test_budget_change_keeps_what_was_spent_and_tiny_amounts_do_not_drift(pg_url):
    led = PgLedger(pg_url)
    led.set_budget("a", 1.0)
    for _ in range(300):
        rid, _ = led.reserve(["a"], 0.00000079)
        led.settle(rid, 0.00000059)
    b = led.set_budget("a", 2.0)
    assert led.nano_balance("a") == (2 * NANO, 300 * 590, 0)
    assert b.reserved_usd == 0.0 and b.budget_usd == 2.0


def test_unknown_accounts_are_unlimited_and_charges_count_past_the_budget(pg_url):
    led = PgLedger(pg_url)
    rid, (b,) = led.reserve(["new"], 1e6)
    assert b.budget_usd is None
    led.settle(rid, 3.0)
    led.set_budget("a", 1.0)
    (b,) = led.charge(["a"], 1.25)
    assert b.spent_usd == 1.25 and b.exhausted


def test_stale_reservations_count_as_spent(pg_url):
    led = PgLedger(pg_url)
    led.set_budget("a", 10.0)
    led.reserve(["a"], 3.0)
    assert led.expire_stale(older_than_s=3600) == 0
    assert led.expire_stale(older_than_s=-1) == 1
    b = led.balance("a")
    assert b.spent_usd == 3.0 and b.reserved_usd == 0.0


def test_two_replicas_creating_the_schema_at_once(pg_url):
    """The schema is created under an advisory lock: without it, concurrent CREATE ... IF NOT EXISTS
    fail with unique violations on the catalog."""
    errors: list[BaseException] = []
    ledgers: list[PgLedger] = []
    barrier = threading.Barrier(6)

    def open_one():
        barrier.wait()
        try:
            ledgers.append(PgLedger(pg_url))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len({led.replica_id for led in ledgers}) == 6 and len(ledgers[0].replicas()) == 6


# -- concurrency: never past a budget, to the nano-dollar -----------------------------------------------

BUDGET_NUSD = 3_000_000_007  # $3.000000007


def _spend(url: str, seed: int) -> int:
    """Reserve odd nano-dollar amounts, settle at the worst case or below, until nothing more fits.
    Returns the nano-dollars this worker settled."""
    led = PgLedger(url)
    rng = random.Random(seed)
    settled = 0
    for _ in range(100_000):
        amount = rng.randrange(50_000_001, 250_000_003)  # $0.05 .. $0.25, odd nano-dollars
        try:
            rid, _ = led.reserve(["a"], amount / NANO)
        except BudgetExceeded as exc:
            if round(exc.balance.spent_usd * NANO) + 50_000_001 > BUDGET_NUSD:
                break  # not even the smallest amount fits, whatever the others settle
            continue  # others hold reservations: try again
        actual = amount if rng.random() < 0.7 else rng.randrange(0, amount)  # mostly the worst case
        led.settle(rid, actual / NANO)
        settled += actual
    led.close()
    return settled


def _check_exact(url: str, settled: list[int]) -> None:
    budget, spent, reserved = PgLedger(url).nano_balance("a")
    assert reserved == 0
    assert spent == sum(settled)  # every settled nano-dollar counted, none twice
    assert spent <= budget == BUDGET_NUSD  # never past the budget, to the nano-dollar
    assert budget - spent < 50_000_001  # and nobody was refused while the smallest amount fitted


def test_concurrent_threads_never_overspend(pg_url):
    PgLedger(pg_url).set_budget("a", BUDGET_NUSD / NANO)
    settled: list[int] = []
    threads = [threading.Thread(target=lambda i=i: settled.append(_spend(pg_url, i))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(settled) == 8
    _check_exact(pg_url, settled)


def test_concurrent_processes_never_overspend(pg_url):
    led = PgLedger(pg_url)
    led.set_budget("a", BUDGET_NUSD / NANO)
    led.close()  # no connection may cross a fork
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        settled = pool.starmap(_spend, [(pg_url, 100 + i) for i in range(4)])
    _check_exact(pg_url, settled)


def test_a_reservation_waits_for_the_row_lock_and_reads_what_committed_before_it(pg_url):
    """Deterministic form of the race above: another transaction holds the account's row and spends
    it down; the reservation must wait for it and then see the new spend (not check a stale snapshot)."""
    led = PgLedger(pg_url)
    led.set_budget("a", 10.0)
    outcome: list[object] = []
    with psycopg.connect(pg_url) as other:  # not autocommit: holds its lock until commit
        other.execute("SELECT 1 FROM shepherd.accounts WHERE name = 'a' FOR UPDATE")
        other.execute("UPDATE shepherd.accounts SET spent_nusd = budget_nusd - 1 WHERE name = 'a'")

        def reserve():
            try:
                outcome.append(PgLedger(pg_url).reserve(["a"], 1.0))
            except BudgetExceeded as exc:
                outcome.append(exc)

        t = threading.Thread(target=reserve)
        t.start()
        t.join(0.5)
        assert t.is_alive() and outcome == []  # waiting for the row
        other.commit()
    t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], BudgetExceeded), outcome
    assert led.nano_balance("a") == (10 * NANO, 10 * NANO - 1, 0)


# -- the dead-replica rule ---------------------------------------------------------------------------------

def test_a_dead_replicas_reservations_count_as_spent_after_the_lease(pg_url):
    alive = PgLedger(pg_url, lease_s=1.0, heartbeat_s=0.25)
    dead = PgLedger(pg_url, lease_s=1.0, heartbeat_s=0.25)
    alive.set_budget("a", 10.0)
    dead_rid, _ = dead.reserve(["a"], 3.0)
    own_rid, _ = alive.reserve(["a"], 2.0)
    dead.close()  # it stops heartbeating (a SIGKILLed replica)
    alive.maintain()
    assert alive.balance("a").reserved_usd == 5.0  # within the lease: still its own
    deadline = time.monotonic() + 5
    while alive.open_reservations() == 2 and time.monotonic() < deadline:
        time.sleep(0.25)
        alive.maintain()  # heartbeats itself, and applies the rule to the others
    b = alive.balance("a")
    assert (b.spent_usd, b.reserved_usd) == (3.0, 2.0)  # the dead one's worst case, counted as spent
    assert [r[0] for r in alive.replicas()] == [alive.replica_id]
    dead.settle(dead_rid, 0.5)  # a late settle (it was not dead after all) changes nothing
    assert alive.balance("a").spent_usd == 3.0
    alive.settle(own_rid, 1.0)
    assert alive.nano_balance("a") == (10 * NANO, 4 * NANO, 0)


def test_a_replica_that_heartbeats_keeps_its_reservations(pg_url):
    a = PgLedger(pg_url, lease_s=0.6, heartbeat_s=0.2)
    b = PgLedger(pg_url, lease_s=0.6, heartbeat_s=0.2)
    a.set_budget("a", 10.0)
    a.reserve(["a"], 3.0)
    for _ in range(8):  # 1.6 s: well past the lease, but a keeps beating
        time.sleep(0.2)
        a.maintain()
        b.maintain()
    assert a.open_reservations() == 1 and b.balance("a").reserved_usd == 3.0


def test_a_reservation_refreshes_a_late_heartbeat(pg_url):
    """A replica whose background heartbeat is late beats inside the reservation's transaction, so the
    others never take a fresh reservation for a dead replica's."""
    a = PgLedger(pg_url, lease_s=1.0, heartbeat_s=0.25)
    b = PgLedger(pg_url, lease_s=1.0, heartbeat_s=0.25)
    with psycopg.connect(pg_url, autocommit=True) as c:
        c.execute("UPDATE shepherd.replicas SET heartbeat = now() - interval '1 hour' WHERE id = %s",
                  (a.replica_id,))
    a._beat_at -= 10  # its last beat, as this process remembers it, is long ago
    a.reserve(["x"], 1.0)
    assert b.reap_dead() == 0 and a.open_reservations() == 1


# -- settings and errors -----------------------------------------------------------------------------------

def _settings(server: dict):
    return server_settings(parse_config({"server": server}))


@pytest.mark.parametrize("server,needle", [
    ({"ledger_path": "/tmp/l.sqlite", "ledger": {"url": "postgresql://u@h/db"}},
     "ledger_path and [server.ledger] both set"),
    ({"ledger": {"path": "/tmp/l.sqlite", "url": "postgresql://u@h/db"}}, "not path and url"),
    ({"ledger": {"url": "postgresql://u@h/db", "url_env": "X"}}, "not url and url_env"),
    ({"ledger": {"url": "mysql://u:hunter2pass@h/db"}}, "must start with postgresql://"),
    ({"ledger": {"url": "postgresql://u:hunter2pass@h:notaport/db"}}, "not a valid URL"),
    ({"ledger": {"url": "postgresql://u@h/db", "lease_s": 3, "heartbeat_s": 2}}, "at least twice heartbeat_s"),
    ({"ledger": {"uri": "postgresql://u@h/db"}}, "server.ledger.uri: unknown key"),
])
def test_ledger_config_errors(server, needle):
    with pytest.raises(ConfigError) as err:
        _settings(server)
    assert needle in str(err.value) and "hunter2pass" not in str(err.value)


def test_ledger_settings_pick_the_store(tmp_path, monkeypatch):
    assert _settings({"ledger_path": str(tmp_path / "old.sqlite")}).resolved_ledger_path() == tmp_path / "old.sqlite"
    s = _settings({"ledger": {"path": str(tmp_path / "new.sqlite")}})
    led = open_ledger(s)
    assert isinstance(led, Ledger) and led.path == str(tmp_path / "new.sqlite")
    led.close()
    s = _settings({"ledger": {"url_env": "SHEPHERD_TEST_LEDGER_URL"}})
    monkeypatch.delenv("SHEPHERD_TEST_LEDGER_URL", raising=False)
    with pytest.raises(ConfigError, match="environment variable SHEPHERD_TEST_LEDGER_URL is not set"):
        open_ledger(s)
    monkeypatch.setenv("SHEPHERD_TEST_LEDGER_URL", "http://u:hunter2pass@h/db")
    with pytest.raises(ConfigError) as err:
        open_ledger(s)
    assert "must start with postgresql://" in str(err.value) and "hunter2pass" not in str(err.value)


def test_without_postgresql_the_tests_say_how_to_install_it(monkeypatch):
    from . import postgres as pgmod

    monkeypatch.setattr(pgmod.shutil, "which", lambda name: None)
    monkeypatch.setattr(pgmod.glob, "glob", lambda pattern: [])
    with pytest.raises(pgmod.PostgresMissing, match=r"apt-get install -y postgresql"):
        pgmod.PostgresServer()


def test_wrong_password_and_refused_connection_never_show_the_password(postgres):
    with pytest.raises(LedgerError) as err:
        PgLedger(postgres.url(password="hunter2pass"))
    msg = str(err.value)
    assert "password authentication failed" in msg and "hunter2pass" not in msg and ":***@" in msg
    with pytest.raises(LedgerError) as err:
        PgLedger(f"postgresql://u:hunter2pass@127.0.0.1:{_closed_port()}/db", connect_timeout_s=2)
    assert "Connection refused" in str(err.value) and "hunter2pass" not in str(err.value)


def _closed_port() -> int:
    from .postgres import free_port

    return free_port()


def test_serve_reports_a_ledger_it_cannot_reach_without_the_password(postgres, tmp_path):
    cfg = tmp_path / "server.toml"
    cfg.write_text('[llm]\nbackend = "scripted"\nmodel = "big"\nprice = { input = 1.0, output = 1.0 }\n'
                   '[slm]\nbackend = "scripted"\nmodel = "small"\n'
                   '[server]\nwarmup = false\n[server.ledger]\nurl_env = "SHEPHERD_TEST_LEDGER_URL"\n'
                   '[[server.keys]]\nname = "a"\nkey = "sk-a-12345678"\nbudget_usd = 1.0\n')
    env = {**os.environ, "SHEPHERD_TEST_LEDGER_URL": postgres.url(password="hunter2pass")}
    out = subprocess.run([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    text = " ".join((out.stdout + out.stderr).split())  # rich wraps long lines
    assert out.returncode == 2, text
    assert "password authentication failed" in text and "Traceback" not in text and "hunter2pass" not in text


# -- the server on PostgreSQL ------------------------------------------------------------------------------

def test_server_budgets_on_postgres(live, pg_url):
    """The SQLite ledger's first server test, on PostgreSQL: hint(5) reserves $30, costs $13; 6 fit in $100."""
    keys = [{"name": "alice", "key": "sk-alice-123456", "budget_usd": 100.0}]
    slm, llm = scripted()
    ledger = {"url": pg_url, "heartbeat_s": 0.2, "lease_s": 5}
    srv = live(create_app(make_config({"keys": keys, "ledger": ledger}), {"slm": slm, "llm": llm}))
    assert isinstance(srv.state.budgets.ledger, PgLedger)
    codes = [httpx.post(srv.url + "/v1/chat/completions", json={"model": "shepherd", "messages": QUESTION},
                        headers={"authorization": "Bearer sk-alice-123456"}, timeout=10).status_code
             for _ in range(8)]
    assert codes == [200] * 6 + [429] * 2
    srv.settle()
    srv.state.budgets.drain()
    assert PgLedger(pg_url).nano_balance("key:alice") == (100 * NANO, 78 * NANO, 0)
    time.sleep(0.6)  # three heartbeats of the server's background thread
    ages = dict(PgLedger(pg_url).replicas())
    assert ages[srv.state.budgets.ledger.replica_id] < 0.45  # it heartbeats on its own, requests or not


def test_a_lost_ledger_database_is_a_503_not_a_paid_call(live, postgres):
    url = postgres.create_database()
    keys = [{"name": "alice", "key": "sk-alice-123456", "budget_usd": 1000.0}]
    slm, llm = scripted()
    srv = live(create_app(make_config({"keys": keys, "ledger": {"url": url}}), {"slm": slm, "llm": llm}))
    srv.state.budgets.fresh_s = 0.0

    def ask():
        return httpx.post(srv.url + "/v1/chat/completions", json={"model": "llm", "messages": QUESTION},
                          headers={"authorization": "Bearer sk-alice-123456"}, timeout=10)

    assert ask().status_code == 200
    calls = len(llm.calls)
    with psycopg.connect(postgres.url(), autocommit=True) as c:
        c.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    r = ask()
    assert r.status_code == 503 and r.json()["error"]["code"] == "ledger_unavailable", r.text
    assert postgres.password not in r.text and len(llm.calls) == calls  # the LLM was not called unmetered
