"""`shepherd study`: the paper's study, recomputed from packed traces without calling a model.

A study spec (TOML, `traces/study.toml` in this repository) names the packed training traces (the
predictor and the learned baselines are trained on them only) and the benchmarks to evaluate on, each
in-domain or zero-shot. The study:

  1. unpacks every trace file into fresh stores under a work folder (question texts come from the task
     data; every request is checked against its stored key, see `shepherd.traces.compact`);
  2. trains the two-stage predictor once (with out-of-fold metrics) and the learned baselines once, on the
     training traces, and reuses the same artifacts on every benchmark;
  3. replays every policy on every benchmark (`shepherd eval`), writing each benchmark's full report;
  4. writes `results.md` (the cross-benchmark summary, oracle and proactive/reactive comparisons,
     wall-clock per policy, the side-by-side with the paper) and `results/summary.json`, whose numbers a
     test recomputes from the committed traces. The document's words are `templates/results.md.j2`'s; the
     code fills in the summary's numbers, so the spec and summary.json alone rebuild it.
"""

from __future__ import annotations

import functools
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..costs import Price

if TYPE_CHECKING:
    from jinja2 import Environment

#: what the paper (arXiv 2601.22132) reports, for the side-by-side
PAPER = {
    "cost_reduction_range": (0.42, 0.94),
    "vs_best_baseline": 2.8,
    "reactive_ace": {"gsm8k": 1.97, "cnk12": 1.25, "humaneval": 1.42, "mbpp": 2.78},
    "no_hint_share": 0.80,
    "items": {"gsm8k": 1319, "cnk12": 2147, "humaneval": 164, "mbpp": 500},
}


class StudyError(ValueError):
    """The study spec or its traces cannot be used."""


class StudyBenchmark(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    task: str
    traces: list[str]
    setting: Literal["in-domain", "zero-shot"] = "zero-shot"
    #: how many items the study asks for (its status table compares what was swept)
    target_items: int | None = None
    note: str = ""
    #: a `benchmarks/token_cap.py` report (JSON, relative to the spec) on these traces: the LLM's cut-off answers
    #: regenerated with a larger cap; its counts go into summary.json (`cap_probe`) and results.md
    cap_probe: str | None = None
    #: another benchmark of the spec over the same items asked another way (HumanEval-completion: HumanEval's
    #: tasks, completion-style): summary.json gets that benchmark's references on exactly these items
    #: (`same_items`), so a partial sweep is compared on the tasks it has, not on an easier or harder subset
    same_items_as: str | None = None
    #: another benchmark of the spec whose items these are, swept again with records the full benchmark lacks
    #: (rescues, `benchmarks/rescue_sweeps.sh`): replayed and reported like any benchmark, but its few items
    #: stay out of the cross-benchmark spans, the side-by-side with the paper and the recipe sensitivity
    subset_of: str | None = None


class PredictorCandidate(BaseModel):
    """One recipe the study may train its predictor with (see `shepherd.predictor.select`)."""

    model_config = ConfigDict(extra="forbid")

    featurizer: str = "lexical"
    hidden: int = Field(16, ge=0)
    l2: float = Field(0.1, ge=0.0)
    size_target: Literal["fraction", "log_tokens"] | None = None  # None: "fraction"


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = "Shepherding study"
    train_task: str = "gsm8k"
    train_traces: list[str]
    train_target_items: int | None = None
    benchmarks: list[StudyBenchmark]
    featurizer: str = "lexical"
    #: recipes to choose the predictor's from, by out-of-fold AUC on the training items only (the chosen
    #: featurizer also feeds the learned baselines); empty: `featurizer` with the default model
    predictor_candidates: list[PredictorCandidate] = Field(default_factory=list)
    #: fold assignments each candidate is cross-validated on (the score is their mean)
    select_repeats: int = Field(3, ge=1)
    #: what chooses among the candidates: out-of-fold AUC, or the out-of-fold cost share at the calibration's
    #: accuracy target (both are reported)
    select_by: Literal["auc", "cost"] = "auc"
    #: training shares for the predictor's learning curve (out-of-fold AUC of the chosen recipe as its training
    #: data grows; a diagnostic: does more data help?); empty: no curve
    learning_curve: tuple[Annotated[float, Field(gt=0.0, le=1.0)], ...] = (0.25, 0.5, 0.75, 1.0)
    #: also replay proactive and reactive with every other candidate recipe (trained and calibrated the same
    #: way) on every benchmark: how much the shepherding results depend on which recipe won the selection
    recipe_sensitivity: bool = False
    #: the MiniLM rows of every text the study embeds (an .npz beside the traces, written on first use and
    #: committed): embeddings differ in the 8th digit across CPUs and library releases, and the predictor's
    #: training amplifies that, so a study recomputed elsewhere reads them instead; None computes them
    embeddings: str | None = None
    seed: int = 0
    cv: int = Field(5, ge=0)
    #: calibrate the shepherding threshold and hint scale on the training items (out of fold) to reach this
    #: share of LLM-only accuracy, as a deployment would; None keeps the trained default (0.5, scale 1)
    calibrate_accuracy: float | None = Field(0.9, gt=0.0, le=1.0)
    calibrate_scales: tuple[float, ...] = (1.0, 2.0, 3.0)
    llm_price: tuple[float, float] = (0.59, 0.79)
    slm_price: tuple[float, float] = (0.05, 0.08)
    #: the model pair and how it ran (quantization, engine), named in results.md's setup line (empty: not named)
    slm_model: str = ""
    llm_model: str = ""
    runtime: str = ""
    hardware: str = ""
    #: hand-written discussion (Markdown) placed after the generated side-by-side with the paper
    discussion: str = ""

    def subset_names(self) -> set[str]:
        """The benchmarks that are subsets of another (`StudyBenchmark.subset_of`)."""
        return {b.name for b in self.benchmarks if b.subset_of}

    def prices(self) -> tuple[Price, Price]:
        """(LLM, SLM) prices of the spec, per 1M tokens."""
        return (Price(input=self.llm_price[0], output=self.llm_price[1]),
                Price(input=self.slm_price[0], output=self.slm_price[1]))

    @model_validator(mode="after")
    def _sensitivity_needs_candidates(self) -> StudySpec:
        if self.recipe_sensitivity and len(self.predictor_candidates) < 2:
            raise ValueError("recipe_sensitivity compares the predictor_candidates: list at least two")
        names = [b.name for b in self.benchmarks]
        for b in self.benchmarks:
            for key, other in (("same_items_as", b.same_items_as), ("subset_of", b.subset_of)):
                if other is not None and (other == b.name or other not in names):
                    raise ValueError(f"benchmark {b.name!r}: {key} names {other!r}, which is not another "
                                     f"benchmark of the spec ({', '.join(names)})")
        return self


def load_spec(path: str | Path) -> StudySpec:
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise StudyError(f"{path}: not a readable TOML study spec: {exc}") from exc
    try:
        return StudySpec(**raw)
    except ValidationError as exc:
        errs = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise StudyError(f"{path}: {errs}") from None


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


@dataclass
class StudyRun:
    spec: StudySpec
    out: Path
    runs: dict[str, Any] = field(default_factory=dict)  # benchmark name -> EvalRun
    #: benchmark name -> how the predictor ranks that benchmark's labelled test items (a diagnostic only)
    predictor_on_test: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)  # benchmark -> verification_auc
    train_stats: dict[str, Any] = field(default_factory=dict)
    #: benchmark name -> the counts of its `cap_probe` report
    cap_probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: traces name (the training set or a benchmark) -> the sweep's answer cap in tokens (its max_tokens)
    answer_caps: dict[str, int | None] = field(default_factory=dict)
    predictor_metrics: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    #: one entry per candidate recipe: its learned policies' cheapest points on every benchmark
    recipes: list[dict[str, Any]] = field(default_factory=list)


def _unpack(files: list[Path], store_path: Path, data: str | None, log: Callable[[str], None]) -> Path:
    from ..traces.compact import import_compact
    from ..traces.store import TraceStore

    for suffix in ("", "-wal", "-shm"):
        Path(str(store_path) + suffix).unlink(missing_ok=True)
    store = TraceStore(store_path)
    try:
        for f in files:
            if not f.is_file():
                raise StudyError(f"packed traces not found: {f}")
            s = import_compact(f, store, data=data)
            log(f"unpacked {s.items} {s.task} items from {f.name}")
    finally:
        store.close()
    return store_path


_CAP_PROBE_KEYS = ("items", "old_cap", "new_cap", "cut_off", "regenerated", "finished_now", "correct_now",
                   "prefix_kept", "llm_accuracy_old_cap", "llm_accuracy_new_cap_est", "mean_new_tokens")


def _load_cap_probe(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {k: raw[k] for k in _CAP_PROBE_KEYS}
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise StudyError(f"cap_probe {path}: not a benchmarks/token_cap.py report ({exc!r})") from None


def run_study(spec: StudySpec, spec_dir: Path, out: Path, work: Path, *, data: str | None = None,
              log: Callable[[str], None] = lambda m: None) -> StudyRun:
    if not spec.embeddings:
        return _run_study(spec, spec_dir, out, work, data=data, log=log)
    from ..embedding import EmbeddingTable

    with EmbeddingTable(spec_dir / spec.embeddings) as table:
        run = _run_study(spec, spec_dir, out, work, data=data, log=log)
        if table.added:
            log(f"{table.added} new embeddings written to {spec_dir / spec.embeddings}")
    return run


def _run_study(spec: StudySpec, spec_dir: Path, out: Path, work: Path, *, data: str | None = None,
               log: Callable[[str], None] = lambda m: None) -> StudyRun:
    from ..predictor.data import examples_from_sweeps, label_grid, sweep_task_items
    from ..predictor.pipeline import Selecting, fit_predictor
    from ..predictor.train import TrainSettings
    from ..traces.labels import label_stats, labels_from_sweeps
    from ..traces.store import TraceStore
    from .report import write_report
    from .suite import EvalConfig, run_eval

    work.mkdir(parents=True, exist_ok=True)
    results_dir = out / "results"
    if results_dir.exists():
        shutil.rmtree(results_dir)  # stale figures of a benchmark no longer in the spec must not linger
    results_dir.mkdir(parents=True)
    run = StudyRun(spec, out)

    train_store = _unpack([spec_dir / f for f in spec.train_traces], work / "train.sqlite", data, log)
    ts = TraceStore(train_store, readonly=True)
    train_sweeps = ts.item_sweeps(spec.train_task)
    stats = label_stats(train_sweeps)
    run.answer_caps["train"] = (train_sweeps[0].sweep or {}).get("max_tokens") if train_sweeps else None
    run.train_stats = stats.to_dict()
    examples = examples_from_sweeps(train_sweeps, labels_from_sweeps(train_sweeps, filter=True),
                                    sweep_task_items(spec.train_task, train_sweeps, data))
    grid = label_grid(train_sweeps)
    llm_p, slm_p = spec.prices()
    folds = max(2, spec.cv or 5)
    selecting = None
    if spec.predictor_candidates:
        from ..predictor.select import Candidate

        selecting = Selecting([Candidate(**c.model_dump()) for c in spec.predictor_candidates], k=folds,
                              repeats=spec.select_repeats, by=spec.select_by, target=spec.calibrate_accuracy,
                              scales=spec.calibrate_scales, llm_price=llm_p)
    sweep_settings = dict(train_sweeps[0].sweep) if train_sweeps else {}
    fitted = fit_predictor(examples, TrainSettings(featurizer=spec.featurizer, seed=spec.seed, cv=spec.cv),
                           grid=grid, sweep_settings=sweep_settings,
                           source={"traces": spec.train_traces, "task": spec.train_task}, selecting=selecting,
                           curve_shares=spec.learning_curve, curve_folds=folds, curve_repeats=spec.select_repeats,
                           calibrating=_calibrating(spec, llm_p), log=log)
    predictor, report, settings, selection = fitted.predictor, fitted.report, fitted.settings, fitted.selection
    featurizer = settings.featurizer
    run.predictor_metrics = {"items": report["items"], "fitted_on_items": report["fitted_on_items"],
                             "positives": report["positives"],
                             "validation": report.get("validation"),
                             "cv": {k: v for k, v in (report.get("cv") or {}).items() if k != "oof"},
                             "calibration": {}, "featurizer": featurizer,
                             "model": {"hidden": settings.model.hidden, "l2": settings.model.l2,
                                       "lam": settings.model.lam, "size_target": settings.model.size_target,
                                       "length_weight": settings.model.length_weight}}
    if selection is not None:
        run.predictor_metrics["selection"] = selection.to_dict()
    if fitted.curve is not None:
        run.predictor_metrics["learning_curve"] = {"folds": folds, "repeats": spec.select_repeats,
                                                   "points": [p.to_dict() for p in fitted.curve]}
    ts.close()

    run.predictor_metrics["calibration"] = {m: {k: _r(v) if isinstance(v, float) else v
                                                for k, v in c.to_dict().items()}
                                            for m, c in fitted.calibration.items()}
    pred_dir = results_dir / "artifacts" / "predictor"
    predictor.save(pred_dir)
    baselines_dir: Path | None = None
    stores: dict[str, tuple[Path, str]] = {}
    for b in spec.benchmarks:
        slug = _slug(b.name)
        files = [spec_dir / f for f in b.traces]
        if not any(f.is_file() for f in files):
            log(f"{b.name}: no packed traces yet ({', '.join(b.traces)}); listed as not swept")
            continue
        store = _unpack(files, work / f"{slug}.sqlite", data, log)
        if not b.subset_of:
            stores[b.name] = (store, b.task)
        with TraceStore(store, readonly=True) as bs:
            run.answer_caps[b.name] = bs.resolve_sweep(b.task).config.get("max_tokens")
        if b.cap_probe:
            run.cap_probes[b.name] = _load_cap_probe(spec_dir / b.cap_probe)
        bench_out = results_dir / slug
        cfg = EvalConfig(test=str(store), out=str(bench_out), train=str(train_store), tasks=[b.task],
                         train_tasks=[spec.train_task], featurizer=featurizer, predictor=str(pred_dir),
                         baselines=str(baselines_dir) if baselines_dir else None, llm_price=llm_p, slm_price=slm_p,
                         seed=spec.seed, data=data,
                         argv=["shepherd", "study", "(benchmark " + b.name + ")"])
        log(f"{b.name}: replaying every policy")
        ev = run_eval(cfg, log=log)
        write_report(ev, item_outcomes=False)  # committed: per-item outcomes via `shepherd eval --rerun`
        if baselines_dir is None:
            # the learned baselines trained for the first benchmark serve all others: one set of artifacts
            baselines_dir = bench_out / "artifacts"
        run.runs[b.name] = ev
        if not b.subset_of:  # in-domain AUC on a subset's few items would be noise
            run.predictor_on_test[b.name] = predictor_test_auc(predictor, store, b.task, data, settings=settings,
                                                               k=max(2, spec.cv or 5))
        check = verification_auc(store, b.task)
        if check is not None:
            run.verification[b.name] = check

    if spec.recipe_sensitivity and selection is not None:
        run.recipes = recipe_sensitivity(run, selection, examples, settings, stores, work / "recipes", data=data,
                                         train_kwargs={"grid": grid, "sweep_settings": sweep_settings}, log=log)
    run.summary = summarize(run)
    (results_dir / "summary.json").write_text(json.dumps(run.summary, indent=1, sort_keys=True, default=str),
                                              encoding="utf-8")
    _hint_figure(run, results_dir / "hint_fraction_all.png")
    write_results_md(run, out / "results.md")
    return run


def _calibrating(spec: StudySpec, llm_p: Price) -> Any:
    """How the study calibrates every predictor it trains: out of fold on the training items, as a deployment
    would, for `calibrate_accuracy` of LLM-only accuracy (None: not at all)."""
    from ..predictor.pipeline import Calibrating

    if not spec.calibrate_accuracy:
        return None
    return Calibrating(spec.calibrate_accuracy, scales=spec.calibrate_scales, folds=max(2, spec.cv or 5),
                       llm_price=llm_p)


#: the policies a recipe changes, and the references their metrics are relative to
_RECIPE_POLICIES = ("slm-only", "llm-only", "proactive", "reactive")


def recipe_sensitivity(run: StudyRun, selection: Any, examples: list[Any], settings: Any,
                       stores: dict[str, tuple[Path, str]], work: Path, *, data: str | None = None,
                       train_kwargs: dict[str, Any] | None = None,
                       log: Callable[[str], None] = lambda m: None) -> list[dict[str, Any]]:
    """Every candidate recipe's proactive and reactive cheapest points on every benchmark.

    Why: the candidates' out-of-fold scores sit close together, and which one wins moves the test results;
    this shows by how much. Each recipe is trained and calibrated exactly as the chosen one (same items, same
    split, out-of-fold calibration on the training items), then replayed; the chosen recipe's entry is the
    study's own replay. Nothing is chosen by it: the test items still never influence the recipe.
    """
    from ..predictor.pipeline import fit_predictor, without_cv
    from .suite import EvalConfig, run_eval

    spec = run.spec
    llm_p, slm_p = spec.prices()
    out: list[dict[str, Any]] = []
    for i, score in enumerate(selection.scores):
        cand = score.candidate
        entry: dict[str, Any] = {"label": cand.label, "chosen": i == selection.chosen, "benchmarks": {}}
        if i == selection.chosen:  # the study's own replays, of the benchmarks that are not subsets
            evs = {name: ev for name, ev in run.runs.items() if name in stores}
            aucs = dict(run.predictor_on_test)
        else:
            log(f"recipe sensitivity: {cand.label}")
            predictor = fit_predictor(examples, without_cv(cand.settings(settings)), **(train_kwargs or {}),
                                      calibrating=_calibrating(spec, llm_p)).predictor
            pred_dir = work / f"recipe{i}" / "predictor"
            predictor.save(pred_dir)
            evs, aucs = {}, {}
            for name, (store, task) in stores.items():
                cfg = EvalConfig(test=str(store), out=str(work / f"recipe{i}" / _slug(name)), tasks=[task],
                                 predictor=str(pred_dir), policies=list(_RECIPE_POLICIES), llm_price=llm_p,
                                 slm_price=slm_p, seed=spec.seed, data=data,
                                 argv=["shepherd", "study", f"(recipe {cand.label}, benchmark {name})"])
                evs[name] = run_eval(cfg)
                aucs[name] = predictor_test_auc(predictor, store, task, data)
        for name, ev in evs.items():
            if not ev.results:
                continue
            res, scen = ev.results[0], ev.scenarios[0].name
            b: dict[str, Any] = {"auc": {m: (aucs.get(name) or {}).get(m) for m in ("proactive", "reactive")}}
            for mode in ("proactive", "reactive"):
                fam = res.family(mode)
                m = fam.metrics.get(scen, {}) if fam else {}
                b[mode] = {key: None if not m.get(key) else
                           {"cost_reduction": _r(m[key]["cost_reduction"]), "ace": _r(m[key]["ace"]),
                            "accuracy": _r(m[key]["accuracy"])} for key in ("at90", "at100")}
            entry["benchmarks"][name] = b
        out.append(entry)
    return out


def _recipe_spans(recipes: list[dict[str, Any]]) -> dict[str, Any]:
    """Per benchmark and mode, the range of the cheapest >= 90% point's cost reduction over the recipes."""
    spans: dict[str, Any] = {}
    names = sorted({n for r in recipes for n in r["benchmarks"]})
    for name in names:
        spans[name] = {}
        for mode in ("proactive", "reactive"):
            at90 = [((r["benchmarks"].get(name) or {}).get(mode) or {}).get("at90") for r in recipes]
            got = [v["cost_reduction"] for v in at90 if v]
            spans[name][mode] = {"min": min(got, default=None), "max": max(got, default=None), "n": len(got),
                                 "of": len(at90)}
    return spans


def predictor_test_auc(predictor: Any, store: Path, task: str, data: str | None = None,
                       settings: Any = None, k: int = 5) -> dict[str, Any]:
    """The predictor's AUC of "is a hint needed?" on a benchmark's test items, labelled as training items are.

    Why: the policies' cost curves mix the predictor with everything else (the agreement gate, the hint
    lengths); this isolates whether its ranking carries over from GSM8K train to the test items, in-domain
    and zero-shot. Nothing is chosen by it: it is computed after the replay, for the reader. Code samples
    agree by behaviour, as in the replayed reactive policy (the task items are read from `data`).
    With `settings` (the predictor's recipe), `in_domain` is the same recipe's out-of-fold AUC on these items
    themselves: it tells a benchmark whose hard items cannot be ranked from one whose ranking does not carry
    over from GSM8K.
    """
    from ..predictor.data import examples_from_sweeps, sweep_task_items
    from ..predictor.train import auc
    from ..traces.labels import labels_from_sweeps
    from ..traces.store import TraceStore

    ts = TraceStore(store, readonly=True)
    try:
        sweeps = ts.item_sweeps(task)
    finally:
        ts.close()
    examples = examples_from_sweeps(sweeps, labels_from_sweeps(sweeps, filter=True),
                                    sweep_task_items(task, sweeps, data))
    y = [e.y for e in examples]
    out: dict[str, Any] = {"items": len(examples), "positives": int(sum(y))}
    for mode in ("proactive", "reactive"):
        if not predictor.has(mode) or not examples or (mode == "reactive" and not all(e.samples for e in examples)):
            out[mode] = None
            continue
        X = predictor.inputs(mode, texts=[e.text for e in examples], samples=[e.samples for e in examples])
        out[mode] = _r(auc(y, predictor.raw(mode, X)["prob"]), 4)
    if settings is not None:
        from ..predictor.train import cross_validate

        out["in_domain"] = None
        if min(sum(y), len(y) - sum(y)) >= k:  # every fold holds both classes
            cv = cross_validate(examples, settings, k=k)
            out["in_domain"] = {m: _r(cv[m]["auc"], 4) for m in ("proactive", "reactive") if m in cv}
    return out


def verification_auc(store: Path, task: str) -> dict[str, Any] | None:
    """How well the SLM's check of its own answer (`shepherd sweep verify`, the automix policy's P(yes)) ranks:
    its AUC for "the SLM's answer is right", and for "the LLM's answer is right where the SLM's is wrong" (what
    escalating a query gains). None where the traces carry no checks. Read after the replay, for the reader."""
    from ..predictor.train import auc
    from ..traces.store import TraceStore
    from ..verification import p_yes

    ts = TraceStore(store, readonly=True)
    try:
        sweeps = ts.item_sweeps(task)
    finally:
        ts.close()
    rows = []
    for s in sweeps:
        v, full = getattr(s, "verification", None), s.llm_full
        p = p_yes(v.generation) if v is not None else None
        if p is None or full is None or s.slm_greedy is None:
            continue
        rows.append((p, bool(s.slm_greedy.correct), bool(full.correct)))
    if len(rows) < max(2, len(sweeps) // 2):
        return None
    right = [int(r[1]) for r in rows]
    gain = [int(r[2] and not r[1]) for r in rows]
    ps = [r[0] for r in rows]
    return {"items": len(rows), "yes_share": _r(sum(p >= 0.5 for p in ps) / len(ps), 4),
            "auc_slm_right": _r(auc(right, ps), 4) if 0 < sum(right) < len(right) else None,
            # low P(yes) should flag the queries escalation fixes: the AUC of 1 - P(yes) for them
            "auc_gain": _r(auc(gain, [1.0 - p for p in ps]), 4) if 0 < sum(gain) < len(gain) else None}


# ----------------------------------------------------------------------------------------------------
# the numbers
# ----------------------------------------------------------------------------------------------------


def _r(x: Any, d: int = 6) -> Any:
    if isinstance(x, float):
        return None if math.isnan(x) else round(x, d)
    return x


def _point_dict(p: Any, scen_names: list[str], ref: dict[str, Any]) -> dict[str, Any]:
    from . import metrics as M

    d: dict[str, Any] = {"label": p.label, "accuracy": _r(p.accuracy.value), "ci": [_r(p.accuracy.low),
                                                                                     _r(p.accuracy.high)],
                         "seconds_per_query": _r(p.seconds_per_query(), 2), "decisions": p.decisions()}
    for s in scen_names:
        r = ref[s]
        c = p.cost[s]
        d[s] = {"cost_per_query": _r(c, 9),
                "cost_reduction": _r(M.cost_reduction(c, r["llm"]["cost_per_query"])),
                "ace": _r(M.ace(p.accuracy.value, c, r["slm"]["accuracy"], r["slm"]["cost_per_query"],
                                r["llm"]["accuracy"], r["llm"]["cost_per_query"]))}
    return d


def _representative(fam: Any, scen: str, ref: dict[str, Any]) -> Any:
    """The point a table shows for a policy: its only point, its configured knob, else its best ACE."""
    from . import metrics as M
    from .report import _point_at

    ok = [p for p in fam.points if p.ok]
    if not ok:
        return None
    if len(ok) == 1:
        return ok[0]
    if fam.default is not None:
        p = _point_at(fam, fam.default)
        if p is not None:
            return p
    r = ref[scen]

    def ace(p: Any) -> float:
        v = M.ace(p.accuracy.value, p.cost[scen], r["slm"]["accuracy"], r["slm"]["cost_per_query"],
                  r["llm"]["accuracy"], r["llm"]["cost_per_query"])
        return -math.inf if v is None or not math.isfinite(v) else v

    return max(ok, key=ace)


def summarize(run: StudyRun) -> dict[str, Any]:
    out: dict[str, Any] = {"train": {"task": run.spec.train_task, "items": run.train_stats.get("items"),
                                     "kept": run.train_stats.get("kept"), "kinds": run.train_stats.get("kinds"),
                                     "llm_accuracy": _r(run.train_stats.get("llm_accuracy")),
                                     "max_tokens": run.answer_caps.get("train"),
                                     "slm_accuracy": _r(run.train_stats.get("slm_accuracy"))},
                           "predictor": json.loads(json.dumps(run.predictor_metrics, default=str)),
                           "benchmarks": {}}
    for name, ev in run.runs.items():
        if not ev.results:
            out["benchmarks"][name] = {"items": 0}
            continue
        res = ev.results[0]
        scen_names = [s.name for s in ev.scenarios]
        ref = res.references
        b: dict[str, Any] = {"task": res.task, "items": len(res.item_ids), "max_tokens": run.answer_caps.get(name),
                             "references": json.loads(json.dumps(ref)),
                             "hint_curve": [{k: _r(v) for k, v in c.items()} for c in res.hint_curve],
                             "policies": {}}
        for fam in res.families:
            fd: dict[str, Any] = {"group": fam.group, "knob": fam.knob, "points": sum(p.ok for p in fam.points)}
            rep = _representative(fam, scen_names[0], ref) if ref else None
            if rep is not None and ref:
                fd["point"] = _point_dict(rep, scen_names, ref)
            for s in scen_names:
                m = fam.metrics.get(s, {})
                fd[s] = {"apgr": _r(m.get("apgr")), "best_ace": _r(m.get("best_ace"))}
                for key in ("at90", "at100"):
                    v = m.get(key)
                    if v:
                        pt = next((p for p in fam.points if p.ok and p.label == v["label"]), None)
                        fd[s][key] = {"label": v["label"], "accuracy": _r(v["accuracy"]),
                                      "cost_per_query": _r(v["cost_per_query"], 9),
                                      "cost_reduction": _r(v["cost_reduction"]), "ace": _r(v["ace"]),
                                      "ci": [_r(pt.accuracy.low), _r(pt.accuracy.high)] if pt else None,
                                      "seconds_per_query": _r(pt.seconds_per_query(), 2) if pt else None}
                    else:
                        fd[s][key] = None
            b["policies"][fam.name] = fd
        b["headline"] = {s: _headline(b["policies"], s) for s in scen_names}
        for sc in ev.scenarios:
            for key, frac in (("at90", 0.9), ("at100", 1.0)):
                h = b["headline"][sc.name][key]
                if h.get("baseline_over_shepherding_cost"):
                    h["ratio_ci"] = _ratio_ci(res, sc, frac, seed=run.spec.seed)
            b.setdefault("crossfit", {})[sc.name] = _crossfit(res, sc, seed=run.spec.seed)
        llm_fam = res.family("llm-only")
        llm_pt = next((p for p in llm_fam.points if p.ok), None) if llm_fam else None
        if llm_pt is not None:
            n = len(llm_pt.outcomes)
            P = sum(o.llm_prompt for o in llm_pt.outcomes) / n
            C = sum(o.llm_completion for o in llm_pt.outcomes) / n
            price = ev.scenarios[0].llm
            ends = {c["fraction"]: c.get("cut_off_share") for c in res.hint_curve}
            finished_acc = res.hint_curve[-1].get("finished_accuracy") if res.hint_curve else None
            b["llm_tokens"] = {"prompt": _r(P, 1), "answer": _r(C, 1),
                               "prompt_cost_share": _r(price.cost(P, 0) / price.cost(P, C)) if C or P else None,
                               "cut_off_share": _r(ends.get(1.0)), "slm_cut_off_share": _r(ends.get(0.0)),
                               "finished_accuracy": _r(finished_acc)}
        if name in run.predictor_on_test:
            b["predictor_auc"] = run.predictor_on_test[name]
        if name in run.verification:
            b["verification"] = run.verification[name]
        if name in run.cap_probes:
            b["cap_probe"] = run.cap_probes[name]
        out["benchmarks"][name] = b
    for spec_b in run.spec.benchmarks:  # listed even before its first swept item
        out["benchmarks"].setdefault(spec_b.name, {"items": 0})
        if spec_b.same_items_as:
            same = _same_items(run, spec_b.name, spec_b.same_items_as)
            if same is not None:
                out["benchmarks"][spec_b.name]["same_items"] = same
    out["comparison"] = _comparison(out, run.spec)
    if run.recipes:
        alt = (run.predictor_metrics.get("selection") or {}).get("alternative")
        out["recipes"] = {"by_recipe": run.recipes, "span_at90": _recipe_spans(run.recipes),
                          "chosen": next((r for r in run.recipes if r["chosen"]), None),
                          "alternative": next((r for r in run.recipes if r["label"] == alt), None)}
    return out


def _same_items(run: StudyRun, name: str, other: str) -> dict[str, Any] | None:
    """`other`'s SLM-only, LLM-only and oracle-shepherd accuracy on `name`'s items (the same tasks asked another
    way); None unless both were replayed and `other` has every one of those items."""
    this, that = run.runs.get(name), run.runs.get(other)
    if not this or not that or not this.results or not that.results:
        return None
    ids = set(this.results[0].item_ids)
    out: dict[str, Any] = {"benchmark": other, "items": len(ids)}
    for ref, key in (("slm-only", "slm_accuracy"), ("llm-only", "llm_accuracy"), ("oracle-shepherd", "oracle_shepherd_accuracy")):
        fam = that.results[0].family(ref)
        pt = next((p for p in fam.points if p.ok), None) if fam else None
        got = [o.correct for o in pt.outcomes if o.item_id in ids] if pt else []
        if len(got) != len(ids):
            return None
        out[key] = _r(sum(got) / len(got))
    return out


def _comparison(summary: dict[str, Any], spec: StudySpec) -> dict[str, Any]:
    """Spans across benchmarks (SLM free) that the paper's claims are stated in, for the discussion."""
    def span(xs: list[float]) -> dict[str, Any]:
        return {"min": min(xs), "max": max(xs), "n": len(xs)} if xs else {"min": None, "max": None, "n": 0}

    out: dict[str, Any] = {}
    subsets = spec.subset_names()
    for key in ("at90", "at100"):
        heads = [b["headline"]["slm-free"][key] for name, b in summary["benchmarks"].items()
                 if b.get("items") and name not in subsets]
        out[key] = {"shepherding_cost_reduction": span([h["shepherding"]["cost_reduction"] for h in heads
                                                         if h.get("shepherding")]),
                    "baseline_over_shepherding_cost": span([h["baseline_over_shepherding_cost"] for h in heads
                                                             if h.get("baseline_over_shepherding_cost")])}
    tr = summary["train"]
    out["train_target_items"] = spec.train_target_items
    out["llm_over_slm_seconds"] = {}
    for name, b in summary["benchmarks"].items():
        pol = b.get("policies") or {}
        llm = ((pol.get("llm-only") or {}).get("point") or {}).get("seconds_per_query")
        slm = ((pol.get("slm-only") or {}).get("point") or {}).get("seconds_per_query")
        out["llm_over_slm_seconds"][name] = _r(llm / slm, 3) if llm and slm else None
    out["train_no_hint_share"] = (_r((tr.get("kinds") or {}).get("none", 0) / tr["items"])
                                  if tr.get("items") else None)
    return out


def _side(name: str, group: str) -> str | None:
    """Which side of the headline comparison a policy is on: shepherding, baseline, or neither."""
    if group == "oracle" or name in ("llm-only", "slm-only"):
        return None
    return "shepherding" if group == "shepherding" else "baseline"


def _point_vectors(res: Any, scen: Any) -> tuple[list[float] | None, dict[str, tuple[str | None, list[Any]]]]:
    """LLM-only's per-item correctness, and per policy its side (`_side`) and every point as (per-item
    correctness, per-item cost under `scen`) over the benchmark's items in one order."""
    order = list(res.item_ids)

    def vectors(p: Any) -> tuple[list[float], list[float]] | None:
        by = {o.item_id: o for o in p.outcomes}
        if any(i not in by for i in order):
            return None
        return [float(by[i].correct) for i in order], [by[i].cost(scen) for i in order]

    llm, fams = None, {}
    for fam in res.families:
        pts = [v for v in (vectors(p) for p in fam.points if p.ok) if v is not None]
        if fam.name == "llm-only":
            llm = pts[0][0] if pts else None
        fams[fam.name] = (_side(fam.name, fam.group), pts)
    return llm, fams


def _ratio_ci(res: Any, scen: Any, fraction: float, *, seed: int) -> dict[str, Any] | None:
    """Bootstrap interval of the headline's baseline/shepherding cost ratio (metrics.matched_cost_ratio_ci),
    with the same grouping as `_headline`: every non-oracle policy point, shepherding against the rest."""
    from . import metrics as M

    llm, fams = _point_vectors(res, scen)
    groups: dict[str, list[Any]] = {"shepherding": [], "baseline": []}
    for side, pts in fams.values():
        if side is not None:
            groups[side] += pts
    if llm is None:
        return None
    ci = M.matched_cost_ratio_ci(llm, groups["shepherding"], groups["baseline"], fraction, seed=seed)
    return None if ci is None else {k: _r(v) if isinstance(v, float) else v for k, v in ci.items()}


#: random halvings of a benchmark's items for the out-of-sample headline (each gives two held-out halves)
CROSSFIT_SPLITS = 100


def _crossfit(res: Any, scen: Any, *, seed: int, splits: int = CROSSFIT_SPLITS) -> dict[str, Any] | None:
    """The out-of-sample headline (metrics.crossfit_matched_cost): each policy, and each side as a whole (best
    shepherding: its policy and knob chosen together, likewise the best baseline), picks its cheapest point
    reaching the target on one random half of the items and is scored on the other half. Costs are reported as
    reductions against LLM-only's cost on all items (the mean over halves of a half's mean is the mean)."""
    from . import metrics as M

    llm, fams = _point_vectors(res, scen)
    llm_pts = fams.get("llm-only", (None, []))[1]
    if llm is None or not llm_pts:
        return None
    llm_cost = sum(llm_pts[0][1]) / len(llm_pts[0][1])
    sides: dict[str, list[Any]] = {"shepherding": [], "baseline": []}
    for name, (side, pts) in fams.items():
        if side is not None and pts:
            sides[side] += pts
            sides[name] = pts
    sides = {k: v for k, v in sides.items() if v}
    if "shepherding" not in sides:
        return None

    def red(c: float) -> float | None:
        return _r(1.0 - c / llm_cost) if llm_cost > 0 else None

    out: dict[str, Any] = {"splits": splits, "policies": {}}
    for key, frac in (("at90", 0.9), ("at100", 1.0)):
        cf = M.crossfit_matched_cost(llm, sides, frac, splits=splits, seed=seed)
        if cf is None:
            out[key] = None
            continue
        rows = {}
        for k, v in cf["sides"].items():
            rows[k] = None if v is None else {
                "cost_per_query": _r(v["cost_per_query"], 9), "cost_reduction": red(v["cost_per_query"]),
                "cost_reduction_range": [red(v["cost_range"][1]), red(v["cost_range"][0])],
                "accuracy_over_llm": _r(v["accuracy_over_llm"]),
                # of all held-out halves: a half whose other half reached nothing counts as missed
                "met_share": _r(v["target_met_share"] * (1.0 - v["not_reached_share"])),
                "not_reached_share": _r(v["not_reached_share"])}
        ratio = (cf.get("ratio_over_shepherding") or {}).get("baseline")
        out[key] = {"shepherding": rows.pop("shepherding", None), "baseline": rows.pop("baseline", None),
                    "baseline_over_shepherding_cost": None if ratio is None else {
                        k: _r(v) if isinstance(v, float) else v for k, v in ratio.items()}}
        for name, row in rows.items():
            out["policies"].setdefault(name, {"group": fams[name][0]})[key] = row
    return out


def _headline(policies: dict[str, Any], scen: str) -> dict[str, Any]:
    """Cheapest shepherding vs cheapest non-oracle baseline at each accuracy target, and their ratio."""
    out = {}
    for key in ("at90", "at100"):
        best: dict[str, tuple[str, dict[str, Any]]] = {}
        for name, fd in policies.items():
            g = _side(name, fd["group"])
            v = (fd.get(scen) or {}).get(key)
            if g is None or not v:
                continue
            if g not in best or v["cost_per_query"] < best[g][1]["cost_per_query"]:
                best[g] = (name, v)
        row: dict[str, Any] = {g: {"policy": n, **v} for g, (n, v) in best.items()}
        if "shepherding" in best and "baseline" in best and best["shepherding"][1]["cost_per_query"] > 0:
            row["baseline_over_shepherding_cost"] = _r(best["baseline"][1]["cost_per_query"]
                                                       / best["shepherding"][1]["cost_per_query"], 3)
        out[key] = row
    return out


# ----------------------------------------------------------------------------------------------------
# the document: templates/results.md.j2 holds its words; the code below fills in numbers and chooses cases
# ----------------------------------------------------------------------------------------------------


def _pct(x: Any, d: int = 1) -> str:
    return "n/a" if x is None else f"{100 * x:.{d}f}%"


def _red(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"−{100 * x:.0f}%" if x >= 0 else f"+{-100 * x:.0f}%"


def _ace(x: Any) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _usd(x: Any) -> str:
    return "n/a" if x is None else f"${1000 * x:.4f}"


def _num(x: Any, d: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


ORDER = ("slm-only", "llm-only", "random-mix", "fixed-ratio", "routellm-classifier", "routellm-mf", "graphrouter",
         "frugalgpt", "knn", "abc", "abc+greedy", "confidence-cascade", "automix", "proactive", "reactive", "reactive-fixed",
         "reactive-fixed+vote", "confidence", "confidence-3band", "confidence-ladder", "rescue", "oracle-routing",
         "oracle-cascade", "oracle-shepherd")
#: the training labels' kinds in the order `traces.labels.label_stats` counts them (summary.json sorts its keys)
_LABEL_KINDS = ("none", "hint", "llm", "unsolvable")
#: the template's number formats (`{{ x|pct }}`, `{{ x|pct(0) }}`, `{{ x|fixed(1) }}`, ...)
_FILTERS: dict[str, Callable[..., str]] = {"pct": _pct, "red": _red, "ace": _ace, "usd": _usd, "num": _num,
                                           "fixed": lambda x, d: f"{x:.{d}f}", "g": lambda x: f"{x:g}"}


@functools.cache
def _templates() -> Environment:
    """The templates beside this module; a value the template names but is not given is an error."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined)
    env.filters.update(_FILTERS)
    return env


def write_results_md(run: StudyRun, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_results_md(run.spec, run.summary), encoding="utf-8")
    return path


def render_results_md(spec: StudySpec, summary: dict[str, Any]) -> str:
    """results.md: the words of `templates/results.md.j2`, the numbers of the spec and the study's summary (as
    results/summary.json holds it, so the document can be rebuilt from the committed files alone)."""
    return _templates().get_template("results.md.j2").render(_results_context(spec, summary))


def _results_context(spec: StudySpec, S: dict[str, Any]) -> dict[str, Any]:
    """What the template fills in: the spec, the summary, and what is read or chosen off them."""
    from .plots import figure_names

    tr, pm = S["train"], S.get("predictor") or {}
    benches = [{"b": b, "d": S["benchmarks"].get(b.name) or {}, "slug": _slug(b.name)} for b in spec.benchmarks]
    for x in benches:
        x["figures"] = figure_names(x["d"]["task"]) if x["d"].get("task") else {}
    swept = [x for x in benches if x["d"].get("items")]
    cv = pm.get("cv") or {}
    mdl = pm.get("model") or {}
    lam, l2 = mdl.get("lam", 0.5), mdl.get("l2", 0)
    rec = (S.get("recipes") or {}).get("by_recipe") or []
    return {
        "spec": spec, "summary": S, "train": tr, "paper": PAPER, "order": ORDER, "benches": benches, "swept": swept,
        "crossfit_splits": next((x["d"]["crossfit"]["slm-free"]["splits"] for x in swept
                                 if (x["d"].get("crossfit") or {}).get("slm-free")), CROSSFIT_SPLITS),
        "partial": (any(x["b"].target_items and x["d"].get("items", 0) < x["b"].target_items for x in benches)
                    or bool(spec.train_target_items and (tr["items"] or 0) < spec.train_target_items)),
        "caps": _caps({"train": tr.get("max_tokens"), **{x["b"].name: x["d"].get("max_tokens") for x in benches}}),
        "side": _paper_side([x for x in swept if not x["b"].subset_of], S),
        "discussion": render_discussion(spec.discussion.strip(), S) if spec.discussion.strip() else "",
        "wall_clock": [(name, [_wall_seconds(x["d"]["policies"].get(name) or {}) for x in swept]) for name in ORDER],
        "cv": [(mode, cv[mode]) for mode in ("proactive", "reactive") if cv.get(mode)],
        "l2_split": (l2 / max(lam, 1e-9), l2 / max(1 - lam, 1e-9)),
        "on_test": [x for x in benches if x["d"].get("predictor_auc")],
        "recipes": rec, "recipe_benchmarks": [b.name for b in spec.benchmarks if any(b.name in r["benchmarks"]
                                                                                      for r in rec)],
    }


def _caps(caps: dict[str, int | None]) -> dict[str, Any] | None:
    """The sweeps' answer caps: the common one, and each (traces, cap) that differs; None: none known."""
    known = {k: v for k, v in caps.items() if v}
    if not known:
        return None
    common = Counter(known.values()).most_common(1)[0][0]
    return {"common": common, "odd": [(k, v) for k, v in known.items() if v != common]}


def _paper_side(swept: list[dict[str, Any]], S: dict[str, Any]) -> dict[str, Any]:
    """The numbers of the side-by-side with the paper (SLM free), and the verdicts they give."""
    reds, ratios, ace, held_out = [], [], [], []
    for x in swept:
        name, d = x["b"].name, x["d"]
        cf = (d.get("crossfit") or {}).get("slm-free") or {}
        for key in ("at100", "at90"):
            r = (cf.get(key) or {}).get("baseline_over_shepherding_cost")
            if r:
                held_out.append((name, key, r["median"], r))
            h = d["headline"]["slm-free"][key]
            if h.get("shepherding"):
                reds.append((name, key, h["shepherding"]["cost_reduction"]))
            if h.get("baseline_over_shepherding_cost"):
                ratios.append((name, key, h["baseline_over_shepherding_cost"], h.get("ratio_ci")))
        reactive = d["policies"].get("reactive", {}).get("slm-free", {})
        paper, at90 = PAPER["reactive_ace"].get(d["task"]), (reactive.get("at90") or {}).get("ace")
        ace.append({"name": name, "paper": paper, "at90": at90, "best": reactive.get("best_ace"),
                    "verdict": _verdict(paper, at90)})
    best = max(ratios, key=lambda r: r[2], default=None)
    best_out = max(held_out, key=lambda r: r[2], default=None)
    at100 = [(n, x) for n, k, x in reds if k == "at100"]
    kinds = (S["train"].get("kinds") or {}).items()
    return {"at100": at100, "at90": [(n, x) for n, k, x in reds if k == "at90"],
            "range": _agree_range([x for _, x in at100], *PAPER["cost_reduction_range"]),
            "ratios": ratios, "best": best[2] if best else None,
            "ratio": _agree_ratio(best[2] if best else None, best[3] if best else None), "ace": ace,
            "held_out": held_out, "best_held_out": best_out[2] if best_out else None,
            "ratio_held_out": _agree_ratio(best_out[2] if best_out else None, best_out[3] if best_out else None),
            "no_hint": S["comparison"]["train_no_hint_share"],
            "kinds": sorted(kinds, key=lambda kv: _LABEL_KINDS.index(kv[0]) if kv[0] in _LABEL_KINDS else 99)}


def _wall_seconds(fd: dict[str, Any]) -> float | None:
    """A policy's model seconds per query at its cheapest point >= 90% of LLM-only accuracy, else its only point."""
    v = (fd.get("slm-free") or {}).get("at90")
    sec = v.get("seconds_per_query") if v else None
    if sec is None and fd.get("knob") == "-" and fd.get("point"):
        sec = fd["point"].get("seconds_per_query")
    return sec


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}|]+?)\s*(?:\|\s*(\w+)\s*)?\}\}")
_FORMATS: dict[str, Callable[[Any], str]] = {
    "pct": lambda x: _pct(x, 0), "pct1": _pct, "red": _red, "num": _num, "ace": _ace, "usd": _usd,
    "int": lambda x: f"{x:.0f}", "x": lambda x: f"{x:.2f}x", "pp": lambda x: f"{100 * x:.0f}",
}


def render_discussion(text: str, summary: dict[str, Any]) -> str:
    """Fill `{{benchmarks.GSM8K.references.slm-free.slm.accuracy | pct}}` placeholders from the summary.

    Why: the prose is hand-written but its numbers are not, so they cannot go stale when the traces grow.
    A path through a missing point (a target not reached) renders "not reached", through a benchmark without
    traces "not swept yet"; a path that names no field of the summary is an error, not a silent blank.
    """
    def fill(m: re.Match) -> str:
        path, fmt = m.group(1), m.group(2)
        if fmt and fmt not in _FORMATS:
            raise StudyError(f"discussion: unknown format {fmt!r} in {m.group(0)} "
                             f"(known: {', '.join(sorted(_FORMATS))})")
        node: Any = summary
        for part in path.split("."):
            if node is None:
                return "not reached"
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and node.get("items") == 0:  # a benchmark with no traces yet
                return "not swept yet"
            else:
                raise StudyError(f"discussion: {m.group(0)} names no field of the study summary "
                                 f"(stopped at {part!r}; see docs/results/summary.json)")
        if node is None:
            return "not reached"
        if isinstance(node, (dict, list)):
            raise StudyError(f"discussion: {m.group(0)} is not a number or text")
        if fmt:
            return _FORMATS[fmt](node)
        return f"{node:.2f}" if isinstance(node, float) else str(node)

    return _PLACEHOLDER.sub(fill, text)


def _agree_range(xs: list[float], lo: float, hi: float) -> str:
    """Are shepherding's cost reductions at LLM-only accuracy in the paper's range: "all", "some", "none", or
    "never" (it does not get there)."""
    if not xs:
        return "never"
    inside = [x for x in xs if lo <= x <= hi]
    if len(inside) == len(xs):
        return "all"
    return "some" if inside else "none"


def _agree_ratio(best: float | None, ci: dict[str, Any] | None = None) -> str:
    """The verdict on "up to 2.8x cheaper than the best baseline" from the largest ratio and, when there is
    one, its bootstrap interval: a ratio whose interval spans 1 is no evidence either way."""
    if best is None:
        return "unknown"
    if ci is not None and ci["low"] <= 1.0 <= ci["high"]:
        return "spans_one"
    if ci is not None and ci["high"] < 1.0:
        return "baseline_cheaper"
    if best >= 1.5:
        return "clearly"
    if best > 1.0:
        return "direction"
    return "no"


def _verdict(paper: float | None, ours: float | None) -> str:
    """Our reactive ACE next to the paper's: "close" (within 35%), "direction" (> 1 only), "below" (<= 1), or
    "not_reached" / "unknown" (no number on our side / the paper's)."""
    if paper is None or ours is None:
        return "not_reached" if paper is not None else "unknown"
    if ours >= 1.0 and abs(ours - paper) / paper <= 0.35:
        return "close"
    if ours >= 1.0:
        return "direction"
    return "below"


def _hint_figure(run: StudyRun, path: Path) -> None:
    from . import plots

    subsets = run.spec.subset_names()  # their curves repeat their parents' items
    curves = {name: ev.results[0].hint_curve for name, ev in run.runs.items() if ev.results and name not in subsets}
    if curves:
        plots.hint_curves(curves, path)
