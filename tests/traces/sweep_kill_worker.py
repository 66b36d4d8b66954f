"""A sweep process for the kill-and-resume tests: scripted models with a delay per call, and a log of
every model call *started* (appended before the call), so the test can count calls lost to kills.

usage: python sweep_kill_worker.py STORE STARTED_LOG N_ITEMS DELAY_S PARALLEL(0|1)
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from trace_fakes import FakeTask, models

from shepherd.traces.executor import LocalExecutor
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep


def main() -> None:
    store_path, started_log, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    parallel = sys.argv[5] == "1"
    slm, llm = models(delay)
    log = open(started_log, "a", buffering=1)  # noqa: SIM115 - open until the test kills this process
    for b in (slm, llm):
        inner = b.agenerate

        async def logged(request, n=1, _inner=inner, _b=b):
            log.write(f"{_b.model_id} {request.key(_b.model_id)} {os.getpid()}\n")
            log.flush()
            return await _inner(request, n)

        b.agenerate = logged
    task = FakeTask(n)
    store = TraceStore(store_path)
    plan = SweepPlan(trials=2, samples=2, temperature=0.7)
    cfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=64)
    register_sweep(store, cfg, plan, "test")
    for res in LocalExecutor(slm, llm, task, store, parallel_calls=parallel).run(make_units(task, task.items, cfg, plan, "test")):
        if res.error:
            print(res.error, res.extra.get("traceback"), file=sys.stderr)
            sys.exit(1)
    print("finished", flush=True)


if __name__ == "__main__":
    main()
