"""The budget ledger (reserve-then-settle in SQLite) and the server's 429s, softening and settlements."""

from __future__ import annotations

import multiprocessing
import random
import threading

import httpx
import openai
import pytest

from shepherd.models.scripted import ScriptedBackend
from shepherd.server import create_app
from shepherd.server.ledger import BudgetExceeded, Ledger

from .support import LLM_ANSWER, QUESTION, SLM_ANSWER, make_config, scripted

# -- the ledger alone ---------------------------------------------------------------------------------


def test_reserve_settle_arithmetic(tmp_path):
    check_reserve_settle_arithmetic(Ledger(tmp_path / "l.sqlite"))


def check_reserve_settle_arithmetic(led) -> None:
    """What every ledger must do (test_pg_ledger.py runs it on PostgreSQL)."""
    led.set_budget("a", 10.0)
    rid, (bal,) = led.reserve(["a"], 4.0)
    assert bal.reserved_usd == 4.0 and bal.remaining_usd == 6.0
    led.settle(rid, 1.5)
    led.settle(rid, 1.5)  # settling twice changes nothing
    b = led.balance("a")
    assert (b.spent_usd, b.reserved_usd, b.remaining_usd) == (1.5, 0.0, 8.5)
    with pytest.raises(BudgetExceeded) as err:
        led.reserve(["a"], 9.0)
    assert "budget of a is spent" in str(err.value) and "$1.500000 spent" in str(err.value)
    rid, _ = led.reserve(["a"], 8.5)  # exactly the rest fits
    led.release(rid)
    assert led.balance("a").spent_usd == 1.5 and led.open_reservations() == 0


def test_reservation_on_two_accounts_is_all_or_nothing(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.set_budget("key", 100.0)
    led.set_budget("global", 5.0)
    with pytest.raises(BudgetExceeded) as err:
        led.reserve(["key", "global"], 6.0)
    assert err.value.balance.account == "global"
    assert led.balance("key").reserved_usd == 0.0


def test_budget_change_keeps_what_was_spent_and_tiny_amounts_do_not_drift(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.set_budget("a", 1.0)
    for _ in range(1000):
        rid, _ = led.reserve(["a"], 0.00000079)
        led.settle(rid, 0.00000059)
    b = led.set_budget("a", 2.0)
    assert b.spent_usd == pytest.approx(0.00059, abs=1e-12) and b.reserved_usd == 0.0 and b.budget_usd == 2.0


def test_stale_reservations_count_as_spent(tmp_path):
    led = Ledger(tmp_path / "l.sqlite")
    led.set_budget("a", 10.0)
    led.reserve(["a"], 3.0)
    assert led.expire_stale(older_than_s=-1) == 1
    b = led.balance("a")
    assert b.spent_usd == 3.0 and b.reserved_usd == 0.0


def _spend(path: str, account: str, seed: int) -> int:
    """Reserve $1 and settle a random real cost until the budget is truly spent (not just reserved)."""
    led = Ledger(path)
    rng = random.Random(seed)
    ok = 0
    for _ in range(100_000):
        try:
            rid, _ = led.reserve([account], 1.0)
        except BudgetExceeded as exc:
            if exc.balance.spent_usd + 1.0 > exc.balance.budget_usd:
                break  # nothing more fits, whatever the others settle
            continue  # others hold reservations: try again
        ok += 1
        led.settle(rid, rng.choice([0.25, 0.5, 1.0]))  # real cost at most the reservation
    return ok


def test_concurrent_threads_never_overspend(tmp_path):
    path = str(tmp_path / "l.sqlite")
    Ledger(path).set_budget("a", 25.0)
    oks: list[int] = []
    threads = [threading.Thread(target=lambda i=i: oks.append(_spend(path, "a", i))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b = Ledger(path).balance("a")
    assert b.reserved_usd == 0.0
    assert 24.0 < b.spent_usd <= 25.0  # never over, and nobody was refused while a dollar was free
    assert sum(oks) >= 25


def test_concurrent_processes_never_overspend(tmp_path):
    path = str(tmp_path / "l.sqlite")
    led = Ledger(path)
    led.set_budget("a", 20.0)
    led.close()  # no SQLite connection may cross a fork (POSIX locks are per process)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        oks = pool.starmap(_spend, [(path, "a", i) for i in range(4)])
    b = Ledger(path).balance("a")
    assert b.reserved_usd == 0.0 and 19.0 < b.spent_usd <= 20.0
    assert sum(oks) >= 20


# -- the server's budgets ------------------------------------------------------------------------------

def budget_server(live, tmp_path, *, key_budget=None, global_budget=None, **faults):
    keys = [{"name": "alice", "key": "sk-alice-123456", **({"budget_usd": key_budget} if key_budget else {})}]
    server = {"keys": keys, "ledger_path": str(tmp_path / "ledger.sqlite")}
    if global_budget:
        server["global_budget"] = global_budget
    slm, llm = scripted(**faults)
    srv = live(create_app(make_config(server), {"slm": slm, "llm": llm}))
    srv.slm, srv.llm = slm, llm
    srv.ledger = srv.state.budgets.ledger
    srv.state.budgets.fresh_s = 0.0  # the tests change the ledger behind the server's back: always re-read
    return srv


def chat(srv, model="shepherd", **kw):
    return httpx.post(srv.url + "/v1/chat/completions", json={"model": model, "messages": QUESTION, **kw},
                      headers={"authorization": "Bearer sk-alice-123456"}, timeout=10)


def test_key_budget_is_charged_what_answers_cost_then_refuses_with_429(live, tmp_path):
    # hint(5): worst case reserved = 20 prompt tokens (counted, with margin) * $1 + 5 * $2 = $30;
    # real cost = 3 * $1 + 5 * $2 = $13. Spend s may reserve again while s + 30 <= 100: 6 answers.
    srv = budget_server(live, tmp_path, key_budget=100.0)
    codes = [chat(srv).status_code for _ in range(8)]
    assert codes == [200] * 6 + [429] * 2
    srv.settle()
    b = srv.ledger.balance("key:alice")
    assert b.spent_usd == pytest.approx(78.0) and b.reserved_usd == 0.0
    r = chat(srv)
    err = r.json()["error"]
    assert r.status_code == 429 and err["code"] == "budget_exceeded" and err["type"] == "insufficient_quota"
    assert "alice" in err["message"] and "$78.000000 spent" in err["message"]
    assert r.headers["x-should-retry"] == "false"
    # the SLM is free: it still answers while the budget is not fully spent
    assert chat(srv, model="slm").status_code == 200
    budget = httpx.get(srv.url + "/v1/budget", headers={"authorization": "Bearer sk-alice-123456"}).json()
    assert budget["accounts"][0]["spent_usd"] == pytest.approx(78.0)


def test_a_spent_key_gets_429_for_everything_and_the_sdk_does_not_retry(live, tmp_path):
    srv = budget_server(live, tmp_path, key_budget=10.0)
    srv.ledger.charge(["key:alice"], 10.0)
    client = srv.openai(api_key="sk-alice-123456", max_retries=3)  # x-should-retry: false wins
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="slm", messages=QUESTION)
    assert err.value.code == "budget_exceeded"
    assert 'shepherd_budget_rejections_total{key="alice"} 1.0' in httpx.get(srv.url + "/metrics").text


def test_concurrent_requests_never_overspend_a_key(live, tmp_path):
    srv = budget_server(live, tmp_path, key_budget=100.0, delay_s=0.05)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(chat(srv).status_code)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    srv.settle()
    ok = results.count(200)
    assert set(results) <= {200, 429} and ok >= 1 and results.count(429) >= 1
    b = srv.ledger.balance("key:alice")
    assert b.reserved_usd == 0.0 and b.spent_usd <= 100.0
    assert b.spent_usd == pytest.approx(13.0 * ok)


def test_disconnect_mid_stream_settles_what_was_delivered(live, tmp_path):
    import time

    srv = budget_server(live, tmp_path, key_budget=1e9)
    srv.llm._answer = lambda _req: " ".join(f"w{i}" for i in range(60))
    srv.llm.delay_s = 0.05
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json={
            "model": "llm", "messages": QUESTION, "stream": True, "max_tokens": 60},
            headers={"authorization": "Bearer sk-alice-123456"}) as r:
        seen = 0
        for line in r.iter_lines():
            seen += line.startswith("data: {")
            if seen >= 5:
                break
    time.sleep(0.2)
    srv.settle()
    b = srv.ledger.balance("key:alice")
    assert srv.ledger.open_reservations() == 0 and b.reserved_usd == 0.0
    # 10 counted prompt tokens (scripted count) at $1 + the few words delivered at $2, not the worst case
    assert 10 + 2 * 4 <= b.spent_usd < 10 + 2 * 20


def test_llm_failure_is_not_charged(live, tmp_path):
    from shepherd.models.base import BackendError

    srv = budget_server(live, tmp_path, key_budget=100.0, fail=BackendError("down"))
    r = chat(srv)
    assert r.status_code == 200 and r.json()["shepherd"]["degraded"]
    assert r.json()["shepherd"]["budget"]["charged_usd"] == 0.0
    srv.settle()
    assert srv.ledger.balance("key:alice").spent_usd == 0.0


def test_global_budget_softens_hints_then_goes_slm_only(live, tmp_path):
    srv = budget_server(live, tmp_path, global_budget={"cap_usd": 1000.0, "soften_from": 0.5,
                                                       "slm_only_from": 0.9})
    r = chat(srv).json()
    assert r["shepherd"]["decision"] == "hint(5)" and r["shepherd"]["budget"]["mode"] == "normal"
    srv.settle()
    srv.ledger.charge(["global"], 700.0 - 13.0)  # 70 % of the cap: hints scaled by (0.9-0.7)/0.4 = 0.5
    r = chat(srv).json()["shepherd"]
    assert r["decision"] == "hint(2)" and r["budget"]["mode"] == "softened"
    assert r["details"]["budget_original_decision"] == "hint(5)"
    r = chat(srv, model="shepherd-llm", max_tokens=20).json()["shepherd"]
    assert r["decision"].startswith("hint(")  # an llm decision becomes a hint of the scaled answer budget
    srv.settle()
    srv.ledger.charge(["global"], 300.0)
    calls = len(srv.llm.calls)
    r = chat(srv).json()
    assert r["shepherd"]["decision"] == "slm" and r["shepherd"]["budget"]["mode"] == "slm-only"
    assert r["choices"][0]["message"]["content"] == SLM_ANSWER and r["shepherd"]["cost_usd"] == 0.0
    assert len(srv.llm.calls) == calls
    assert "shepherd_budget_spent_usd" in httpx.get(srv.url + "/metrics").text


def test_priced_slm_is_metered_too(live, tmp_path):
    from shepherd.config import parse_config

    cfg = make_config({"keys": [{"name": "alice", "key": "sk-alice-123456", "budget_usd": 1000.0}],
                       "ledger_path": str(tmp_path / "l.sqlite")})
    data = cfg.model_dump()
    data["slm"]["price"] = {"input": 1_000_000.0, "output": 1_000_000.0}
    cfg = parse_config(data)
    srv = live(create_app(cfg, {"slm": ScriptedBackend(SLM_ANSWER, model_id="small"),
                                "llm": ScriptedBackend(LLM_ANSWER, model_id="big")}))
    r = chat(srv, model="slm").json()
    srv.settle()
    spent = srv.state.budgets.ledger.balance("key:alice").spent_usd
    assert spent == pytest.approx(r["shepherd"]["cost_usd"]) and spent > 0
