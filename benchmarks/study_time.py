"""How long does `shepherd study` take, and where does the time go? (The committed-results test runs it whole.)

    python benchmarks/study_time.py [--spec traces/study.toml] [--profile runs/study.prof] [--out runs/study_time.json]

Regenerates the study into a temporary folder, exactly as `shepherd study` does, and reports the wall time,
the CPU time, the peak memory and the load average of the machine while it ran (the test's time limit has to
hold on a loaded machine too). With `--profile`, it also writes a cProfile of the run and prints its top
functions by cumulative time. It checks that the regenerated summary equals the committed one, so a speed-up
that changed a number shows here.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import resource
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=REPO / "traces" / "study.toml")
    parser.add_argument("--profile", type=Path, default=None, help="write a cProfile of the run here")
    parser.add_argument("--out", type=Path, default=None, help="write the report as JSON here")
    args = parser.parse_args()

    from shepherd.evaluation.study import load_spec, run_study

    with tempfile.TemporaryDirectory() as tmp:
        load0 = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        run_study(load_spec(args.spec), args.spec.parent, Path(tmp) / "docs", Path(tmp) / "work")
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        fresh = json.loads((Path(tmp) / "docs/results/summary.json").read_text())
    committed = REPO / "docs" / "results" / "summary.json"
    same = committed.is_file() and fresh == json.loads(committed.read_text())
    report = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "load_average_start": round(load0, 2), "load_average_end": round(os.getloadavg()[0], 2),
              "cpus": os.cpu_count(), "summary_equals_committed": same}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    if profiler:
        args.profile.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(args.profile))
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
