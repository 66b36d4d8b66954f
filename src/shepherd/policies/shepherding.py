"""The shepherding policies: a trained predictor decides, per query, whether a hint is needed and how long.

- `proactive`: featurize the query, predict; below the threshold the SLM answers alone, else buy a hint of
  the predicted size (or, past the cap, let the LLM answer in full).
- `reactive`: first sample the SLM k times (k=3, temperature 0.7: the sweep's sample requests, so replay
  finds them); when at least `agree` of them (default: all k) give the same answer, answer with the first
  of those. Otherwise predict
  from the query *and* the samples' features (agreement, entropy, lengths, log-probabilities) and
  rerun the SLM with the predicted hint. The samples are returned in `Decision.spent`, so they are paid
  for and counted. `consensus_skip=False` always goes to the predictor.

- `reactive-fixed`: reactive without a predictor, the ablation that tells what the predictor adds: the
  same samples and agreement test, and every disagreeing query gets the same hint fraction f of the LLM's
  answer (its length from the sweep in replay, `expected_tokens` live). No training, one knob.

All only call `ctx.slm` / `ctx.llm`, so they run live, in sweeps and in replay alike. Settings (config
`[policy] settings = {...}` or `make_policy(name, **settings)`):
  artifact      a predictor directory from `shepherd train` (default: $SHEPHERD_PREDICTOR)
  threshold, scale, cap, min_tokens, snap_to_grid, length   override the artifact's decision rule
  reactive only: samples, agree, temperature, seed, consensus_skip, task (whose extractor reads the samples'
  answers)
  reactive-fixed: fraction, lengths, expected_tokens, samples, agree, temperature, seed, task
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from .base import Decision, Policy, PolicyContext, task_for, task_name_of
from .registry import register_policy

ARTIFACT_ENV = "SHEPHERD_PREDICTOR"


def _resolve(artifact: Any):
    from ..predictor.predictor import Predictor, load_predictor

    if isinstance(artifact, Predictor):
        return artifact
    if artifact is None:
        artifact = os.environ.get(ARTIFACT_ENV)
        if not artifact:
            raise ValueError("this policy needs a trained predictor: pass artifact=DIR (in a config file: "
                             f"policy.settings.artifact = \"DIR\") or set ${ARTIFACT_ENV}; train one with "
                             "`shepherd train --store FILE --task TASK --out DIR`")
    return load_predictor(Path(artifact))


class _PredictorPolicy(Policy):
    mode = "proactive"

    def __init__(self, artifact: Any = None, *, threshold: float | None = None, scale: float | None = None,
                 cap: float | None = None, min_tokens: int | None = None, snap_to_grid: bool | None = None,
                 length: str | None = None) -> None:
        self.predictor = _resolve(artifact)
        self.artifact = self.predictor.path
        self.overrides = {"threshold": threshold, "scale": scale, "cap": cap, "min_tokens": min_tokens,
                          "snap_to_grid": snap_to_grid, "length": length}
        self.model_mode = self.mode if self.predictor.has(self.mode) else "proactive"
        self.rule = self.predictor.rules[self.model_mode].with_overrides(**self.overrides)

    async def _predict(self, text: str, samples, mode: str, budget: int | None = None):
        """Featurize + predict. Cheap featurizers run inline (well under a millisecond); neural ones run
        in a worker thread so that a server's event loop keeps serving other requests meanwhile. `budget`:
        the request's max_tokens, which caps a hint predicted in tokens (log_tokens size head)."""
        if getattr(self.predictor.featurizer, "heavy", False):
            return await asyncio.to_thread(self.predictor.decide, text, samples, mode=mode, rule=self.rule,
                                           budget=budget)
        return self.predictor.decide(text, samples, mode=mode, rule=self.rule, budget=budget)

    def _decision(self, pred, spent=None, extra: dict[str, Any] | None = None) -> Decision:
        details = {"predictor": self.model_mode, **pred.details(), **(extra or {})}
        if pred.kind == "slm":
            return Decision("slm", reason=pred.reason, spent=spent or [], details=details)
        if pred.kind == "llm":
            return Decision("llm", reason=pred.reason, spent=spent or [], details=details)
        return Decision("hint", hint_tokens=pred.hint_tokens, reason=pred.reason, spent=spent or [],
                        details=details)

    def describe(self) -> dict[str, Any]:
        m = self.predictor.manifest
        return {"name": self.name, "artifact": self.artifact, "model": self.model_mode,
                "featurizer": m.get("featurizer", {}).get("name"),
                "fingerprint": m.get("training", {}).get("fingerprint"),
                "rule": self.rule.__dict__.copy()}


class ProactivePolicy(_PredictorPolicy):
    """Predict from the query alone, then hint or not; the SLM answers."""

    name = "proactive"
    mode = "proactive"

    async def decide(self, ctx: PolicyContext) -> Decision:
        from ..agreement import query_text

        text = query_text(ctx.request.messages)
        pred = await self._predict(text, None, "proactive", ctx.request.max_tokens)
        return self._decision(pred)


class _SamplesFirst:
    """Draw the SLM's samples (the sweep's sample requests, so replay finds them) and test agreement."""

    samples: int
    temperature: float
    seed: int | None
    task: str | None

    def _sampling(self, samples: int, temperature: float, seed: int | None, task: str | None,
                  run_live_code: bool = True, agree: int | None = None, greedy_voter: bool = False) -> None:
        from ..agreement import agreeing_count

        if samples < 1:
            raise ValueError(f"{self.name} needs samples >= 1")  # type: ignore[attr-defined]
        if temperature <= 0:
            raise ValueError(f"{self.name} samples need temperature > 0")  # type: ignore[attr-defined]
        self.samples, self.temperature, self.seed, self.task = int(samples), float(temperature), seed, task
        #: the SLM's greedy answer votes too ("3 of 4" = 3 samples + the greedy answer); it is the answer a
        #: cascade pays for anyway, and a sweep stores it as its no-hint level
        self.greedy_voter = bool(greedy_voter)
        #: how many voters must give the same answer for the SLM to answer ("k of m"; default: all)
        self.agree = agreeing_count(agree, self.samples + self.greedy_voter, self.name)  # type: ignore[attr-defined]
        #: run a live code query's samples on the example calls it shows (in the sandbox); False: syntax trees
        self.run_live_code = bool(run_live_code)

    def sample_requests(self, ctx: PolicyContext):
        """The sweep's sample request: the query's request at the sampling temperature, seeds seed, seed+1..."""
        seed0 = self.seed if self.seed is not None else (ctx.request.seed or 0)
        return replace(ctx.request, temperature=self.temperature, seed=seed0)

    def _task_for(self, item: Any):
        return task_for(self.task or task_name_of(item))

    async def _extract(self, ctx: PolicyContext, texts: list[str]) -> tuple[list[str | None], str | None]:
        """Each sample's agreement key and how they were compared (shepherd/agreement.py); off the event
        loop, since code runs."""
        from ..agreement import agreement_basis, agreement_key, live_prompt

        task = self._task_for(ctx.item) if ctx.item is not None else None
        prompt = live_prompt(ctx, self.run_live_code)
        keys = await asyncio.to_thread(lambda: [agreement_key(task, ctx.item, t, prompt) for t in texts])
        return keys, agreement_basis(task, ctx.item, prompt, texts[0]) if texts else None

    async def _draw(self, ctx: PolicyContext):
        """The samples, what they cost, their features, and the first sample of the answer at least `agree`
        of them give (else None). A sample without an agreement key agrees with no one."""
        from ..predictor.features import SampleFeaturizer, SampleInfo

        gens = list(await ctx.slm.agenerate(self.sample_requests(ctx), n=self.samples))
        if self.greedy_voter:
            gens = list(await ctx.slm.agenerate(ctx.request)) + gens
        spent = [("slm", g) for g in gens]
        answers, basis = await self._extract(ctx, [g.text for g in gens])
        voters = [SampleInfo.from_generation(g, answer=a) for g, a in zip(gens, answers)]
        infos = voters[1:] if self.greedy_voter else voters  # the predictor's features: the samples, as trained
        consensus, top = SampleFeaturizer.consensus(voters)
        agree = {"samples": len(gens), "agreeing": top, "agree": self.agree, "consensus": consensus,
                 "compared_by": basis}
        enough = consensus is not None and top >= self.agree
        first = next((g for g, si in zip(gens, voters) if si.answer == consensus), None) if enough else None
        return spent, infos, agree, first


class ReactivePolicy(_SamplesFirst, _PredictorPolicy):
    """Sample the SLM first; agreeing samples answer, disagreeing ones go to the predictor."""

    name = "reactive"
    mode = "reactive"

    def __init__(self, artifact: Any = None, *, samples: int | None = None, agree: int | None = None,
                 temperature: float | None = None, seed: int | None = None, consensus_skip: bool = True,
                 task: str | None = None, run_live_code: bool = True, greedy_voter: bool = False,
                 **rule: Any) -> None:
        super().__init__(artifact, **rule)
        sweep = self.predictor.manifest.get("sweep_settings", {}) or {}
        self._sampling(int(samples if samples is not None else (sweep.get("samples") or 3)),
                       float(temperature if temperature is not None else (sweep.get("temperature") or 0.7)),
                       seed, task, run_live_code, agree, greedy_voter)
        self.consensus_skip = bool(consensus_skip)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"samples": self.samples, "agree": self.agree, "greedy_voter": self.greedy_voter,
                  "temperature": self.temperature, "seed": self.seed,
                  "consensus_skip": self.consensus_skip, "task": self.task, "run_live_code": self.run_live_code})
        return d

    async def decide(self, ctx: PolicyContext) -> Decision:
        from ..agreement import query_text

        spent, infos, agree, first = await self._draw(ctx)
        if self.consensus_skip and first is not None:
            return Decision("slm", reason=f"reactive: {agree['agreeing']} of {len(spent)} SLM samples agree on "
                            f"{agree['consensus']!r}",
                            spent=spent, answer_text=first.text, details={**agree, "consensus_skip": True})
        text = query_text(ctx.request.messages)
        if self.model_mode == "reactive":
            pred = await self._predict(text, infos, "reactive", ctx.request.max_tokens)
        else:  # an artifact trained without samples: the query-only model decides
            pred = await self._predict(text, None, "proactive", ctx.request.max_tokens)
        return self._decision(pred, spent=spent, extra={**agree, "consensus_skip": False})


class ReactiveFixedPolicy(_SamplesFirst, Policy):
    """Reactive shepherding with a constant instead of a predictor: agreeing samples answer, every other
    query gets a hint of `fraction` of the LLM's answer (1.0: the LLM answers; that is ABC k of k)."""

    name = "reactive-fixed"

    def __init__(self, fraction: float = 0.3, *, lengths: dict[str, int] | None = None, expected_tokens: int = 256,
                 samples: int = 3, agree: int | None = None, temperature: float = 0.7, seed: int | None = None,
                 task: str | None = None, run_live_code: bool = True, greedy_voter: bool = False):
        from .baselines import FixedRatio

        self.hint = FixedRatio(fraction, lengths=lengths, expected_tokens=expected_tokens)
        self._sampling(samples, temperature, seed, task, run_live_code, agree, greedy_voter)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fraction": self.hint.fraction, "expected_tokens": self.hint.expected_tokens,
                "lengths_from_sweep": bool(self.hint.lengths), "samples": self.samples, "agree": self.agree,
                "greedy_voter": self.greedy_voter, "temperature": self.temperature, "seed": self.seed, "task": self.task,
                "run_live_code": self.run_live_code}

    async def decide(self, ctx: PolicyContext) -> Decision:
        spent, _, agree, first = await self._draw(ctx)
        if first is not None:
            return Decision("slm", reason=f"reactive-fixed: {agree['agreeing']} of {len(spent)} SLM samples "
                            f"agree on {agree['consensus']!r}", spent=spent, answer_text=first.text,
                            details={**agree, "consensus_skip": True})
        d = await self.hint.decide(ctx)
        return Decision(d.kind, hint_tokens=d.hint_tokens, reason=f"reactive-fixed: samples disagree; {d.reason}",
                        spent=spent, details={**agree, **d.details, "consensus_skip": False})


register_policy("proactive", ProactivePolicy)
register_policy("reactive", ReactivePolicy)
register_policy("reactive-fixed", ReactiveFixedPolicy)
