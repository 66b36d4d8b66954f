"""How fast the sandbox grades code: HumanEval canonical solutions per second, 1 worker vs parallel.

    python benchmarks/grading_throughput.py [--workers 1 2 4] [--repeat 2] [--data PATH]

Every solution runs in its own sandboxed subprocess (namespaces, rlimits, unprivileged uid where
available), so this measures the whole grading path: extraction, program assembly, process start,
confinement set-up, the tests, and clean-up. Results are printed, not asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from shepherd.tasks import get_task, grade_many
from shepherd.tasks.sandbox import run_python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, os.cpu_count() or 1, 2 * (os.cpu_count() or 1)])
    parser.add_argument("--repeat", type=int, default=2, help="runs per setting; the best is reported")
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: $SHEPHERD_DATA_DIR "
                        "or the files shipped with the package)")
    args = parser.parse_args()

    task = get_task("humaneval", args.data)
    items = task.load()
    responses = [item.reference for item in items]
    probe = run_python("pass")
    print(f"HumanEval canonical solutions: {len(items)} programs; {os.cpu_count()} CPUs; "
          f"sandbox layers: {' '.join(probe.layers) or 'rlimits only'}")
    print(f"{'workers':>8} {'best s':>8} {'items/s':>8} {'all passed':>11}")
    for workers in args.workers:
        times = []
        passed = 0
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            grades = grade_many(task, items, responses, workers=workers)
            times.append(time.perf_counter() - t0)
            passed = sum(g.correct for g in grades)
        best = min(times)
        print(f"{workers:>8} {best:>8.2f} {len(items) / best:>8.1f} {passed == len(items)!s:>11}"
              + (f"   (runs: {', '.join(f'{t:.2f}' for t in times)}; median {statistics.median(times):.2f})"
                 if args.repeat > 1 else ""))


if __name__ == "__main__":
    main()
