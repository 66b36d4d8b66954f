"""Items per hour of a Ray sweep with 1, 2 and 4 workers against 1 or 2 pairs of llama.cpp servers on
loopback: where does it saturate?

    python benchmarks/sweep_ray_scaling.py [--workers 1,2,4] [--pairs 1,2] [--limit 4] [--slots 4]
                                           [--threads 1] [--out runs/sweep_ray_scaling.json]

A pair is one SLM server (Qwen2.5-Coder 0.5B) and one LLM server (1.5B), each `shepherd models serve`
(llama.cpp's server through xllamacpp) with `--slots` parallel slots and `--threads` CPU threads. One Ray
head node on 127.0.0.1 (`ray start --head`); for every (pairs, workers) the same GSM8K items are swept
into a fresh store through `shepherd sweep run --executor ray --address ...`, the workers spread over the
pairs (`replicas` in the model config). The plan is small so that each point takes minutes: hints at 0 and
50% of the LLM's answer and one sample, answers up to `--max-tokens`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

SLM, LLM = "qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(model: str, slots: int, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.cli", "models", "serve", model, "--port", str(port),
                             "--slots", str(slots), "--n-ctx", "2048", "--threads", str(threads)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    end = time.monotonic() + 180
    while time.monotonic() < end:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the {model} server did not come up")


def config(path: Path, slm_urls: list[str], llm_urls: list[str]) -> None:
    def block(role: str, name: str, urls: list[str]) -> str:
        return (f'[{role}]\nbackend = "openai"\nmodel = "{name}"\nmodel_id = "{name}-http"\nbase_url = "{urls[0]}"\n'
                f'replicas = {json.dumps(urls[1:])}\nprefix_route = "completions"\nchat_template = "chatml"\n'
                'max_concurrency = 16\n')
    path.write_text(block("slm", SLM, slm_urls) + block("llm", LLM, llm_urls))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--pairs", default="1,2")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("runs/sweep_ray_scaling.json"))
    args = ap.parse_args()
    work = args.out.parent / "sweep_ray_scaling"
    work.mkdir(parents=True, exist_ok=True)
    # the ray of this interpreter: its workers must import what this process imports
    ray_bin = str(Path(sys.executable).parent / "ray")
    if not Path(ray_bin).exists():
        ray_bin = shutil.which("ray") or "ray"
    port = free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "8", "--include-dashboard", "false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True)
    address = f"127.0.0.1:{port}"
    results = []
    try:
        for pairs in [int(x) for x in args.pairs.split(",")]:
            servers = [serve(m, args.slots, args.threads) for _ in range(pairs) for m in (SLM, LLM)]
            slm_urls = [u for (_, u), i in zip(servers, range(len(servers))) if i % 2 == 0]
            llm_urls = [u for (_, u), i in zip(servers, range(len(servers))) if i % 2 == 1]
            cfg = work / f"pairs{pairs}.toml"
            config(cfg, slm_urls, llm_urls)
            try:
                for workers in [int(x) for x in args.workers.split(",")]:
                    store = work / f"p{pairs}-w{workers}.sqlite"
                    store.unlink(missing_ok=True)
                    t0 = time.perf_counter()
                    out = subprocess.run(
                        [sys.executable, "-m", "shepherd.cli", "sweep", "run", "gsm8k", "--limit", str(args.limit),
                         "--store", str(store), "--config", str(cfg), "--grid", "0,0.5", "--samples", "1",
                         "--max-tokens", str(args.max_tokens), "--executor", "ray", "--address", address,
                         "--workers", str(workers), "--worker-cpus", "1"],
                        check=False, capture_output=True, text=True, env=env)
                    wall = time.perf_counter() - t0
                    if out.returncode != 0:
                        raise SystemExit(out.stdout[-2000:] + out.stderr[-3000:])
                    db = sqlite3.connect(store)
                    items = db.execute("SELECT COUNT(*) FROM sweep_items WHERE done_at IS NOT NULL").fetchone()[0]
                    tokens = dict(db.execute("SELECT model, SUM(completion_tokens) FROM calls GROUP BY model"))
                    r = {"pairs": pairs, "workers": workers, "items": items, "wall_s": round(wall, 1),
                         "items_per_hour": round(3600 * items / wall, 1),
                         "tokens_per_s": {m: round(t / wall, 1) for m, t in tokens.items()}}
                    results.append(r)
                    print(json.dumps(r), flush=True)
            finally:
                for p, _ in servers:
                    p.terminate()
                for p, _ in servers:
                    p.wait(timeout=60)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, check=False, capture_output=True)
    args.out.write_text(json.dumps({"cpus": os.cpu_count(), "limit": args.limit, "slots": args.slots,
                                    "threads": args.threads, "max_tokens": args.max_tokens, "results": results},
                                   indent=2))


if __name__ == "__main__":
    main()
