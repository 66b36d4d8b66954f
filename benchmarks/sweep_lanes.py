"""Should long sweeps run as one job on all cores or as several jobs with one thread each?

    python benchmarks/sweep_lanes.py [--cores 2] [--tokens 200] [--out runs/sweep_lanes.json]

For each model of the local pair: greedy generation speed of one process with `--cores` threads, then the
aggregate speed of `--cores` processes with 1 thread each generating at the same time (each in its own
interpreter, as separate sweep lanes are). Run it on a quiet machine: anything else on the cores skews it.
benchmarks/study_sweeps.sh runs two lanes because of what this measured on the 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["qwen2.5-coder-0.5b-instruct-q4_k_m", "qwen2.5-coder-1.5b-instruct-q4_k_m"]

WORKER = r"""
import json, sys, time
from llama_cpp import Llama
from shepherd.models.sources import resolve_model
model, threads, tokens, start_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
llm = Llama(model_path=str(resolve_model(model)), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
            verbose=False)
prompt = ("<|im_start|>user\nWrite a long Python module that parses CSV files, with docstrings.<|im_end|>\n"
          "<|im_start|>assistant\n")
llm.create_completion(prompt=prompt, max_tokens=4)  # warm up: weights paged in, prompt cached
while time.time() < start_at:  # every lane starts decoding together
    time.sleep(0.01)
t = time.perf_counter()
out = llm.create_completion(prompt=prompt, max_tokens=tokens, temperature=0.0, top_k=0, min_p=0.0,
                            repeat_penalty=1.0)
dt = time.perf_counter() - t
print(json.dumps({"tokens": out["usage"]["completion_tokens"], "seconds": dt}))
"""


def run_lanes(model: str, lanes: int, threads: int, tokens: int) -> dict:
    start_at = time.time() + 20  # loading both lanes' weights takes a few seconds
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, model, str(threads), str(tokens), str(start_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
             for _ in range(lanes)]
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({model}, {lanes} lanes x {threads} threads)")
        results.append(json.loads(out.strip().splitlines()[-1]))
    total_tokens = sum(r["tokens"] for r in results)
    wall = max(r["seconds"] for r in results)
    return {"lanes": lanes, "threads_each": threads, "tokens": total_tokens,
            "aggregate_tok_s": round(total_tokens / wall, 1),
            "per_lane_tok_s": [round(r["tokens"] / r["seconds"], 1) for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("runs/sweep_lanes.json"))
    args = ap.parse_args()
    report = {}
    for model in MODELS:
        one = run_lanes(model, 1, args.cores, args.tokens)
        many = run_lanes(model, args.cores, 1, args.tokens)
        report[model] = {"one_lane": one, "lanes": many,
                         "gain": round(many["aggregate_tok_s"] / one["aggregate_tok_s"], 3)}
        print(f"{model}: 1 lane x {args.cores} threads {one['aggregate_tok_s']} tok/s; {args.cores} lanes x 1 "
              f"thread {many['aggregate_tok_s']} tok/s in all ({report[model]['gain']:.2f}x)", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
