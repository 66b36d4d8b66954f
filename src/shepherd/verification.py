"""AutoMix-style self-verification (arXiv 2310.12963): the SLM is asked whether its own answer is correct.

One home for the verification request and for reading P(yes) off it, shared by the `automix` policy (live and
in replay), `shepherd sweep verify` (which adds the verifications to a swept store) and the packed traces
(which rebuild the request from the item's question and the SLM's stored answer). The request is a plain
greedy generation, so the trace store addresses it by content like any other call, and replay finds it.

Few-shot-free, as the study asks: one user turn holding the question, the SLM's answer and "Is this answer
correct? Answer Yes or No.", one output token. P(yes) is read from that token's log-probability summary
(`TokenLogprobs`: the chosen token's log-probability and the top-1 minus top-2 margin), so nothing beyond
what a backend already records is needed:

- `top2` (default): the greedy token is the most likely one; if it is Yes, P(yes) / (P(yes) + P(runner-up))
  = sigmoid(margin), and 1 - that if it is No. This is P(yes) / (P(yes) + P(no)) exactly when the runner-up
  is the other answer word, which it was on every probe of the local 0.5B model (Yes and No held about 95%
  of the mass); otherwise it bounds it (a lower bound after Yes, an upper one after No).
- `chosen`: the two-way approximation P(yes) = exp(logprob) when the token is Yes, else 1 - exp(logprob)
  (the mass of every other token counted as Yes after a No).

A first token that is neither Yes nor No gives None (the policy then escalates); a backend without
log-probabilities gives 1.0 or 0.0 from the word alone.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

from .models.base import GenerationRequest

if TYPE_CHECKING:  # pragma: no cover
    from .models.base import Backend, Generation

#: the instruction after the question and the answer (AutoMix's verification, without its few-shot examples)
VERIFY_QUESTION = "Is this answer correct? Answer Yes or No."
#: names the prompt form; stored with each verification row, so traces made with another form are not read
#: as this one (their request keys would differ, and replay would miss them)
VERIFY_FORMAT = "automix-v1"
#: how P(yes) is read from the verification token
ESTIMATES = ("top2", "chosen")

_WORD = re.compile(r"\s*(yes|no)\b", re.IGNORECASE)


def verification_request(request: GenerationRequest, answer: str) -> GenerationRequest:
    """The greedy one-token request asking the model whether `answer` (its continuation of `request`) is right.

    Built only from the request's user turns (as `shepherd.agreement.query_text` joins them) and the answer,
    so packed traces can rebuild it from the task data and the stored answer."""
    from .agreement import query_text

    question = query_text(request.messages)
    content = f"Question:\n{question}\n\nAnswer:\n{request.prefix}{answer}\n\n{VERIFY_QUESTION}"
    return GenerationRequest.create([{"role": "user", "content": content}], max_tokens=1, temperature=0.0,
                                    seed=request.seed)


def verdict(gen: Generation) -> str | None:
    """"yes", "no", or None when the first word is neither."""
    m = _WORD.match(gen.text or "")
    return m.group(1).lower() if m else None


def p_yes(gen: Generation, estimate: str = "top2") -> float | None:
    """P(the answer is correct) from a verification generation (see the module's note on the estimates)."""
    if estimate not in ESTIMATES:
        raise ValueError(f"unknown P(yes) estimate {estimate!r}; known: {', '.join(ESTIMATES)}")
    word = verdict(gen)
    if word is None:
        return None
    lp = gen.logprobs
    if lp is None or not len(lp):
        return 1.0 if word == "yes" else 0.0
    if estimate == "top2":
        m = max(-60.0, min(60.0, float(lp.margins[0])))
        p = 1.0 / (1.0 + math.exp(-m))
    else:
        p = min(1.0, math.exp(float(lp.logprobs[0])))
    return p if word == "yes" else 1.0 - p


async def verify(slm: Backend, request: GenerationRequest, answer: str) -> Generation:
    """Ask `slm` (a live backend, or the trace store's handle on it) to verify its `answer` to `request`."""
    (gen,) = await slm.agenerate(verification_request(request, answer))
    return gen


def verification_values(sweeps: Any, estimate: str = "top2") -> list[float]:
    """P(yes) of each swept item's stored verification (`ItemSweep.verification`); empty unless every item
    has one (replay of the `automix` policy would otherwise miss a generation)."""
    values = []
    for s in sweeps:
        v = getattr(s, "verification", None)
        if v is None:
            return []
        p = p_yes(v.generation, estimate)
        if p is not None:
            values.append(p)
    return values if len(values) >= 2 else []


__all__ = ["ESTIMATES", "VERIFY_FORMAT", "VERIFY_QUESTION", "p_yes", "verdict", "verification_request",
           "verification_values", "verify"]
