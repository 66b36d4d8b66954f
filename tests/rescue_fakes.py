"""A scripted SLM that is unsure of part of its answer (with token log-probabilities), and the LLM beside it:
the rescue tests' models, shared by the policy and the server tests. Scripted: one word = one token."""

from __future__ import annotations

import re

from shepherd.models.base import Generation, TokenLogprobs
from shepherd.models.scripted import ScriptedBackend

SLM_TEXT = "Alice has 3 apples.\nShe buys 99 more so 3 + 99 = 7.\nThe answer is 7."
DOUBTFUL = "99"  # the SLM is unsure of the words containing this


class UnsureSLM(ScriptedBackend):
    """Answers SLM_TEXT from scratch; continues any prefix with a confident fixed ending. Its log-probabilities
    are -0.05 a word, -4 on doubtful words (and on every word with `always_doubt`)."""

    def __init__(self, always_doubt: bool = False, **kw):
        super().__init__(self.script, model_id="slm", verbatim=True, **kw)
        self.always_doubt = always_doubt

    @staticmethod
    def script(request):
        return SLM_TEXT if not request.prefix else request.prefix + " so the total is 102.\nThe answer is 102."

    async def agenerate(self, request, n=1):
        (gen,) = await super().agenerate(request, n)
        found = list(re.finditer(r"\S+", gen.text))  # the scripted tokens: whitespace-separated words
        words, ends = [m.group() for m in found], [m.end() for m in found]
        lps = [-4.0 if (self.always_doubt or DOUBTFUL in w) else -0.05 for w in words]
        lp = TokenLogprobs(lps, [0.1] * len(lps), [1.0] * len(lps), ends)
        return [Generation(gen.text, gen.prompt_tokens, gen.completion_tokens, gen.finish_reason, gen.latency_s,
                           gen.model, logprobs=lp)]


def llm(**kw):
    return ScriptedBackend("Alice has 3 apples.\nShe buys 99 more so she has 102.\nThe answer is 102.",
                           model_id="llm", **kw)
