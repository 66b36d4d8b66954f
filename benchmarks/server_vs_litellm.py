"""The shepherd server next to LiteLLM's proxy, in front of the same instant OpenAI-compatible backend (issue 25).

Both run as their users run them, one process each: `shepherd serve --config FILE` with a pass-through route
(`model = "llm"`) to an OpenAI-compatible backend, and `litellm --config FILE --port P` (litellm[proxy], the
command its docs give) with one `model_list` entry for the same backend. The backend is a raw asyncio HTTP
responder that answers every chat completion at once with a fixed body (usage included), so what is measured
is what each proxy adds. The client is the raw-socket keep-alive client of `server_overhead.py`.

Measured per proxy: one connection, one request at a time (latency p50/p99; overhead = proxy - direct call to
the backend through the same client), then `--concurrency` clients on one keep-alive connection each
(requests per second, latency). Optional: the shepherd server with an API key and budget, on the SQLite
ledger (`--budget`) or a PostgreSQL ledger (`--postgres`: a throwaway PostgreSQL started as the tests start
it, PostgreSQL's default durability; or `--ledger-url postgresql://...` for one you run). Every pass-through
call is free to the ledger unless it is priced: the pass-through route here is `llm` (priced at the paper's
rates), so each request reserves and settles in the ledger.

LiteLLM lives in its own virtual environment (its pins clash with ours): pass its `litellm` executable.

    python -m venv /tmp/litellm-venv && /tmp/litellm-venv/bin/pip install "litellm[proxy]==1.108.7"
    python benchmarks/server_vs_litellm.py --litellm /tmp/litellm-venv/bin/litellm [--budget] [--postgres]
        [--ledger-url URL] [--requests 2000] [--concurrency 64] [--load-requests 6000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from server_overhead import FLOOR_SERVER, free_port, load, pct, sequential, start, stop

# the transport floor's responder, answering a chat completion (usage included, so no tokenizer is needed)
BACKEND = FLOOR_SERVER.replace("""BODY = b'{"ok": true}'""", "BODY = " + repr(json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "big",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "I think it is twelve . The answer is 12."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
}).encode()))
assert BACKEND != FLOOR_SERVER

BODY = {"model": "llm", "messages": [{"role": "user", "content": "What is (3+4)*2?"}], "max_tokens": 64}
KEY = "sk-bench-000000"
LITELLM_KEY = "sk-" + "0" * 64  # its master key: it refuses to start without one; no database, no budget


def shepherd_config(backend_url: str, budget: bool, ledger_path: str, ledger_url: str | None) -> str:
    text = f"""
[llm]
backend = "openai"
base_url = "{backend_url}"
model = "big"
prefix_route = "none"
price = {{ input = 0.59, output = 0.79 }}

[slm]
backend = "openai"
base_url = "{backend_url}"
model = "small"
prefix_route = "none"

[server]
warmup = false
max_in_flight = 4096
"""
    if budget or ledger_url:
        text += f'\n[server.ledger]\nurl = "{ledger_url}"\n' if ledger_url else f'ledger_path = "{ledger_path}"\n'
        text += f'\n[[server.keys]]\nname = "bench"\nkey = "{KEY}"\nbudget_usd = 1000000.0\n'
    return text


def litellm_config(backend_url: str) -> str:
    return f"""model_list:
  - model_name: llm
    litellm_params:
      model: openai/small
      api_base: {backend_url}
      api_key: sk-none
"""


async def measure(port: int, args, auth: str | None, direct: list[float]) -> dict:
    lat = await sequential("127.0.0.1", port, BODY, args.requests, auth=auth)
    rps, load_lat = await load("127.0.0.1", port, BODY, args.load_requests, args.concurrency, auth=auth)
    return {"p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3, "mean_ms": statistics.fmean(lat) * 1e3,
            "overhead_p50_ms": (pct(lat, 0.5) - pct(direct, 0.5)) * 1e3,
            "overhead_p99_ms": (pct(lat, 0.99) - pct(direct, 0.99)) * 1e3,
            "load_rps": rps, "load_p50_ms": pct(load_lat, 0.5) * 1e3, "load_p99_ms": pct(load_lat, 0.99) * 1e3}


async def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="shepherd-vs-litellm-"))
    out: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "requests": args.requests,
                 "concurrency": args.concurrency, "load_requests": args.load_requests, "rows": {}}
    bport = free_port()
    backend = start([sys.executable, "-c", BACKEND, str(bport)], bport, None)
    url = f"http://127.0.0.1:{bport}/v1"
    try:
        direct = await sequential("127.0.0.1", bport, BODY, args.requests)
        rps, load_lat = await load("127.0.0.1", bport, BODY, args.load_requests, args.concurrency)
        out["rows"]["backend, direct"] = {
            "p50_ms": pct(direct, 0.5) * 1e3, "p99_ms": pct(direct, 0.99) * 1e3, "overhead_p50_ms": 0.0,
            "overhead_p99_ms": 0.0, "load_rps": rps, "load_p50_ms": pct(load_lat, 0.5) * 1e3,
            "load_p99_ms": pct(load_lat, 0.99) * 1e3}

        variants = [("shepherd serve, pass-through", False, None)]
        if args.budget:
            variants.append(("shepherd serve, pass-through, key + SQLite ledger", True, None))
        pg = None
        if args.postgres and not args.ledger_url:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from server.postgres import PostgresServer  # the tests' throwaway PostgreSQL

            pg = await asyncio.to_thread(PostgresServer(durable=True).start)
            args.ledger_url = pg.create_database()
            out["postgres"] = pg.version()
        if args.ledger_url:
            variants.append(("shepherd serve, pass-through, key + PostgreSQL ledger", True, args.ledger_url))
        for name, budget, ledger_url in variants:
            cfg = tmp / f"shepherd-{len(out['rows'])}.toml"
            cfg.write_text(shepherd_config(url, budget, str(tmp / f"ledger-{len(out['rows'])}.sqlite"), ledger_url))
            port = free_port()
            proc = start([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg), "--port", str(port),
                          "--log-level", "warning"], port, "/health")
            try:
                out["rows"][name] = await measure(port, args, KEY if budget else None, direct)
            finally:
                stop(proc)
        if pg is not None:
            pg.stop()

        if args.litellm:
            cfg = tmp / "litellm.yaml"
            cfg.write_text(litellm_config(url))
            port = free_port()
            proc, version = await asyncio.to_thread(start_litellm, args.litellm, cfg, port)
            try:
                out["litellm_version"] = version
                out["rows"][f"LiteLLM proxy {version}"] = await measure(port, args, LITELLM_KEY, direct)
            finally:
                stop(proc)
    finally:
        stop(backend)
    return out


def start_litellm(executable: str, cfg: Path, port: int) -> tuple[subprocess.Popen, str]:
    """`litellm --config FILE --port P` as its docs run it; it imports for a while before it listens, and its
    /health/liveliness answers once it does."""
    import socket
    import time

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False",
           "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    proc = subprocess.Popen([executable, "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    version = subprocess.run([str(Path(executable).parent / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('litellm'))"],
                             capture_output=True, text=True, check=False).stdout.strip()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited: {proc.stderr.read()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"GET /health/liveliness HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(100):
                    return proc, version
        except OSError:
            pass
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError("litellm did not start within 180 s")


def report(r: dict) -> None:
    print(f"python {r['python']}, {r['cpus']} CPUs; instant OpenAI-compatible backend; "
          f"{r['requests']} sequential requests, then {r['load_requests']} at {r['concurrency']} clients")
    print(f"{'':58} {'p50 ms':>7} {'p99 ms':>7} {'added p50':>9} {'added p99':>9} {'req/s':>7} {'load p50':>8} {'p99':>7}")
    for name, x in r["rows"].items():
        print(f"{name:58} {x['p50_ms']:7.2f} {x['p99_ms']:7.2f} {x['overhead_p50_ms']:9.2f} {x['overhead_p99_ms']:9.2f} "
              f"{x['load_rps']:7.0f} {x['load_p50_ms']:8.1f} {x['load_p99_ms']:7.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--litellm", help="the `litellm` executable of a venv with litellm[proxy]; omitted: ours only")
    ap.add_argument("--budget", action="store_true", help="also: an API key with a budget, SQLite ledger")
    ap.add_argument("--postgres", action="store_true",
                    help="also: an API key with a budget on a throwaway PostgreSQL ledger started here")
    ap.add_argument("--ledger-url", help="also: an API key with a budget on this PostgreSQL ledger")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--load-requests", type=int, default=6000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    r = asyncio.run(run(args))
    report(r)
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
