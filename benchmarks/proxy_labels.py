"""Validate proxy labels (issue 25): labels made without gold answers, from agreement with the LLM's full answer.

Recorded traffic has no gold answers, so "the hint sufficed" can only mean that the SLM's hinted answer agrees
with the LLM's full answer (`agreement.proxy_verdict`). Before a predictor is trained on such labels, this
measures on the study's committed sweeps (`traces/study.toml`), without calling a model:

  1. per benchmark and proxy variant ("live": the query text alone; "task-aware": the task's own answer
     extraction and example calls), how often a row's proxy grade equals its gold grade (Wilson 95%
     interval), where they differ, and how often the items' labels (hint needed or not; n*) are equal;
  2. the cost of the learned policies (proactive, reactive) at >= 90% and >= 100% of LLM-only accuracy,
     trained once on gold labels and once on proxy labels of the training sweep, with the study's chosen
     recipe and calibration, both replayed on the test sweeps with GOLD grading.

    python benchmarks/proxy_labels.py --work runs/proxy --out docs

Writes `<out>/proxy_labels.md` and `<out>/proxy_labels.json`. Resumable: the unpacked stores, each
benchmark's proxy sweeps and each replay are cached in --work (delete a file there to redo that step).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

POLICIES = ["slm-only", "llm-only", "proactive", "reactive"]
#: bootstrap resamples of the replays' accuracy intervals: only the points' own accuracies and costs are read
#: here (the cheapest point reaching a target), so a few keep the replays fast
N_BOOT = 50
#: bumped when the proxy's rules change, so that cached proxy sweeps are recomputed
PROXY_RULES = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def unpack(files: list[Path], store: Path, data: str | None) -> Path:
    """The traces unpacked into a store under --work, once per version of the files."""
    from shepherd.traces.compact import import_compact
    from shepherd.traces.store import TraceStore

    stamp = store.with_suffix(".sha")
    want = ",".join(_sha(f) for f in files)
    if store.is_file() and stamp.is_file() and stamp.read_text() == want:
        return store
    for suffix in ("", "-wal", "-shm"):
        Path(str(store) + suffix).unlink(missing_ok=True)
    ts = TraceStore(store)
    try:
        for f in files:
            s = import_compact(f, ts, data=data)
            log(f"unpacked {s.items} {s.task} items from {f.name}")
    finally:
        ts.close()
    stamp.write_text(want)
    return store


def cached_proxy(work: Path, slug: str, variant: str, key: str, sweeps: list[Any], items: dict[str, Any],
                 workers: int) -> list[Any]:
    from shepherd.traces.proxy import proxy_sweeps

    path = work / f"{slug}.{variant}.proxy.pkl"
    if path.is_file():
        with path.open("rb") as f:
            got = pickle.load(f)
        if got.get("key") == key:
            return got["sweeps"]
    t0 = time.perf_counter()
    step = max(1, len(sweeps) // 4)
    out = proxy_sweeps(sweeps, variant, items=items, workers=workers,
                       progress=lambda d, n: d % step == 0 and log(f"  {slug} {variant}: {d}/{n}"))
    log(f"{slug} {variant}: {len(out)} items regraded in {time.perf_counter() - t0:.0f} s")
    with path.open("wb") as f:
        pickle.dump({"key": key, "sweeps": out}, f)
    return out


def train_predictor(examples: list[Any], spec: Any, recipe: Any, grid: list[float], sweep_settings: dict,
                    out: Path, seed: int) -> dict[str, Any]:
    """The study's recipe, trained and calibrated (out of fold, on the training items) as the study does;
    `seed` seeds the validation split and the network's initialisation."""
    from dataclasses import replace

    from shepherd.evaluation.study import _calibrating
    from shepherd.predictor.pipeline import fit_predictor
    from shepherd.predictor.train import TrainSettings

    llm_p, _ = spec.prices()
    settings = recipe.settings(TrainSettings(featurizer=spec.featurizer, seed=seed, cv=0))
    settings = replace(settings, model=replace(settings.model, seed=seed))
    fitted = fit_predictor(examples, settings, grid=grid, sweep_settings=sweep_settings,
                           calibrating=_calibrating(spec, llm_p))
    fitted.predictor.save(out)
    return {"items": len(examples), "positives": int(sum(e.y for e in examples)),
            "calibration": {m: {"threshold": round(c.threshold, 6), "scale": c.scale}
                            for m, c in fitted.calibration.items()}}


def replay(spec: Any, store: Path, task: str, predictor: Path, out: Path, data: str | None) -> dict[str, Any]:
    """Proactive and reactive with this predictor, replayed on the (gold-graded) test store: the cheapest
    point at >= 90% and >= 100% of LLM-only accuracy, per price scenario."""
    from shepherd.evaluation.suite import EvalConfig, run_eval

    cache = out / "points.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    llm_p, slm_p = spec.prices()
    cfg = EvalConfig(test=str(store), out=str(out), tasks=[task], predictor=str(predictor), policies=POLICIES,
                     llm_price=llm_p, slm_price=slm_p, seed=spec.seed, data=data, n_boot=N_BOOT,
                     argv=["benchmarks/proxy_labels.py", f"(replay {predictor.name})"])
    ev = run_eval(cfg)
    res = ev.results[0]
    got: dict[str, Any] = {}
    for scen in (s.name for s in ev.scenarios):
        got[scen] = {}
        for mode in ("proactive", "reactive"):
            fam = res.family(mode)
            m = fam.metrics.get(scen, {}) if fam else {}
            got[scen][mode] = {k: None if not m.get(k) else
                               {"cost_reduction": round(m[k]["cost_reduction"], 4), "accuracy": round(m[k]["accuracy"], 4)}
                               for k in ("at90", "at100")}
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(got, indent=1))
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", type=Path, default=REPO / "traces/study.toml")
    ap.add_argument("--work", type=Path, required=True, help="cache folder (stores, proxy sweeps, replays)")
    ap.add_argument("--out", type=Path, required=True, help="writes proxy_labels.md and proxy_labels.json here")
    ap.add_argument("--data", default=None, help="task data (default: the files shipped with the package)")
    ap.add_argument("--variants", default="live,task-aware")
    ap.add_argument("--recipe", default=None,
                    help="featurizer:hidden:l2 (default: the recipe the committed study chose, docs/results)")
    ap.add_argument("--no-train", action="store_true", help="label agreement only, no predictors")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3,
                    help="train each label set with seeds 0..N-1 (split and initialisation): the training noise")
    args = ap.parse_args()

    from shepherd.evaluation.study import load_spec
    from shepherd.predictor.data import examples_from_sweeps, label_grid, sweep_task_items
    from shepherd.predictor.select import Candidate
    from shepherd.traces.labels import labels_from_sweeps
    from shepherd.traces.proxy import proxy_stats, task_items
    from shepherd.traces.store import TraceStore

    t_start = time.perf_counter()
    spec = load_spec(args.spec)
    spec_dir = args.spec.parent
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.recipe:
        f, h, l2 = args.recipe.split(":")
        recipe = Candidate(featurizer=f, hidden=int(h), l2=float(l2))
    else:
        chosen = json.loads((REPO / "docs/results/summary.json").read_text())["predictor"]["model"]
        feat = json.loads((REPO / "docs/results/summary.json").read_text())["predictor"]["featurizer"]
        recipe = Candidate(featurizer=feat, hidden=int(chosen["hidden"]), l2=float(chosen["l2"]))

    sets = [("train", spec.train_task, spec.train_traces, "GSM8K train")]
    sets += [(b.name.lower(), b.task, b.traces, b.name) for b in spec.benchmarks]
    report: dict[str, Any] = {"command": "python benchmarks/proxy_labels.py --work runs/proxy --out docs",
                              "variants": variants, "recipe": recipe.label, "benchmarks": {}}
    stores: dict[str, tuple[Path, str]] = {}
    gold_of: dict[str, list[Any]] = {}
    proxy_of: dict[tuple[str, str], list[Any]] = {}
    items_of: dict[str, dict[str, Any]] = {}
    for slug, task, traces, name in sets:
        files = [spec_dir / t for t in traces]
        if not all(f.is_file() for f in files):
            log(f"{name}: traces not committed, skipped")
            continue
        store = unpack(files, args.work / f"{slug}.sqlite", args.data)
        stores[slug] = (store, task)
        with TraceStore(store, readonly=True) as ts:
            sweeps = ts.item_sweeps(task)
        items = task_items(task, sweeps, args.data)
        gold_of[slug], items_of[slug] = sweeps, items
        key = ",".join(_sha(f) for f in files) + f"/{PROXY_RULES}"
        entry: dict[str, Any] = {"name": name, "task": task, "items": len(sweeps), "variants": {}}
        for v in variants:
            ps = cached_proxy(args.work, slug, v, key, sweeps, items, args.workers)
            proxy_of[(slug, v)] = ps
            entry["variants"][v] = proxy_stats(sweeps, [p for p in ps])
            r = entry["variants"][v]["rows"]
            log(f"{name} {v}: rows agree {r['share']:.1%} [{r['ci'][0]:.1%}, {r['ci'][1]:.1%}] of {r['n']}")
        report["benchmarks"][slug] = entry

    if not args.no_train and "train" in gold_of:
        train = gold_of["train"]
        grid, settings = label_grid(train), dict(train[0].sweep)
        feat_items = sweep_task_items(spec.train_task, train, args.data)
        label_sets = {"gold": train, **{f"proxy-{v}": [p.sweep for p in proxy_of[("train", v)]] for v in variants}}
        report["predictors"] = {}
        report["seeds"] = list(range(args.seeds))
        runs: list[tuple[str, int | None, Path, list[Any] | None]] = [
            (label, seed, args.work / "predictors" / f"{label}-seed{seed}", sweeps)
            for label, sweeps in label_sets.items() for seed in range(args.seeds)]
        committed = REPO / "docs/results/artifacts/predictor"
        if committed.is_dir():  # the study's own predictor: how far a retrained gold one lands from it
            runs.insert(0, ("study predictor (committed)", None, committed, None))
        for label, seed, pred_dir, sweeps in runs:
            info_path = args.work / "predictors" / f"{pred_dir.name}.json" if sweeps is None else pred_dir / "trained.json"
            if info_path.is_file():
                info = json.loads(info_path.read_text())
            elif sweeps is None:
                info = {"items": None, "positives": None, "calibration": None}
                info_path.parent.mkdir(parents=True, exist_ok=True)
                info_path.write_text(json.dumps(info))
            else:
                t0 = time.perf_counter()
                examples = examples_from_sweeps(sweeps, labels_from_sweeps(sweeps, filter=True), feat_items)
                info = train_predictor(examples, spec, recipe, grid, settings, pred_dir, seed)
                info_path.write_text(json.dumps(info, indent=1))
                log(f"trained the {label} predictor (seed {seed}) on {info['items']} items in "
                    f"{time.perf_counter() - t0:.0f} s")
            info["seed"] = seed
            info["replay"] = {}
            tag = "study" if sweeps is None else pred_dir.name
            for slug, (store, task) in stores.items():
                if slug == "train":
                    continue
                t0 = time.perf_counter()
                info["replay"][slug] = replay(spec, store, task, pred_dir, args.work / "replays" / tag / slug,
                                              args.data)
                log(f"replayed {tag} on {slug} ({time.perf_counter() - t0:.0f} s)")
            report["predictors"].setdefault(label, []).append(info)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "proxy_labels.json").write_text(json.dumps(report, indent=1, sort_keys=True), encoding="utf-8")
    write_md(args.out / "proxy_labels.md", render(report))
    # the seconds stay out of the report, so that a rerun from the cache writes the same bytes
    log(f"wrote {args.out / 'proxy_labels.md'} ({time.perf_counter() - t_start:.0f} s)")


BEGIN, END = "<!-- tables: begin (benchmarks/proxy_labels.py) -->", "<!-- tables: end -->"


def write_md(path: Path, tables: str) -> None:
    """The tables go between the page's markers; the words around them are written by hand and kept."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + BEGIN + "\n" + tables + END + rest.split(END, 1)[1]
    else:
        text = "# Proxy labels vs gold labels\n\n" + BEGIN + "\n" + tables + END + "\n" + text
    path.write_text(text, encoding="utf-8")


def _pct(x: float | None, d: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{d}f}%"


def _ci(s: dict[str, Any]) -> str:
    lo, hi = s["ci"]
    return f"{_pct(s['share'])} [{_pct(lo)}, {_pct(hi)}]" if s["n"] else "—"


def render(report: dict[str, Any]) -> str:
    """The tables of proxy_labels.md (the words around them are written by hand: `write_md`)."""
    lines = [("| set | proxy | items | hint rows | rows agree (95% CI) | where the LLM is right | "
              "proxy right, gold wrong (LLM wrong) | "
             "proxy wrong, gold right | needed equal | n* equal | kept gold / proxy / both | bases |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in report["benchmarks"].values():
        for v, s in b["variants"].items():
            fp, fn = s["proxy_right_gold_wrong"], s["proxy_wrong_gold_right"]
            bases = ", ".join(f"{k} {n}" for k, n in s["basis"].items())
            k = s["kept"]
            lines.append(f"| {b['name']} | {v} | {s['items']} | {s['rows']['n']} | {_ci(s['rows'])} | {_ci(s['rows_llm_right'])} | "
                         f"{fp['rows']} ({fp['llm_wrong']}) | {fn['rows']} | {_ci(s['labels']['needed_equal'])} | "
                         f"{_ci(s['labels']['nstar_equal'])} | {k['gold']} / {k['proxy']} / {k['both']} | {bases} |")
    out = ["", "### Proxy grades and labels vs gold", "",
           *lines, ""]
    preds = report.get("predictors")
    if preds:
        names = [s for s in report["benchmarks"] if s != "train"]
        seeds = ", ".join(str(x) for x in report.get("seeds", []))
        out += ["### Predictors trained on gold vs proxy labels, replayed with gold grading", "",
                (f"Recipe: `{report['recipe']}` (the study's chosen recipe), trained on the GSM8K train sweep's "
                 "labels (gold, or proxy of one variant) after the paper's filter, calibrated out of fold on those "
                 f"items for 90% of LLM-only accuracy, with seeds {seeds} (validation split and network "
                 "initialisation), then replayed on every test sweep with gold grading. A cell is the cost vs "
                 "LLM-only of the cheapest point reaching the target share of LLM-only accuracy, one value per "
                 "seed (SLM free; — : the target is not reached). The first row is the study's committed predictor "
                 "(docs/results/artifacts/predictor)."), ""]
        for key, title in (("at90", ">= 90%"), ("at100", ">= 100%")):
            out += [f"**At {title} of LLM-only accuracy**", "",
                    "| trained on | training items (hint needed) | " + " | ".join(
                        f"{report['benchmarks'][s]['name']} {m}" for s in names for m in ("proactive", "reactive"))
                    + " |", "|---|---|" + "---|" * (2 * len(names))]
            for label, infos in preds.items():
                cells = []
                for s in names:
                    for m in ("proactive", "reactive"):
                        vals = []
                        for info in infos:
                            scen = info["replay"][s]
                            pt = (scen.get("slm-free") or next(iter(scen.values())))[m].get(key)
                            vals.append("—" if not pt else f"{-100 * pt['cost_reduction']:+.0f}%")
                        cells.append(" / ".join(vals))
                items = infos[0]["items"]
                size = "—" if items is None else f"{items} ({infos[0]['positives']})"
                out.append(f"| {label} | {size} | " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
