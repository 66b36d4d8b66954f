"""Does the batched engine sweep more items per hour than one call at a time, and does it change the sweep?

    python benchmarks/sweep_batched.py [--task gsm8k] [--limit 4] [--engines sequential,batched]
                                       [--out runs/sweep_batched]

Each engine sweeps the same items into its own fresh store with today's plan (the LLM's answer, the hint
grid 0, 0.1, ..., 0.9, three SLM samples; answers up to the task's cap), through the CLI a user runs
(`shepherd sweep run --engine ...`), in its own process. Reported per engine: wall time, items per hour,
tokens generated per second by each model (completion tokens of the real calls over the wall time: the
models share the cores, so these are shares, not solo speeds), and the process's peak memory (its max
RSS). Then what batching changed: greedy generations (the LLM's answer, every hint level's continuation)
whose text differs from the first engine's, and rows whose grade differs; sampled ones are listed apart
(a draw from slightly different logits may go another way; same seeds).

Run it on a quiet machine (nothing else on the cores). The two models share the machine in every engine.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path


def run_engine(engine: str, task: str, limit: int, store: Path, extra: list[str], log: Path) -> dict:
    store.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "shepherd.cli", "sweep", "run", task, "--limit", str(limit), "--store", str(store),
           "--engine", engine, *extra]
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "200"})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{engine}: the sweep failed, see {log}")
    db = sqlite3.connect(store)
    per_model = {m: {"calls": c, "completion_tokens": t, "tokens_per_s": round(t / wall, 2)}
                 for m, c, t in db.execute("SELECT model, COUNT(*), SUM(completion_tokens) FROM calls GROUP BY model")}
    items = db.execute("SELECT COUNT(*) FROM sweep_items WHERE done_at IS NOT NULL").fetchone()[0]
    settings = json.loads(db.execute("SELECT config FROM sweeps").fetchone()[0])
    return {"engine": engine, "settings_engine": settings.get("engine"), "items": items, "wall_s": round(wall, 1),
            "items_per_hour": round(3600 * items / wall, 2), "models": per_model,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def compare(a: Path, b: Path) -> dict:
    """Generations both stores hold under the same key (same model and request), and rows' grades."""
    da, db_ = sqlite3.connect(a), sqlite3.connect(b)
    ga = {k: (t, json.loads(r)) for k, t, r in da.execute("SELECT key, text, request FROM generations WHERE origin='model'")}
    gb = {k: t for k, t in db_.execute("SELECT key, text FROM generations WHERE origin='model'")}
    greedy = {"same": 0, "differ": 0}
    sampled = {"same": 0, "differ": 0}
    for k, (t, req) in ga.items():
        if k not in gb:
            continue
        bucket = greedy if float(req.get("temperature", 0.0)) <= 0 else sampled
        bucket["same" if gb[k] == t else "differ"] += 1
    q = "SELECT item_id, kind, fraction, trial, correct FROM rows"
    ra = {r[:4]: r[4] for r in da.execute(q)}
    rb = {r[:4]: r[4] for r in db_.execute(q)}
    shared = set(ra) & set(rb)
    changed = sorted(k for k in shared if ra[k] != rb[k])
    return {"greedy_generations": greedy, "sampled_generations": sampled, "rows_compared": len(shared),
            "grade_changes": [{"item": k[0], "kind": k[1], "fraction": k[2], "trial": k[3],
                               "first": bool(ra[k]), "second": bool(rb[k])} for k in changed],
            "grade_changes_greedy": sum(1 for k in changed if k[1] != "sample")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--engines", default="sequential,batched",
                    help="engines to run, the first is the reference (sequential, batched, batched:SLOTS:ITEMS)")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep_batched"))
    ap.add_argument("--reuse", action="store_true", help="keep an engine's earlier run in --out (its store and "
                    "numbers) instead of sweeping again")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results, stores = [], []
    for spec in args.engines.split(","):
        engine, *knobs = spec.split(":")
        extra = []
        if knobs:
            extra += ["--slots", knobs[0]]
        if len(knobs) > 1:
            extra += ["--concurrency", knobs[1]]
        name = spec.replace(":", "-")
        store = args.out / f"{name}.sqlite"
        saved = args.out / f"{name}.json"
        if args.reuse and saved.is_file() and store.is_file():
            r = json.loads(saved.read_text())
        else:
            r = run_engine(engine, args.task, args.limit, store, extra, args.out / f"{name}.log")
            r["spec"] = spec
            saved.write_text(json.dumps(r))
        results.append(r)
        stores.append(store)
        print(json.dumps(r), flush=True)
    base = results[0]
    for r, s in zip(results[1:], stores[1:]):
        r["speedup_items_per_hour"] = round(r["items_per_hour"] / base["items_per_hour"], 2)
        r["versus_" + base["spec"]] = compare(stores[0], s)
    out = {"task": args.task, "limit": args.limit, "cpus": os.cpu_count(), "results": results}
    (args.out / "summary.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
