"""Which llama.cpp binding should run the local GGUFs? Prompt and generation speed, side by side.

    pip install xllamacpp   # optional: the prebuilt alternative, measured when installed
    python benchmarks/runtime_speed.py [--threads 2] [--reps 3]

Each rep uses a prompt with a fresh random first line so no KV-cache reuse flatters a runtime.
Prompt speed = prompt tokens / time to the first token (max_tokens=1); generation speed =
(64 - 1) tokens / (time for 64 tokens - time for 1 token).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from shepherd.models.sources import resolve_model

BODY = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
        "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per "
        "fresh duck egg. How much in dollars does she make every day at the farmers' market? ") * 4


def prompt() -> str:
    return f"<|im_start|>user\nCase {random.randint(0, 10**9)}. {BODY}<|im_end|>\n<|im_start|>assistant\n"


def bench_llama_cpp_python(path, threads, reps):
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, verbose=False)
    pp, tg = [], []
    for _ in range(reps):
        p = prompt()
        n_prompt = len(llm.tokenize(p.encode(), add_bos=False, special=True))
        t0 = time.perf_counter()
        llm.create_completion(p, max_tokens=1, temperature=0.0)
        t1 = time.perf_counter() - t0
        p = prompt()
        t0 = time.perf_counter()
        out = llm.create_completion(p, max_tokens=64, temperature=0.0, stop=[])
        t64 = time.perf_counter() - t0
        pp.append(n_prompt / t1)
        tg.append((out["usage"]["completion_tokens"] - 1) / max(t64 - t1, 1e-9))
    return statistics.median(pp), statistics.median(tg)


def bench_xllamacpp(path, threads, reps):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = 2048
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    server = xlc.Server(params)
    pp, tg = [], []
    for _ in range(reps):
        p = prompt()
        t0 = time.perf_counter()
        r = server.handle_completions({"prompt": p, "max_tokens": 1, "temperature": 0.0, "cache_prompt": False})
        t1 = time.perf_counter() - t0
        n_prompt = r["usage"]["prompt_tokens"]
        p = prompt()
        t0 = time.perf_counter()
        r = server.handle_completions({"prompt": p, "max_tokens": 64, "temperature": 0.0, "cache_prompt": False,
                                       "ignore_eos": True})
        t64 = time.perf_counter() - t0
        pp.append(n_prompt / t1)
        tg.append((r["usage"]["completion_tokens"] - 1) / max(t64 - t1, 1e-9))
    return statistics.median(pp), statistics.median(tg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    models = {"0.5B": resolve_model("qwen2.5-coder-0.5b-instruct-q4_k_m"),
              "1.5B": resolve_model("qwen2.5-coder-1.5b-instruct-q4_k_m")}
    runtimes = {"llama-cpp-python": bench_llama_cpp_python, "xllamacpp": bench_xllamacpp}
    print(f"{'runtime':<18} {'model':<6} {'prompt tok/s':>13} {'gen tok/s':>10}")
    for rt, fn in runtimes.items():
        for name, path in models.items():
            try:
                pp, tg = fn(path, args.threads, args.reps)
            except ImportError:
                print(f"{rt:<18} {name:<6} {'not installed':>13}")
                break
            print(f"{rt:<18} {name:<6} {pp:13.0f} {tg:10.1f}")


if __name__ == "__main__":
    main()
