"""What `shepherd eval` runs: train (or load) every learned policy on the training traces, build each
policy family with its knob values, replay them on the test traces, and collect what a report needs to
be rerun exactly.

Train and test may be the same store: the items of each task are then split by a seeded shuffle
(`test_fraction`, `split_seed`), and the report says so. The zero-shot setting of the paper is a train
store of one task and a test store of others (e.g. GSM8K -> HumanEval, MBPP).
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..costs import PAPER_LLM_PRICE, Price
from .evaluate import (
    DEFAULT_SLM_PRICE,
    Family,
    TaskResult,
    evaluate_task,
    scenarios,
    split_items,
    thresholds_from_scores,
)

LEARNED = ("routellm-classifier", "routellm-mf", "graphrouter", "knn", "frugalgpt")
ALL_POLICIES = ("slm-only", "llm-only", "random-mix", "fixed-ratio", "routellm-classifier", "routellm-mf",
                "graphrouter", "knn", "frugalgpt", "abc", "proactive", "reactive", "reactive-fixed", "confidence",
                "confidence-cascade", "automix", "rescue", "oracle-routing", "oracle-cascade", "oracle-shepherd")
#: asked for by name only (`--policies`): variants of the agreement gate, so the default study stays as it is
OPTIONAL_POLICIES = ("abc+greedy", "reactive-fixed+vote", "confidence-3band", "confidence-ladder")

NOTES = {
    "slm-only": "the SLM answers every query (greedy)",
    "llm-only": "the LLM answers every query (greedy)",
    "random-mix": "LLM for a seeded-hash share p of queries, else SLM; knob p",
    "fixed-ratio": "the same hint fraction f of the LLM's answer for every query, n = round(f*L) with L from "
                   "the sweep (the paper's fixed-ratio baseline); knob f",
    "routellm-classifier": "RouteLLM classifier router: logistic head on a frozen query embedding, label = "
                           "SLM alone wrong; routes SLM|LLM; knob: score threshold",
    "routellm-mf": "RouteLLM matrix-factorisation router (bilinear w.((v_llm-v_slm)*Wx)), same label; with two "
                   "models and one label this is a logistic model on a low-rank projection of the query "
                   "embedding, not a different kind of router; knob: score threshold",
    "graphrouter": "GraphRouter, simplified: query-task-model graph, kNN + task aggregation of correctness "
                   "edges, logistic edge predictor (no trained GNN); knob: P(LLM right)-P(SLM right) threshold",
    "knn": "kNN router: similarity-weighted share of the k nearest training queries (cosine, same embedding) "
           "on which the SLM alone was wrong, k chosen by leave-one-out AUC on the training items; knob: score "
           "threshold",
    "frugalgpt": "FrugalGPT cascade: SLM answers (paid), a learned scorer of (query, answer) escalates "
                 "doubtful ones to the LLM (paid too); knob: 1-P(right) threshold",
    "abc": "agreement-based cascade: k sampled SLM answers (paid); fewer than j of them agreeing escalates to "
           "the LLM; knob (k, j), whole counts",
    "proactive": "shepherding, proactive: the trained predictor decides slm | hint(n) | llm from the query; "
                 "knob (threshold, hint scale): thresholds at the predictor's own scores on the test queries",
    "reactive": "shepherding, reactive: 3 SLM samples first (paid); agreement answers, else the predictor "
                "decides from query + samples; knob (threshold, hint scale) as proactive",
    "reactive-fixed": "reactive shepherding without a predictor (ablation): the same 3 SLM samples; agreement "
                      "answers, else the same hint fraction f of the LLM's answer for every query; knob f",
    "confidence": "the SLM answers first (greedy, paid); a low confidence of its own tokens (lowest 16-token "
                  "window mean log-probability) buys a hint of f of the LLM's answer; knob (f, threshold); only "
                  "where the traces carry token log-probabilities",
    "confidence-cascade": "the same trigger, but the LLM answers in full (no hint); knob: threshold",
    "automix": "AutoMix self-verification cascade: the SLM answers (greedy, paid), then is asked whether its answer is "
               "correct (one Yes/No token, prompt paid at the SLM's input price); P(yes) below the threshold "
               "escalates to the LLM in full; knob: threshold; only where `shepherd sweep verify` stored the checks",
    "confidence-3band": "confidence with three bands: confident answers stand, doubtful ones get a hint of f, "
                        "the least confident go to the LLM in full; knob (f, hint threshold, LLM threshold)",
    "confidence-ladder": "confidence with the hint bought a piece at a time: a doubtful answer gets a hint of the "
                         "first rung, a doubtful continuation an extension to the next (new output tokens paid, the "
                         "prompt and earlier hint at the cached-input rate); past the last rung the LLM finishes; "
                         "knob (rungs, threshold); only where the hinted continuations carry log-probabilities",
    "rescue": "the SLM answers (greedy, paid); at its first stretch of `window` tokens whose mean log-probability "
              "is below the threshold, its answer is cut back to that line's start, the LLM continues it for n "
              "tokens and the SLM goes on; knob (threshold, n); only where the sweep recorded rescues "
              "(--rescue-thresholds, --rescue-tokens)",
    "abc+greedy": "ABC with the SLM's greedy answer as one more voter: k samples + the greedy answer, j of them "
                  "agreeing answer; knob (k, j)",
    "reactive-fixed+vote": "reactive-fixed with a looser gate: j of the 3 samples (2 of 3), or j of the 3 samples "
                           "+ the greedy answer (3 of 4, 2 of 4); knob (f, j, greedy)",
    "oracle-routing": "knows whether the SLM alone is right: SLM if so, else LLM",
    "oracle-cascade": "SLM first (paid); LLM only when the SLM's answer is wrong",
    "oracle-shepherd": "the smallest passing swept hint n* per item (none if the SLM alone passes), else LLM",
}


@dataclass
class EvalConfig:
    test: str
    out: str
    train: str | None = None
    tasks: list[str] | None = None
    train_tasks: list[str] | None = None
    featurizer: str = "auto"
    predictor: str | None = None
    baselines: str | None = None
    llm_price: Price = PAPER_LLM_PRICE
    slm_price: Price = DEFAULT_SLM_PRICE
    test_fraction: float = 0.5
    split_seed: int = 0
    max_points: int = 21
    n_boot: int = 2000
    seed: int = 0
    policies: list[str] | None = None
    limit: int | None = None
    data: str | None = None
    #: exact item ids per task (a rerun from a manifest); None: every finished item (split if same store)
    test_items: dict[str, list[str]] | None = None
    train_items: dict[str, list[str]] | None = None
    #: the manifest this run repeats (its fingerprints are compared in the report)
    rerun_of: str | None = None
    argv: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["llm_price"] = self.llm_price.model_dump()
        d["slm_price"] = self.slm_price.model_dump()
        return d

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any], out: str, argv: list[str] | None = None,
                      source: str | None = None) -> EvalConfig:
        """The config of an earlier run, pinned to exactly the items it used."""
        c = dict(manifest["config"])
        c["llm_price"] = Price(**c["llm_price"])
        c["slm_price"] = Price(**c["slm_price"])
        c["out"] = out
        c["argv"] = list(argv or [])
        c["rerun_of"] = source
        c["limit"] = None
        c["test_items"] = {t: list(v["items"]) for t, v in manifest["test"]["tasks"].items()}
        train = manifest.get("train")
        c["train_items"] = None if not train else {t: list(v["items"]) for t, v in train["tasks"].items()}
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in c.items() if k in known})


@dataclass
class EvalRun:
    config: EvalConfig
    results: list[TaskResult]
    manifest: dict[str, Any]
    scenarios: list[Any]


def _sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sweeps_fingerprint(sweeps: Sequence[Any]) -> str:
    """sha256 of what an evaluation reads from a store for these items: ids, prompts, every stored
    answer text and grade. Stable across store files holding the same traces (unlike the file's hash)."""
    h = hashlib.sha256()
    for s in sorted(sweeps, key=lambda s: s.item_id):
        rec = [s.task, s.item_id, s.messages, s.llm_full.generation.text, s.llm_full.correct, s.full_tokens,
               [[lv.fraction, lv.hint_tokens, [[t.generation.text, t.correct] for t in lv.trials]] for lv in s.levels],
               [[g.generation.text, g.correct] for g in s.samples]]
        # what only some sweeps record, appended only where present (older fingerprints stay as they were)
        extra = [[lv.fraction, [[g.generation.text, g.correct] for g in lv.samples]] for lv in s.levels if lv.samples]
        if extra:
            rec.append(extra)
        if s.verification is not None:  # `shepherd sweep verify`: automix reads it
            rec.append(["verify", s.verification.generation.text, s.verification.correct])
        h.update(json.dumps(rec, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _store_tasks(store: Any) -> list[str]:
    seen: list[str] = []
    for info in store.sweeps():
        if info.task not in seen:
            seen.append(info.task)
    return seen


def _load_task(name: str, data: str | None):
    from ..tasks.registry import get_task

    return get_task(name, data) if data else get_task(name)


def _store_info(path: str, store: Any, tasks: Sequence[str]) -> dict[str, Any]:
    p = Path(path)
    return {"path": str(p), "bytes": p.stat().st_size if p.exists() else None,
            "sha256": _sha256_file(p) if p.exists() else None,
            "note": "the file's hash changes while a sweep still writes to it; the per-task `fingerprint` "
                    "covers exactly the traces this run read",
            "sweeps": [{"sweep": i.sweep, "task": i.task, "slm": i.slm, "llm": i.llm, "config": i.config}
                       for i in store.sweeps() if i.task in tasks]}


# ----------------------------------------------------------------------------------------------------
# policy families
# ----------------------------------------------------------------------------------------------------


def build_families(task_name: str, sweeps: Sequence[Any], *, scorers: dict[str, Any], predictor: Any,
                   max_points: int = 21, wanted: Sequence[str] | None = None,
                   items: dict[str, Any] | None = None) -> list[Family]:
    """Every policy family for one benchmark, with knob values derived (label-free) from its test
    queries: thresholds at the scores the policy itself gives them, so each point is a distinct split."""
    from ..policies import baselines as B
    from ..policies.oracles import OracleCascade, OracleRouting, OracleShepherd
    from ..policies.simple import LLMOnly, SLMOnly
    from ..routers import learned as R

    wanted = list(wanted or ALL_POLICIES)
    fams: list[Family] = []
    sweep_cfg = sweeps[0].sweep if sweeps else {}
    lengths = {s.item_id: s.full_tokens for s in sweeps}
    rows = R.rows_from_sweeps(sweeps)

    def add(name, group, knob, values, make, label=None, default=None):
        if name in wanted:
            fams.append(Family(name, group, knob, list(values), make, NOTES.get(name, ""), label, default))

    add("slm-only", "reference", "-", [None], lambda _: SLMOnly())
    add("llm-only", "reference", "-", [None], lambda _: LLMOnly())
    add("random-mix", "reference", "p", [round(i / 10, 1) for i in range(11)], lambda p: B.RandomMix(p=p))
    grid = sorted({float(f) for f in (sweep_cfg.get("grid") or [])} | {lv.fraction for s in sweeps for lv in s.levels if not lv.by_tokens})
    add("fixed-ratio", "reference", "f", [f for f in grid if f > 0] + [1.0],
        lambda f: B.FixedRatio(f, lengths=lengths))

    for kind, cls in (("routellm-classifier", B.RouteLLMClassifier), ("routellm-mf", B.RouteLLMMF),
                      ("graphrouter", B.GraphRouter), ("knn", B.KNNRouter), ("frugalgpt", B.FrugalGPT)):
        sc = scorers.get(kind)
        if sc is None or kind not in wanted:
            continue
        needs = sc.needs(rows)  # for FrugalGPT: scored on the SLM's stored greedy answer, what replay serves
        base = cls(sc)
        values = sorted(set(thresholds_from_scores(needs, max_points)) | {base.threshold})
        add(kind, "baseline", "threshold", values, lambda t, base=base: base.with_threshold(t), default=base.threshold)

    n_samples = min((len(s.samples) for s in sweeps), default=0)
    temp = float(sweep_cfg.get("temperature") or 0.7)
    abc_knobs = [(k, j) for k in range(2, n_samples + 1) for j in range(2, k + 1)]  # j of k agree
    if abc_knobs:
        add("abc", "baseline", "(k,j)", abc_knobs, lambda kj: B.ABC(k=kj[0], agree=kj[1], temperature=temp),
            label=lambda kj: f"abc {kj[1]} of {kj[0]}")

    if predictor is not None:
        from ..policies.shepherding import ProactivePolicy, ReactivePolicy

        modes = [("proactive", ProactivePolicy, {})]
        if n_samples >= 1:
            modes.append(("reactive", ReactivePolicy, {"samples": min(3, n_samples), "temperature": temp}))
        for mode, cls, extra in modes:
            if mode not in wanted:
                continue
            rule = predictor.rules.get(mode, predictor.rules["proactive"])
            scores = predictor_scores(predictor, mode, sweeps, items)
            # half as many thresholds as a one-knob baseline gets, at each of the scales: ~4x its points in all
            values = shepherding_knobs(scores, rule.threshold, rule.scale, (max_points + 1) // 2)
            add(mode, "shepherding", "(threshold,scale)", values,
                lambda ts, cls=cls, extra=extra: cls(predictor, threshold=ts[0], scale=ts[1], **extra),
                label=_threshold_label(mode), default=(rule.threshold, rule.scale))

    if n_samples >= 1:
        from ..policies.shepherding import ReactiveFixedPolicy

        add("reactive-fixed", "shepherding", "f", [f for f in grid if f > 0] + [1.0],
            lambda f: ReactiveFixedPolicy(f, lengths=lengths, samples=min(3, n_samples), temperature=temp))
    if abc_knobs:
        add("abc+greedy", "baseline", "(k,j)", [(k, j) for k in range(2, n_samples + 1) for j in range(2, k + 2)],
            lambda kj: B.ABC(k=kj[0], agree=kj[1], temperature=temp, greedy_voter=True),
            label=lambda kj: f"abc {kj[1]} of {kj[0] + 1} (greedy + {kj[0]} samples)")
    if n_samples >= 3:
        from ..policies.shepherding import ReactiveFixedPolicy

        gates = [(2, False), (3, True), (2, True)]
        add("reactive-fixed+vote", "shepherding", "(f,j,greedy)",
            [(f, j, g) for f in [x for x in grid if x > 0] + [1.0] for j, g in gates],
            lambda fjg: ReactiveFixedPolicy(fjg[0], lengths=lengths, samples=3, temperature=temp, agree=fjg[1],
                                            greedy_voter=fjg[2]),
            label=lambda fjg: f"reactive-fixed f={fjg[0]:g}, {fjg[1]} of {3 + fjg[2]}"
                              + (" (greedy votes)" if fjg[2] else ""))
    values = _confidence_values(sweeps, CONFIDENCE_FEATURE)
    if values:
        confident = _standing_thresholds(values, max_points)
        from ..policies.confidence import ConfidenceCascade, ConfidencePolicy

        fs = [f for f in grid if 0 < f <= 0.5]
        add("confidence", "shepherding", "(f,threshold)", [(f, t) for f in fs for t in confident],
            lambda ft: ConfidencePolicy(ft[1], feature=CONFIDENCE_FEATURE, fraction=ft[0], lengths=lengths),
            label=lambda ft: f"confidence f={ft[0]:g} threshold={ft[1]:.4g}")
        coarse = _standing_thresholds(values, 11)  # three bands: pairs of thresholds, so fewer of each
        add("confidence-3band", "shepherding", "(f,threshold,llm_below)",
            [(f, t, b) for f in [x for x in grid if 0 < x <= 0.7] for t in coarse for b in coarse if b < t],
            lambda ftb: ConfidencePolicy(ftb[1], feature=CONFIDENCE_FEATURE, fraction=ftb[0], llm_below=ftb[2],
                                         lengths=lengths),
            label=lambda ftb: f"confidence-3band f={ftb[0]:g} threshold={ftb[1]:.4g} llm_below={ftb[2]:.4g}")
        ladders = [r for r in LADDERS if set(r) <= set(grid) and _levels_scored(sweeps, r)]
        if ladders:
            from ..policies.confidence import ConfidenceLadder

            add("confidence-ladder", "shepherding", "(rungs,threshold)",
                [(r, t) for r in ladders for t in confident],
                lambda rt: ConfidenceLadder(rt[1], feature=CONFIDENCE_FEATURE, rungs=rt[0], lengths=lengths),
                label=lambda rt: f"confidence-ladder rungs={'/'.join(f'{x:g}' for x in rt[0])} threshold={rt[1]:.4g}")
        add("confidence-cascade", "baseline", "threshold", confident,
            lambda t: ConfidenceCascade(t, feature=CONFIDENCE_FEATURE),
            label=lambda t: f"confidence-cascade threshold={t:.4g}")
    from ..verification import verification_values

    p_yes = verification_values(sweeps)  # only where `shepherd sweep verify` stored every item's verification
    if p_yes:
        from ..policies.automix import AutoMixPolicy

        add("automix", "baseline", "threshold", _standing_thresholds(p_yes, max_points), lambda t: AutoMixPolicy(t),
            label=lambda t: f"automix threshold={t:.4g}")
    r_thresholds, r_tokens = sweep_cfg.get("rescue_thresholds") or [], sweep_cfg.get("rescue_tokens") or []
    if r_thresholds and r_tokens:
        from ..policies.rescue import RescuePolicy

        window = int(sweep_cfg.get("rescue_window") or 8)
        add("rescue", "shepherding", "(threshold,n)", [(t, n) for t in r_thresholds for n in r_tokens],
            lambda tn: RescuePolicy(tn[0], tokens=tn[1], window=window),
            label=lambda tn: f"rescue threshold={tn[0]:g} n={tn[1]}")
    add("oracle-routing", "oracle", "-", [None], lambda _: OracleRouting(sweeps))
    add("oracle-cascade", "oracle", "-", [None], lambda _: OracleCascade(sweeps))
    add("oracle-shepherd", "oracle", "-", [None], lambda _: OracleShepherd(sweeps))
    return fams


#: the confidence feature the confidence policies read: DeepConf's lowest-window mean, fixed a priori
CONFIDENCE_FEATURE = "lowest_window16"


def _confidence_values(sweeps: Sequence[Any], feature: str) -> list[float]:
    """The feature of each SLM greedy answer that carries log-probabilities; empty when fewer than half do
    (the confidence policies are then left out rather than run blind)."""
    from ..confidence import features

    values = []
    for s in sweeps:
        g = s.slm_greedy
        if g is not None and g.generation.logprobs is not None:
            v = features(g.generation.logprobs, g.generation.text, g.extracted)[feature]
            if v is not None:
                values.append(v)
    return values if len(values) >= max(2, len(sweeps) // 2) else []


#: the rungs the confidence-ladder family tries (fractions of the LLM's answer; each must be a swept level)
LADDERS = ((0.1, 0.3), (0.1, 0.5), (0.1, 0.3, 0.5), (0.3, 0.5))


def _levels_scored(sweeps: Sequence[Any], fractions: Sequence[float]) -> bool:
    """Whether the SLM's continuations at these hint levels carry log-probabilities on most items (a ladder
    judges each continuation by them)."""
    want = {round(f, 6) for f in fractions}
    have = total = 0
    for s in sweeps:
        for lv in s.levels:
            if round(lv.fraction, 6) in want and lv.trials:
                total += 1
                have += lv.trials[0].generation.logprobs is not None
    return total > 0 and have >= 0.9 * total


def _standing_thresholds(values: Sequence[float], max_points: int) -> list[float]:
    """Thresholds for "feature >= t -> the SLM's answer stands" realising every split of the (label-free)
    values, thinned as `thresholds_from_scores` thins them: the lowest lets every answer stand, one above the
    highest escalates every answer."""
    return thresholds_from_scores(values, max_points)[1:] + [max(values) + 1.0]


def _threshold_label(name: str) -> Callable[[tuple[float, float]], str]:
    return lambda ts: (f"{name} threshold={ts[0]:.4g} scale={ts[1]:g}" if ts[0] <= 1.0
                       else f"{name} threshold>1 (never a hint)")


#: hint scales every shepherding threshold is replayed with (beside the calibrated one): a predicted size
#: regresses to the mean and falls short of n*, so larger scales buy longer hints; at 100 every query above the
#: threshold gets the LLM's whole answer (the predictor used as a router), so the curve reaches LLM-only accuracy
#: at threshold 0 as every router's does
SHEPHERDING_SCALES = (1.0, 2.0, 3.0, 5.0, 100.0)


def shepherding_knobs(scores: Sequence[float], threshold: float, scale: float,
                      max_points: int) -> list[tuple[float, float]]:
    """(threshold, scale) knob values for a predictor policy, as label-free as the baselines': thresholds at the
    policy's own scores on the test queries (each a distinct split: "p(hint needed) >= t -> hint"), at most
    `max_points` of them, 0 (every query hinted) and just above 1 (none, once: the scale is then moot), each
    with every scale of SHEPHERDING_SCALES; plus the calibrated (threshold, scale)."""
    cuts = [t for t in thresholds_from_scores(scores, max_points)[1:] if 0.0 < t <= 1.0] if scores else []
    thresholds = sorted({0.0, *cuts})
    scales = sorted({*SHEPHERDING_SCALES, float(scale)})
    values = {(round(t, 6), s) for t in thresholds for s in scales} | {(1.0 + 1e-6, float(scale))}
    values.add((float(threshold), float(scale)))
    return sorted(values)


def predictor_scores(predictor: Any, mode: str, sweeps: Sequence[Any],
                     items: dict[str, Any] | None = None) -> list[float]:
    """p(hint needed) of every swept query under the predictor's `mode` model (reactive: with the sweep's
    samples, compared by behaviour where `items` holds the code tasks' items, as the policy compares them).
    Label-free: it reads the queries and the SLM's samples, never a grade."""
    from ..agreement import query_text
    from ..predictor.data import samples_of

    if not sweeps:
        return []
    mode = mode if predictor.has(mode) else "proactive"
    items = items or {}
    texts = [query_text(s.messages) for s in sweeps]
    samples = [samples_of(s, items.get(str(s.item_id))) for s in sweeps] if mode == "reactive" else None
    return [float(p) for p in predictor.raw(mode, predictor.inputs(mode, texts=texts, samples=samples))["prob"]]


# ----------------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------------


def _code_items(task: str, sweeps: Sequence[Any], data: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """The code tasks' items behind `sweeps`, so that samples are compared by behaviour as the policies compare
    them; {} (syntax trees, said in the log) where the task's data cannot be read."""
    from ..predictor.data import sweep_task_items

    try:
        return sweep_task_items(task, sweeps, data)
    except (OSError, ImportError, LookupError, ValueError) as exc:
        log(f"{task}: code samples compared by syntax tree, not behaviour (task items unavailable: {exc})")
        return {}


def _train_predictor(train_sweeps: dict[str, list[Any]], out: Path, featurizer: str, seed: int,
                     source: dict[str, Any], log: Callable[[str], None], data: str | None = None):
    from ..predictor.data import examples_from_sweeps
    from ..predictor.pipeline import fit_predictor
    from ..predictor.train import TrainSettings
    from ..traces.labels import labels_from_sweeps

    examples, grid, settings = [], set(), {}
    for task, sw in train_sweeps.items():
        items = _code_items(task, sw, data, log)
        examples += examples_from_sweeps(sw, labels_from_sweeps(sw, filter=True), items)
        grid |= {float(lv.fraction) for s in sw for lv in s.levels if not lv.by_tokens}
        if sw and not settings:
            settings = dict(sw[0].sweep)
    try:
        fitted = fit_predictor(examples, TrainSettings(featurizer=featurizer, seed=seed), grid=sorted(grid),
                               sweep_settings=settings, source=source)
        predictor, report = fitted.predictor, fitted.report
    except ValueError as exc:
        log(f"predictor not trained: {exc}")
        return None, {"error": str(exc)}
    predictor.save(out)
    return predictor, report


def run_eval(cfg: EvalConfig, log: Callable[[str], None] = lambda m: None) -> EvalRun:
    from ..routers import learned as R
    from ..traces.store import TraceStore

    t0 = time.perf_counter()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    test_store = TraceStore(cfg.test, readonly=True)
    same = cfg.train is not None and Path(cfg.train).resolve() == Path(cfg.test).resolve()
    train_store = test_store if (same or cfg.train is None) else TraceStore(cfg.train, readonly=True)
    tasks = cfg.tasks or _store_tasks(test_store)
    if not tasks:
        raise ValueError(f"{cfg.test} holds no sweeps")
    train_tasks = cfg.train_tasks or (list(cfg.train_items) if cfg.train_items else
                                      (_store_tasks(train_store) if cfg.train else []))

    # -- items: test per task, train per train task (split when train and test are one store) --------
    split_note = None
    test_sweeps: dict[str, list[Any]] = {}
    train_sweeps: dict[str, list[Any]] = {}
    sweep_ids: dict[str, str] = {}
    incomplete: dict[str, int] = {}

    def finished(store: Any, t: str, sweep: str | None = None) -> list[Any]:
        # only items whose sweep unit finished: a sweep still running has half-swept items
        info = store.resolve_sweep(t, sweep)
        sw = store.item_sweeps(t, sweep=info.sweep)
        done = [s for s in sw if s.slm_greedy is not None and store.done_plan(info.sweep, s.item_id) is not None]
        if len(done) < len(sw):
            incomplete[f"{Path(store.path).name}:{t}"] = len(sw) - len(done)
        return done

    for t in tasks:
        sweep_ids[t] = test_store.resolve_sweep(t).sweep
        test_sweeps[t] = finished(test_store, t, sweep_ids[t])
    if cfg.train is not None:
        for t in train_tasks:
            train_sweeps[t] = test_sweeps[t] if (same and t in test_sweeps) else finished(train_store, t)
    if same and cfg.test_items is None:
        split_note = (f"train and test are the same store: the items of each task were split by a seeded shuffle "
                      f"(seed {cfg.split_seed}, test fraction {cfg.test_fraction}); the learned policies never saw "
                      "the test items")
        for t in set(tasks) | set(train_tasks):
            pool = test_sweeps.get(t) or train_sweeps.get(t) or []
            tr_ids, te_ids = split_items([s.item_id for s in pool], cfg.test_fraction, cfg.split_seed)
            if t in test_sweeps:
                test_sweeps[t] = [s for s in pool if s.item_id in set(te_ids)]
            if t in train_sweeps:
                train_sweeps[t] = [s for s in pool if s.item_id in set(tr_ids)]
    if cfg.limit:
        test_sweeps = {t: sw[: cfg.limit] for t, sw in test_sweeps.items()}

    def pick(pools: dict[str, list[Any]], wanted_ids: dict[str, list[str]], what: str) -> dict[str, list[Any]]:
        out_: dict[str, list[Any]] = {}
        for t, ids_ in wanted_ids.items():
            by = {s.item_id: s for s in pools.get(t, [])}
            missing = [i for i in ids_ if i not in by]
            if missing:
                raise LookupError(f"{what} items of {t} not (finished) in the store: {missing[:5]}"
                                  f"{' ...' if len(missing) > 5 else ''}")
            out_[t] = [by[i] for i in ids_]
        return out_

    if cfg.test_items is not None:  # a rerun: exactly the items the manifest lists
        test_sweeps = pick(test_sweeps, cfg.test_items, "test")
        if same and cfg.train_items:
            split_note = ("train and test are the same store; this rerun uses exactly the train / test items "
                          f"of {cfg.rerun_of or 'the manifest'}")
    if cfg.train_items is not None and cfg.train is not None:
        train_sweeps = pick(train_sweeps, cfg.train_items, "train")

    # -- learned policies -----------------------------------------------------------------------------
    featurizer = R.default_featurizer() if cfg.featurizer == "auto" else cfg.featurizer
    wanted = cfg.policies or list(ALL_POLICIES)
    scorers: dict[str, Any] = {}
    artifacts: dict[str, Any] = {}
    train_rows = [r for sw in train_sweeps.values() for r in R.rows_from_sweeps(sw)]
    if cfg.baselines:
        for kind in LEARNED:
            p = Path(cfg.baselines) / kind
            if kind in wanted and p.is_dir():
                scorers[kind] = R.load_baseline(p)
    elif train_rows:
        for kind in LEARNED:
            if kind not in wanted:
                continue
            log(f"training {kind} on {len(train_rows)} items ({featurizer} features)")
            try:
                sc = R.fit_baseline(kind, train_rows, featurizer=featurizer, seed=cfg.seed,
                                    source={"store": cfg.train, "tasks": train_tasks})
            except ValueError as exc:
                log(f"{kind} not trained: {exc}")
                artifacts[kind] = {"error": str(exc)}
                continue
            sc.save(out / "artifacts" / kind)
            scorers[kind] = sc
    for kind, sc in scorers.items():
        artifacts[kind] = sc.describe() | {"training": {k: v for k, v in sc.training.items() if k != "item_ids"}}

    predictor = None
    if "proactive" in wanted or "reactive" in wanted:
        if cfg.predictor:
            from ..predictor.predictor import load_predictor

            predictor = load_predictor(cfg.predictor)
        elif train_sweeps:
            log(f"training the shepherding predictor ({featurizer} features)")
            predictor, rep = _train_predictor(train_sweeps, out / "artifacts" / "predictor", featurizer, cfg.seed,
                                              {"store": cfg.train, "tasks": train_tasks}, log, cfg.data)
            if predictor is None:
                artifacts["predictor"] = rep
        if predictor is not None:
            artifacts["predictor"] = {"artifact": predictor.path,
                                      "fingerprint": R.artifact_fingerprint(predictor.path) if predictor.path else None,
                                      "featurizer": predictor.featurizer.spec(),
                                      "training_fingerprint": predictor.manifest.get("training", {}).get("fingerprint"),
                                      "rules": {m: r.__dict__ for m, r in predictor.rules.items()}}

    # -- replay ---------------------------------------------------------------------------------------
    scens = scenarios(cfg.llm_price, cfg.slm_price)
    results = []
    for t in tasks:
        sw = test_sweeps.get(t) or []
        if not sw:
            log(f"{t}: no finished swept items in {cfg.test}; skipped")
            continue
        task = _load_task(t, cfg.data)
        items = _code_items(t, sw, cfg.data, log) if predictor is not None else {}
        fams = build_families(t, sw, scorers=scorers, predictor=predictor, max_points=cfg.max_points,
                              wanted=wanted, items=items)
        log(f"{t}: replaying {sum(len(f.values) for f in fams)} operating points of {len(fams)} policies "
            f"on {len(sw)} items")
        res = evaluate_task(task, test_store, sw, fams, sweep=sweep_ids[t], scens=scens, n_boot=cfg.n_boot,
                            seed=cfg.seed)
        if split_note:
            res.notes.insert(0, split_note)
        for key, n in incomplete.items():
            res.notes.append(f"{n} item(s) of {key} were left out: their sweep had not finished")
        results.append(res)

    # -- manifest -------------------------------------------------------------------------------------
    models = sorted({(i.slm, i.llm) for i in test_store.sweeps() if i.task in tasks})
    manifest = {
        "format": "shepherd-eval", "version": 1,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": cfg.argv, "config": cfg.to_dict(),
        "rerun": "shepherd eval --rerun manifest.json --out DIR (the same config and exactly these items)",
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "shepherd": _version(), "numpy": _mod_version("numpy"),
                        "scikit-learn": _mod_version("sklearn")},
        "models": [{"slm": s, "llm": l_} for s, l_ in models],
        "prices": [s.to_dict() for s in scens],
        "test": {"store": _store_info(cfg.test, test_store, tasks),
                 "tasks": {t: {"sweep": sweep_ids[t], "items": [s.item_id for s in test_sweeps.get(t, [])],
                               "fingerprint": sweeps_fingerprint(test_sweeps.get(t, []))} for t in tasks}},
        "train": None if cfg.train is None else {
            "store": _store_info(cfg.train, train_store, train_tasks),
            "same_store_split": split_note,
            "tasks": {t: {"items": [s.item_id for s in sw], "fingerprint": sweeps_fingerprint(sw)}
                      for t, sw in train_sweeps.items()}},
        "featurizer": featurizer,
        "incomplete_items_left_out": incomplete,
        "artifacts": artifacts,
        "policies": {t.task: [{"family": f.name, "group": f.group, "knob": f.knob, "note": f.note,
                               "values": [p.knob for p in f.points],
                               "settings": [p.policy for p in f.points]} for f in t.families] for t in results},
        "metrics": {"bootstrap": {"n_boot": cfg.n_boot, "level": 0.95, "seed": cfg.seed},
                    "apgr_cpt_x": "normalised cost (C - C_slm)/(C_llm - C_slm) on [0, 1], ends filled by mixing "
                                  "with SLM-only / LLM-only", "aiq_cost_range": "[0, LLM-only cost per query]"},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    if cfg.rerun_of:
        manifest["rerun_check"] = _compare_with(cfg.rerun_of, manifest)
        for r in results:
            r.notes.insert(0, "rerun of " + cfg.rerun_of + ": " + manifest["rerun_check"]["summary"])
    return EvalRun(cfg, results, manifest, scens)


def _compare_with(path: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Fingerprints of this run against the manifest it repeats: the traces read and every artifact."""
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return {"summary": f"could not read {path}: {exc}"}
    checks: dict[str, bool] = {}
    for side in ("test", "train"):
        for t, v in ((old.get(side) or {}).get("tasks") or {}).items():
            now = ((manifest.get(side) or {}).get("tasks") or {}).get(t, {})
            checks[f"{side}:{t}"] = now.get("fingerprint") == v.get("fingerprint")
    for k, a in (old.get("artifacts") or {}).items():
        if isinstance(a, dict) and a.get("fingerprint"):
            checks[f"artifact:{k}"] = (manifest["artifacts"].get(k) or {}).get("fingerprint") == a["fingerprint"]
    bad = [k for k, ok in checks.items() if not ok]
    summary = ("every trace and artifact fingerprint matches" if not bad else
               f"fingerprints differ for {', '.join(bad)}")
    return {"of": path, "checks": checks, "summary": summary}


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("llm-shepherd")
    except Exception:  # noqa: BLE001
        return "unknown"


def _mod_version(mod: str) -> str | None:
    try:
        m = __import__(mod)
        return getattr(m, "__version__", None)
    except ImportError:
        return None
