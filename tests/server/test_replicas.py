"""Issue 25's done-when: two real `shepherd serve` replicas share one budget ledger in a real PostgreSQL.

Both replicas run as users run them (subprocesses, one config file, `[server.ledger] url_env`) in front
of a real OpenAI-compatible HTTP backend on loopback that answers at once (and holds one chosen request
forever). Checked:
  1. concurrent requests with one key at both replicas never pass the key's budget, to the nano-dollar,
     and the ledger's spend equals the sum of the accepted answers' costs;
  2. a replica SIGKILLed while its request hangs leaves a reservation that the surviving replica
     releases, counted as spent at its worst case, once the dead one's heartbeat is `lease_s` old
     (not before), and the survivor goes on serving.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from shepherd.server.ledger import NANO, PgLedger, to_nano

from .postgres import free_port

LEASE_S = 3.0
HEARTBEAT_S = 0.5
BURST_BUDGET = 150.0  # dollars: a handful of answers (each reserves ~$30-40 and costs $20)
HANG = "please hang"


class InstantOpenAI:
    """A real OpenAI-compatible chat endpoint on loopback: answers at once with fixed usage (10 prompt,
    5 completion tokens), after `delay_s`; a request whose last message contains HANG is held until
    `release` is set (it stands for an LLM call that never returns)."""

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.release = threading.Event()
        self.hanging = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if HANG in str(body.get("messages", [])[-1:]):
                    outer.hanging.set()
                    outer.release.wait(60)
                else:
                    time.sleep(outer.delay_s)
                self._send(200, {
                    "id": "c1", "object": "chat.completion", "created": 0, "model": body.get("model", "big"),
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "The answer is 14 ."}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})

            do_GET = do_POST

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> InstantOpenAI:  # noqa: PYI034 (never subclassed)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def config_text(backend_url: str) -> str:
    return f"""
[llm]
backend = "openai"
model = "big"
base_url = "{backend_url}"
prefix_route = "none"
max_retries = 0
timeout_s = 60
price = {{ input = 1000000.0, output = 2000000.0 }}   # $1 per prompt token, $2 per completion token

[slm]
backend = "scripted"
model = "small"

[server]
warmup = false
llm_timeout_s = 60

[server.ledger]
url_env = "SHEPHERD_TEST_LEDGER_URL"
lease_s = {LEASE_S}
heartbeat_s = {HEARTBEAT_S}

[[server.keys]]
name = "burst"
key = "sk-burst-123456"
budget_usd = {BURST_BUDGET}

[[server.keys]]
name = "warm"
key = "sk-warm-1234567"

[[server.keys]]
name = "hang"
key = "sk-hang-1234567"
budget_usd = 1000.0
"""


def start_replica(cfg, url: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "SHEPHERD_TEST_LEDGER_URL": url}
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg), "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen, base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(base + "/health", timeout=1).json().get("ready"):
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "replica did not start"
        time.sleep(0.1)


def ask(base: str, key: str, content: str = "What is (3+4)*2?") -> httpx.Response:
    return httpx.post(base + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {key}"},
                      json={"model": "llm", "max_tokens": 5, "messages": [{"role": "user", "content": content}]})


@pytest.mark.slow
def test_two_replicas_share_one_ledger_and_a_dead_ones_reservation_is_released(pg_url, tmp_path):
    cfg = tmp_path / "server.toml"
    with InstantOpenAI() as backend:
        cfg.write_text(config_text(backend.url))
        replicas = [start_replica(cfg, pg_url) for _ in range(2)]
        try:
            for proc, base in replicas:
                wait_ready(proc, base)
            (proc_a, a), (_, b) = replicas
            ledger = PgLedger(pg_url)
            assert len(ledger.replicas()) >= 2  # both heartbeat (plus this test's own ledger)
            for base in (a, b):  # first calls find out how the backend counts tokens: not in the burst
                assert ask(base, "sk-warm-1234567").status_code == 200

            # 1. a burst of concurrent requests with one key, spread over both replicas
            with ThreadPoolExecutor(16) as pool:
                responses = list(pool.map(lambda i: ask((a, b)[i % 2], "sk-burst-123456"), range(40)))
            codes = [r.status_code for r in responses]
            assert set(codes) <= {200, 429}, [r.text for r in responses if r.status_code not in (200, 429)]
            accepted = [r.json() for r in responses if r.status_code == 200]
            assert 3 <= len(accepted) < 40 and codes.count(429) >= 1
            assert {r.json()["error"]["code"] for r in responses if r.status_code == 429} == {"budget_exceeded"}
            # both replicas took part: each served some of the burst or refused it on what the ledger holds (which
            # one wins the budget depends on scheduling: on a loaded machine one replica can take all of it)
            served_by = {("a", "b")[i % 2] for i, r in enumerate(responses) if r.status_code == 200}
            refused_by = {("a", "b")[i % 2] for i, r in enumerate(responses) if r.status_code == 429}
            assert served_by and served_by | refused_by == {"a", "b"}
            budget, spent, _ = _settled(ledger, "key:burst")
            assert budget == to_nano(BURST_BUDGET) and spent <= budget  # never past it, to the nano-dollar
            assert spent == sum(to_nano(body["shepherd"]["cost_usd"]) for body in accepted) == 20 * NANO * len(accepted)

            # 2. replica a hangs in a paid call, then dies
            hung = threading.Thread(target=lambda: _ignore_errors(ask, a, "sk-hang-1234567", HANG), daemon=True)
            hung.start()
            assert backend.hanging.wait(15), "the hanging request never reached the backend"
            worst = _wait_for(lambda: ledger.nano_balance("key:hang")[2], lambda r: r > 0, 10)
            assert worst > 20 * NANO  # the worst case, held while the call is in flight
            proc_a.send_signal(signal.SIGKILL)
            proc_a.wait(10)
            killed_at = time.monotonic()
            time.sleep(LEASE_S - 2 * HEARTBEAT_S - 0.2)
            assert ledger.nano_balance("key:hang")[2] == worst  # within the lease: still held
            _wait_for(lambda: ledger.nano_balance("key:hang")[2], lambda r: r == 0, LEASE_S + 10)
            released_after = time.monotonic() - killed_at
            assert LEASE_S - HEARTBEAT_S - 0.3 <= released_after <= LEASE_S + 3 * HEARTBEAT_S + 2
            assert ledger.nano_balance("key:hang") == (1000 * NANO, worst, 0)  # counted as spent, worst case
            assert ledger.open_reservations() == 0

            # the survivor goes on: it answers with the same key, and the books stay exact
            r = ask(b, "sk-hang-1234567")
            assert r.status_code == 200, r.text
            assert _settled(ledger, "key:hang")[1] == worst + to_nano(r.json()["shepherd"]["cost_usd"])
        finally:
            backend.release.set()
            for proc, _ in replicas:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
            for proc, _ in replicas:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def _settled(ledger: PgLedger, account: str) -> tuple[int | None, int, int]:
    """The account once every settle the replicas sent off has landed (they settle off the request path)."""
    _wait_for(lambda: ledger.nano_balance(account)[2], lambda r: r == 0, 10)
    return ledger.nano_balance(account)


def _wait_for(read, ok, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, f"gave up waiting; last value {value}"
        time.sleep(0.05)


def _ignore_errors(fn, *args):
    try:
        fn(*args)
    except httpx.HTTPError:
        pass
