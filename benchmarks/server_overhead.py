"""What the OpenAI-compatible server adds per request over calling the models directly (issue 7).

Target: overhead p50 under 2 ms and p99 under 10 ms, with an instant backend (ScriptedBackend, no delay);
with the budget ledger in PostgreSQL (issue 25), at most 2 ms p50 and 5 ms p99 added per request on a
pass-through route (`--ledger postgres`: the benchmark starts its own throwaway PostgreSQL, with
PostgreSQL's default durability, as tests/server/postgres.py does for the tests).

The server runs as a user runs it (`shepherd serve --config FILE`, a subprocess, uvicorn defaults); the
client is a minimal keep-alive HTTP/1.1 client on raw asyncio sockets in this process, so that the
numbers are the server's and not a heavy client's. Measured:
  * direct: the same work in-process, no HTTP: `Runner.answer` (hint path: an LLM call and an SLM call),
    `backend.agenerate` for the pass-through model, `Runner.answer(..., emit=...)` for streaming;
  * server: one connection, one request at a time: latency p50 / p99; overhead = server - direct;
  * floor: the same client against a trivial asyncio HTTP responder: loopback + client cost, which any
    server pays (shown so the server's own share can be read off);
  * load: 64 concurrent clients (one keep-alive connection each): requests per second and latency.

    python benchmarks/server_overhead.py [--requests 2000] [--concurrency 64] [--load-requests 6000]
                                         [--ledger {none,sqlite,postgres}] [--record] [--json results.json]
(`--budget` is the older spelling of `--ledger sqlite`.) With a ledger, requests carry a key with a budget,
so every paid LLM call reserves and settles in the ledger; the SLM is free, so "slm pass-through" never
touches it and "llm pass-through" always does.

`--record` measures the server twice, with `[server.record]` off and on (every answer, its generations and
cost written to a SQLite trace store by the recorder's thread), and reports what recording adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT_LLM = "Step one add three and four to get seven . Step two double it . The answer is 14."
SCRIPT_SLM = "I think it is twelve . The answer is 12."
QUESTION = [{"role": "user", "content": "What is (3+4)*2?"}]
SCENARIOS = {
    "shepherd (hint 5, 2 model calls)": {"model": "shepherd", "messages": QUESTION},
    "slm pass-through (1 call)": {"model": "slm", "messages": QUESTION},
    "llm pass-through (1 paid call)": {"model": "llm", "messages": QUESTION},
    "shepherd streamed (SSE)": {"model": "shepherd", "messages": QUESTION, "stream": True},
}


def config_text(ledger_kind: str, sqlite_path: str, record: str | None = None) -> str:
    text = f"""
[llm]
backend = "scripted"
model = "big"
script = "{SCRIPT_LLM}"
price = {{ input = 0.59, output = 0.79 }}

[slm]
backend = "scripted"
model = "small"
script = "{SCRIPT_SLM}"

[server]
warmup = false
max_in_flight = 4096

[server.models.shepherd]
policy = "fixed-hint"
settings = {{ tokens = 5 }}
"""
    if record:
        text += f'\n[server.record]\nstore = "{record}"\n'
    if ledger_kind == "sqlite":
        text += f'\n[server.ledger]\npath = "{sqlite_path}"\n'
    elif ledger_kind == "postgres":
        text += f'\n[server.ledger]\nurl_env = "{PG_URL_ENV}"\n'
    if ledger_kind != "none":
        text += '\n[[server.keys]]\nname = "bench"\nkey = "sk-bench-000000"\nbudget_usd = 1000000.0\n'
    return text


PG_URL_ENV = "SHEPHERD_BENCH_LEDGER_URL"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# -- a minimal HTTP/1.1 keep-alive client ---------------------------------------------------------------

class Conn:
    def __init__(self, host: str, port: int, auth: str | None) -> None:
        self.host, self.port, self.auth = host, port, auth

    async def open(self) -> Conn:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        auth = f"Authorization: Bearer {self.auth}\r\n" if self.auth else ""
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n{auth}"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        self.writer.write(head + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        if "content-length" in headers:
            return status, await self.reader.readexactly(int(headers["content-length"]))
        chunks = []
        while True:  # chunked transfer encoding (streamed responses)
            size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            data = await self.reader.readexactly(size + 2)
            if size == 0:
                return status, b"".join(chunks)
            chunks.append(data[:-2])

    def close(self) -> None:
        self.writer.close()


async def sequential(host, port, body: dict, n: int, auth=None, path="/v1/chat/completions") -> list[float]:
    conn = await Conn(host, port, auth).open()
    payload = json.dumps(body).encode()
    out = []
    for i in range(n + n // 10):
        t0 = time.perf_counter()
        status, data = await conn.post(path, payload)
        dt = time.perf_counter() - t0
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
        if i >= n // 10:  # the first tenth warms up
            out.append(dt)
    conn.close()
    return out


async def load(host, port, body: dict, total: int, concurrency: int, auth=None) -> tuple[float, list[float]]:
    payload = json.dumps(body).encode()
    conns = [await Conn(host, port, auth).open() for _ in range(concurrency)]
    latencies: list[float] = []
    remaining = [total]
    errors = []

    async def worker(conn: Conn):
        while remaining[0] > 0:
            remaining[0] -= 1
            t0 = time.perf_counter()
            status, data = await conn.post("/v1/chat/completions", payload)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append((status, data[:200]))

    await asyncio.gather(*(worker(c) for c in conns[: min(concurrency, 8)]))  # warm up
    latencies.clear()
    remaining[0] = total
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} errors under load, first: {errors[0]}")
    return total / elapsed, latencies


# -- the direct calls ------------------------------------------------------------------------------------

async def direct(n: int) -> dict[str, list[float]]:
    from shepherd.costs import PAPER_LLM_PRICE
    from shepherd.models.base import GenerationRequest
    from shepherd.models.scripted import ScriptedBackend
    from shepherd.policies import FixedHint
    from shepherd.runner import Runner

    slm = ScriptedBackend(SCRIPT_SLM, model_id="small")
    llm = ScriptedBackend(SCRIPT_LLM, model_id="big")
    runner = Runner(slm, llm, llm_price=PAPER_LLM_PRICE)
    req = GenerationRequest.create(QUESTION, max_tokens=512)
    policy = FixedHint(tokens=5)
    sink: list[str] = []

    async def timed(fn):
        out = []
        for i in range(n + n // 10):
            slm.calls.clear()
            llm.calls.clear()
            t0 = time.perf_counter()
            await fn()
            if i >= n // 10:
                out.append(time.perf_counter() - t0)
        return out

    return {
        "shepherd (hint 5, 2 model calls)": await timed(lambda: runner.answer(req, policy)),
        "slm pass-through (1 call)": await timed(lambda: slm.agenerate(req)),
        "llm pass-through (1 paid call)": await timed(lambda: llm.agenerate(req)),
        "shepherd streamed (SSE)": await timed(lambda: runner.answer(req, policy, emit=lambda s, t: sink.append(t))),
    }


# -- a trivial HTTP responder: the transport floor ------------------------------------------------------

FLOOR_SERVER = r"""
import asyncio, sys
BODY = b'{"ok": true}'
RESP = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(BODY) + BODY
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            n = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    n = int(line.split(b":")[1])
            await reader.readexactly(n)
            writer.write(RESP)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd: list[str], port: int, health: str | None, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.communicate()[1][-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if health:
                    s.sendall(f"GET {health} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    if b" 200 " not in s.recv(100):
                        raise OSError
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def ms(x: float) -> str:
    return f"{x * 1000:7.3f}"


async def run(args) -> dict:
    host = "127.0.0.1"
    results: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "requests": args.requests,
                     "concurrency": args.concurrency, "budget_ledger": args.ledger}
    try:
        import uvicorn

        results["uvicorn"] = uvicorn.__version__
        import importlib.util

        results["uvloop"] = importlib.util.find_spec("uvloop") is not None
        results["httptools"] = importlib.util.find_spec("httptools") is not None
    except ImportError:
        pass

    d = await direct(args.requests)

    port = free_port()
    floor_proc = start([sys.executable, "-c", FLOOR_SERVER, str(port)], port, None)
    try:
        floor = await sequential(host, port, {"x": 1}, args.requests, path="/")
    finally:
        stop(floor_proc)

    results["floor"] = {"p50_ms": pct(floor, 0.5) * 1e3, "p99_ms": pct(floor, 0.99) * 1e3}
    tmp = Path(tempfile.mkdtemp(prefix="shepherd-bench-"))
    env = dict(os.environ)
    pg = None
    if args.ledger == "postgres":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from server.postgres import PostgresServer  # the tests' throwaway PostgreSQL

        pg = PostgresServer(durable=True).start()
        env[PG_URL_ENV] = pg.create_database()
        results["postgres"] = pg.version()
    try:
        for recording in ([False, True] if args.record else [False]):
            tag = "-record" if recording else ""
            cfg = tmp / f"server{tag}.toml"
            cfg.write_text(config_text(args.ledger, str(tmp / f"ledger{tag}.sqlite"),
                                       str(tmp / "served.sqlite") if recording else None))
            seq, ld = await measure(args, cfg, d, env)
            results["sequential_record" if recording else "sequential"] = seq
            results["load_record" if recording else "load"] = ld
    finally:
        if pg is not None:
            try:  # the books balance: nothing left reserved, every paid call counted
                from shepherd.server.ledger import PgLedger

                led = PgLedger(env[PG_URL_ENV])
                _, spent, reserved = led.nano_balance("key:bench")
                results["ledger_check"] = {"spent_usd": spent / 1e9, "reserved_usd": reserved / 1e9,
                                           "open_reservations": led.open_reservations()}
                led.close()
            finally:
                pg.stop()
    if args.record:
        from shepherd.traces.record import RecordStore

        with RecordStore(tmp / "served.sqlite", readonly=True) as rs:
            results["recorded_requests"] = rs.count()
    return results


async def measure(args, cfg: Path, d: dict[str, list[float]], env: dict) -> tuple[dict, dict]:
    """One `shepherd serve` with this config: the sequential scenarios, then the load."""
    host = "127.0.0.1"
    auth = "sk-bench-000000" if args.ledger != "none" else None
    port = free_port()
    proc = start([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg), "--port", str(port),
                  "--log-level", "warning"], port, "/health", env)
    try:
        rows = {}
        for name, body in SCENARIOS.items():
            lat = await sequential(host, port, body, args.requests, auth=auth)
            rows[name] = {
                "direct_p50_ms": pct(d[name], 0.5) * 1e3, "direct_p99_ms": pct(d[name], 0.99) * 1e3,
                "server_p50_ms": pct(lat, 0.5) * 1e3, "server_p99_ms": pct(lat, 0.99) * 1e3,
                "overhead_p50_ms": (pct(lat, 0.5) - pct(d[name], 0.5)) * 1e3,
                "overhead_p99_ms": (pct(lat, 0.99) - pct(d[name], 0.99)) * 1e3,
                "mean_ms": statistics.fmean(lat) * 1e3,
            }
        rps, lat = await load(host, port, SCENARIOS["shepherd (hint 5, 2 model calls)"], args.load_requests,
                              args.concurrency, auth=auth)
        ld = {"scenario": "shepherd (hint 5, 2 model calls)", "rps": rps,
              "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3}
    finally:
        stop(proc)  # a graceful stop lands every settle
    return rows, ld


def report(r: dict) -> None:
    print(f"python {r['python']}, {r['cpus']} CPUs, uvicorn {r.get('uvicorn')} (uvloop: {r.get('uvloop')}, "
          f"httptools: {r.get('httptools')}), budget ledger: {r['budget_ledger']}")
    for suffix, what in (("", "recording off"), ("_record", "recording on ([server.record])")):
        if "sequential" + suffix not in r:
            continue
        print(f"{what}: one connection, one request at a time, {r['requests']} requests each (ms):")
        print(f"{'scenario':36} {'direct p50':>10} {'p99':>8} {'server p50':>10} {'p99':>8} "
              f"{'overhead p50':>12} {'p99':>8}")
        for name, row in r["sequential" + suffix].items():
            print(f"{name:36} {ms(row['direct_p50_ms'] / 1e3):>10} {ms(row['direct_p99_ms'] / 1e3):>8} "
                  f"{ms(row['server_p50_ms'] / 1e3):>10} {ms(row['server_p99_ms'] / 1e3):>8} "
                  f"{ms(row['overhead_p50_ms'] / 1e3):>12} {ms(row['overhead_p99_ms'] / 1e3):>8}")
        ld = r["load" + suffix]
        print(f"{r['concurrency']} concurrent clients, {ld['scenario']}: {ld['rps']:.0f} requests/s, "
              f"latency p50 {ld['p50_ms']:.2f} ms, p99 {ld['p99_ms']:.2f} ms")
    f = r["floor"]
    print(f"transport floor (same client, trivial asyncio responder): p50 {f['p50_ms']:.3f} ms, "
          f"p99 {f['p99_ms']:.3f} ms")
    if "postgres" in r:
        print(f"ledger: {r['postgres']}; after the run: {r.get('ledger_check')}")
    if "sequential_record" in r:
        print(f"recording adds (server with recording on - off; {r['recorded_requests']} requests recorded):")
        for name, on in r["sequential_record"].items():
            off = r["sequential"][name]
            print(f"  {name:36} p50 {on['server_p50_ms'] - off['server_p50_ms']:+.3f} ms, "
                  f"p99 {on['server_p99_ms'] - off['server_p99_ms']:+.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="sequential requests per scenario")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--load-requests", type=int, default=6000)
    ap.add_argument("--ledger", choices=["none", "sqlite", "postgres"], default="none",
                    help="with an API key and a budget kept in this ledger")
    ap.add_argument("--budget", action="store_true", help="the same as --ledger sqlite")
    ap.add_argument("--record", action="store_true", help="measure with [server.record] off and on")
    ap.add_argument("--json", type=Path, help="also write the numbers as JSON")
    args = ap.parse_args()
    if args.budget and args.ledger == "none":
        args.ledger = "sqlite"
    results = asyncio.run(run(args))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
