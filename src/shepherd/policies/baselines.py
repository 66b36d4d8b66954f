"""The baselines a shepherding result must beat, written as ordinary policies.

Each one only calls `ctx.slm` / `ctx.llm`, so it runs live, in sweeps and in replay alike, and each has
one knob that traces a cost-accuracy curve:

routers (decide from the query alone: SLM or LLM; knob `threshold`, or `llm_fraction` calibrated on
out-of-fold training scores as RouteLLM's `calibrate_threshold` does):
  routellm-classifier   RouteLLM's classifier router: a logistic classifier on a query embedding
                        (the predictor's featurizers, `minilm` by default) predicting "the SLM alone is
                        wrong". RouteLLM fine-tunes BERT; a linear head on a frozen embedding is the
                        small-data version of the same idea, stated as such.
  routellm-mf           RouteLLM's matrix-factorisation router: the bilinear score
                        w . ((v_llm - v_slm) * (W x_q)) + b, P(LLM needed) = sigmoid(score), trained
                        with Adam on the same label. RouteLLM trains it on pairwise preferences; our
                        label is per query (the SLM alone correct or not), as the issue asks.
  graphrouter           GraphRouter (Feng et al., 2024), simplified and said so: the heterogeneous graph
                        is kept (query nodes joined to their k nearest training queries by embedding
                        similarity, to their task node, and to each model by a correctness edge), the GNN
                        is replaced by one round of similarity-weighted mean aggregation of the
                        correctness edges (query -> neighbour queries -> model; query -> task -> model)
                        and a logistic edge predictor over those messages and the model's identity. The
                        router picks the LLM when P(LLM right) - P(SLM right) > threshold (GraphRouter's
                        performance - lambda * cost reward with two models).
  knn                   k-nearest-neighbour router (tuned kNN routing matches or beats learned routers,
                        arXiv 2505.12601): the similarity-weighted share of the query's k nearest training
                        queries (cosine on the same embedding) on which the SLM alone was wrong; k chosen by
                        leave-one-out AUC on the training items only (`settings["k_chosen"]`).
cascades (the SLM answers first and is paid for; the answer goes in Decision.spent):
  frugalgpt             FrugalGPT: a learned scorer of (query, SLM answer) -> P(answer right) (featurized
                        text + finish/length/log-prob); below `threshold` the query escalates to the LLM.
  abc                   Agreement-based cascading: k SLM samples (the sweep's sample requests, so replay
                        finds them); when fewer than `agree` of them give the same answer, escalate.
references:
  random-mix            the LLM with probability p (seeded per query), else the SLM.
  fixed-ratio           the same hint fraction f of the LLM's answer for every query (n = f * L, with L
                        from the sweep when `lengths` are given, else `expected_tokens`).
  (slm-only, llm-only and fixed-hint live in simple.py; the oracles in shepherd.policies.oracles.)

The learned scorers (their training, artifacts and fingerprints) live in `shepherd.routers`; this module
holds the policies only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import Counter
from dataclasses import replace
from typing import Any, ClassVar

from ..routers.learned import Scorer, TrainingRow, load_baseline
from .base import Decision, Policy, PolicyContext, task_for, task_name_of
from .registry import register_policy


def _resolve_scorer(artifact: Any, kind: str) -> Scorer:
    if isinstance(artifact, Scorer):
        sc = artifact
    elif artifact is None:
        raise ValueError(f"policy {kind!r} needs a trained baseline: artifact=DIR (train one with "
                         "`shepherd eval --train STORE ...`, which saves them) or a fitted Scorer")
    else:
        sc = load_baseline(artifact)
    if sc.kind != kind:
        raise ValueError(f"artifact {getattr(sc, 'path', None)!r} is a {sc.kind!r} baseline, not {kind!r}")
    return sc


class _ThresholdPolicy(Policy):
    """A learned baseline with one knob: `threshold` on its need score, or `llm_fraction` (the share of
    training queries that would go to the LLM), from which the threshold is calibrated."""

    kind: ClassVar[str] = ""

    def __init__(self, artifact: Any = None, *, threshold: float | None = None,
                 llm_fraction: float | None = None) -> None:
        if threshold is not None and llm_fraction is not None:
            raise ValueError("give threshold= or llm_fraction=, not both")
        self.scorer = _resolve_scorer(artifact, self.kind)
        self.llm_fraction = llm_fraction
        if threshold is not None:
            self.threshold = float(threshold)
        elif llm_fraction is not None:
            self.threshold = self.scorer.threshold_for(float(llm_fraction))
        else:
            self.threshold = float(self.scorer.default_threshold)

    def with_threshold(self, threshold: float) -> _ThresholdPolicy:
        """A copy at another knob value that shares the fitted model (and its embedding cache)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.threshold = float(threshold)
        other.llm_fraction = None
        return other

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "llm_fraction": self.llm_fraction,
                **{f"baseline_{k}": v for k, v in self.scorer.describe().items()}}


def _task_name(ctx: PolicyContext) -> str | None:
    return task_name_of(ctx.item)


class _Router(_ThresholdPolicy):
    async def decide(self, ctx: PolicyContext) -> Decision:
        from ..agreement import query_text

        row = TrainingRow(item_id="", task=_task_name(ctx) or "", query=query_text(ctx.request.messages),
                          slm_correct=False, llm_correct=False)
        need = self.scorer.needs([row])[0]
        details = {"score": need, "threshold": self.threshold}
        if need > self.threshold:
            return Decision("llm", reason=f"{self.name}: score {need:.3f} > {self.threshold:.3f}", details=details)
        return Decision("slm", reason=f"{self.name}: score {need:.3f} <= {self.threshold:.3f}", details=details)


class RouteLLMClassifier(_Router):
    name = "routellm-classifier"
    kind = "routellm-classifier"


class RouteLLMMF(_Router):
    name = "routellm-mf"
    kind = "routellm-mf"


class GraphRouter(_Router):
    name = "graphrouter"
    kind = "graphrouter"


class KNNRouter(_Router):
    name = "knn"
    kind = "knn"


class FrugalGPT(_ThresholdPolicy):
    """The SLM answers first (paid); the scorer's P(right) below 1 - threshold escalates to the LLM.
    (need = 1 - P(right) > threshold, the same direction as the routers' knob.)"""

    name = "frugalgpt"
    kind = "frugalgpt"

    async def decide(self, ctx: PolicyContext) -> Decision:
        from ..agreement import query_text

        (gen,) = await ctx.slm.agenerate(ctx.request)
        p_right = self.scorer.score_answer(query_text(ctx.request.messages), gen)
        need = 1.0 - p_right
        details = {"score": need, "p_right": p_right, "threshold": self.threshold}
        spent = [("slm", gen)]
        if need > self.threshold:
            return Decision("llm", reason=f"frugalgpt: P(SLM answer right) {p_right:.3f} too low, escalate",
                            spent=spent, details=details)
        return Decision("slm", reason=f"frugalgpt: P(SLM answer right) {p_right:.3f}, keep it", spent=spent,
                        answer_text=gen.text, details=details)


# ----------------------------------------------------------------------------------------------------
# agreement-based cascading
# ----------------------------------------------------------------------------------------------------



class ABC(Policy):
    """Agreement-based cascading (Kolawole et al., 2024) with one tier below the LLM: k SLM samples;
    if the largest group of equal answers counts at least `agree` of them ("2 of 3"), answer with that
    group's first sample, else escalate to the LLM (paying for the samples and the LLM). The knob is a whole
    count, never a share: no rounding can move it (a share of 0.6667 once silently meant 3 of 3).

    Answers are compared as every agreement-based policy compares them (`shepherd/agreement.py`): the
    final answer for math, what the program computes on the prompt's example calls for code. The samples
    are the sweep's sample requests
    (`temperature`, seeds seed, seed+1, ...), so replay finds them.
    """

    name = "abc"

    def __init__(self, k: int = 3, agree: int | None = None, temperature: float = 0.7, seed: int | None = None,
                 task: str | None = None, run_live_code: bool = True, greedy_voter: bool = False) -> None:
        from ..agreement import agreeing_count

        if k < 1:
            raise ValueError("abc needs k >= 1")
        if temperature <= 0:
            raise ValueError("abc samples need temperature > 0")
        self.k, self.temperature, self.seed, self.task = int(k), float(temperature), seed, task
        #: the SLM's greedy answer votes as one more sample ("3 of 4" = 3 samples + the greedy answer)
        self.greedy_voter = bool(greedy_voter)
        #: how many of the voters must give the same answer for the SLM to answer (default: all)
        self.agree = agreeing_count(agree, self.k + self.greedy_voter, "abc")
        #: run a live code query's samples on the example calls it shows (in the sandbox); False: syntax trees
        self.run_live_code = bool(run_live_code)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "agree": self.agree, "greedy_voter": self.greedy_voter,
                "temperature": self.temperature, "seed": self.seed, "task": self.task,
                "run_live_code": self.run_live_code}

    def _task(self, ctx: PolicyContext):
        return task_for(self.task or _task_name(ctx))

    def answer_key(self, text: str, ctx: PolicyContext) -> str | None:
        from ..agreement import agreement_key, live_prompt

        return agreement_key(self._task(ctx), ctx.item, text, live_prompt(ctx, self.run_live_code))

    async def decide(self, ctx: PolicyContext) -> Decision:
        from ..agreement import agreement_basis, live_prompt

        seed0 = self.seed if self.seed is not None else (ctx.request.seed or 0)
        # one request per seed (seed0, seed0+1, ...): the sweep's sample keys, whatever a backend does with n>1
        reqs = [replace(ctx.request, temperature=self.temperature, seed=seed0 + i) for i in range(self.k)]
        if self.greedy_voter:
            reqs = [ctx.request, *reqs]
        gens = [g for batch in await asyncio.gather(*(ctx.slm.agenerate(r) for r in reqs)) for g in batch]
        spent = [("slm", g) for g in gens]
        keys = await asyncio.to_thread(lambda: [self.answer_key(g.text, ctx) for g in gens])  # code runs
        counts = Counter(k for k in keys if k is not None)
        top_key, top = (None, 0)
        if counts:
            best = max(counts.values())
            top_key = next(k for k in keys if k is not None and counts[k] == best)
            top = best
        voters = len(gens)
        who = f"{voters} SLM answers (greedy + {self.k} samples)" if self.greedy_voter else f"{self.k} SLM samples"
        details = {"k": self.k, "voters": voters, "agreeing": top, "agree": self.agree,
                   "compared_by": agreement_basis(self._task(ctx), ctx.item, live_prompt(ctx, self.run_live_code),
                                                  gens[0].text) if gens else None}
        if top_key is not None and top >= self.agree:
            first = next(g for g, k in zip(gens, keys) if k == top_key)
            return Decision("slm", reason=f"abc: {top} of {who} agree (needs {self.agree})",
                            spent=spent, answer_text=first.text, details=details)
        return Decision("llm", reason=f"abc: only {top} of {who} agree (needs {self.agree}), "
                        "escalate", spent=spent, details=details)


# ----------------------------------------------------------------------------------------------------
# simple references
# ----------------------------------------------------------------------------------------------------


class RandomMix(Policy):
    """The LLM for a share `p` of queries, picked by a seeded hash of the query (so replay is
    deterministic and the same query always gets the same answer), else the SLM."""

    name = "random-mix"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError("p must be in [0, 1]")
        self.p, self.seed = float(p), int(seed)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "p": self.p, "seed": self.seed}

    def draw(self, ctx: PolicyContext) -> float:
        blob = json.dumps([self.seed, list(map(list, ctx.request.messages))], ensure_ascii=False)
        return int(hashlib.sha256(blob.encode("utf-8")).hexdigest()[:13], 16) / float(16 ** 13)

    async def decide(self, ctx: PolicyContext) -> Decision:
        u = self.draw(ctx)
        if u < self.p:
            return Decision("llm", reason=f"random-mix: draw {u:.3f} < p={self.p}", details={"draw": u})
        return Decision("slm", reason=f"random-mix: draw {u:.3f} >= p={self.p}", details={"draw": u})


class FixedRatio(Policy):
    """The same hint fraction `fraction` of the LLM's answer for every query: n = round(f * L).

    L is the item's full LLM answer length when `lengths` (item id -> L, from a sweep) knows the item
    — the paper's fixed-ratio baseline, which needs the sweep — else `expected_tokens` (live)."""

    name = "fixed-ratio"

    def __init__(self, fraction: float = 0.3, lengths: dict[str, int] | None = None,
                 expected_tokens: int = 256) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("fraction must be in [0, 1]")
        if expected_tokens <= 0:
            raise ValueError("expected_tokens must be > 0")
        self.fraction, self.lengths, self.expected_tokens = float(fraction), dict(lengths or {}), int(expected_tokens)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fraction": self.fraction, "expected_tokens": self.expected_tokens,
                "lengths_from_sweep": bool(self.lengths)}

    async def decide(self, ctx: PolicyContext) -> Decision:
        iid = str(getattr(ctx.item, "id", "")) if ctx.item is not None else ""
        L = self.lengths.get(iid)
        source = "sweep" if L else "expected"
        L = L or self.expected_tokens
        if self.fraction >= 1.0:
            return Decision("llm", reason="fixed-ratio: a hint of 100% is the LLM's whole answer")
        n = math.floor(self.fraction * L + 0.5)
        return Decision("hint", hint_tokens=n, reason=f"fixed-ratio: {self.fraction:.0%} of L={L} ({source})",
                        details={"L": L, "L_source": source})


for _cls in (RouteLLMClassifier, RouteLLMMF, GraphRouter, KNNRouter, FrugalGPT, ABC, RandomMix, FixedRatio):
    register_policy(_cls.name, _cls)
