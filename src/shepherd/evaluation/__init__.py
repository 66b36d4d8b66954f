"""Evaluation: is shepherding cheaper at matched accuracy than the strongest alternatives, measured on the
same queries with the same cost model?

- `metrics`   small pure functions: accuracy with a bootstrap interval, cost, cost reduction, ACE, the
              cheapest point at 90% / 100% of LLM-only accuracy, RouteLLM's APGR and CPT, RouterBench's AIQ;
- `replay`    what policy P would have done on stored items: the policy runs unchanged through the runner,
              its models are the trace store's cached handles (no model is called);
- `evaluate`  replays policy families (a policy + the knob that traces its curve) on a trace store and
              prices every answer's usage under two scenarios (SLM free, as in the paper; SLM priced);
- `suite`     what `shepherd eval` runs: trains (or loads) the learned baselines and the predictor, builds
              every family, replays them, and records a manifest that reruns it exactly;
- `report`    report.md + manifest.json + results.json; `plots` the figures (matplotlib, Agg, lazily);
- `study`     what `shepherd study` runs: the whole study from packed traces, results.md and its figures;
- `cli`       the `shepherd eval` command.

The baselines themselves are policies in `shepherd.policies.baselines`. Nothing here is imported by
`import shepherd`; numpy and matplotlib load only when used.
"""
