"""`rescue`: the SLM writes, and where its confidence falls in the middle of its answer, the LLM steps in.

The SLM answers with token log-probabilities; the trigger is DeepConf's group confidence (arXiv 2508.15260)
read as a watch: the first window of `window` consecutive tokens whose mean log-probability falls below
`threshold`. The answer is cut back to a clean boundary before that window (the start of its line, so the
LLM does not inherit a half-written number), the LLM continues the SLM's own partial answer for `tokens`
tokens, and the SLM takes over again; at most `max_rescues` times per answer. STEER (arXiv 2511.06190) and
EAD (arXiv 2502.06833) hand reasoning steps to a large model on the small one's doubt; here the large
model's part is a short, priced prefix, as shepherding buys it.

The default threshold, -0.5 over 8 tokens, is where the local 0.5B SLM doubts often enough to matter: its lowest
8-token mean falls below it on about a third of its GSM8K answers and about 15% of its completion-style HumanEval
bodies (docs/rescue.md); at -1.5, the first default, it almost never fired.

A generation without log-probabilities cannot be watched: the SLM's answer then stands, and the decision
says so. Both models must continue an assistant turn (the LLM continues the SLM's text, the SLM the LLM's):
a backend that cannot is refused before anything is generated.
"""

from __future__ import annotations

from typing import Any

from ..confidence import BACKUPS, doubt_cut
from ..decision import Rescue
from ..models.base import Generation, PrefixNotSupported
from .base import Decision, Policy, PolicyContext
from .registry import register_policy

__all__ = ["RescuePolicy"]


class RescuePolicy(Policy):
    name = "rescue"

    def __init__(self, threshold: float = -0.5, *, tokens: int = 16, window: int = 8, max_rescues: int = 1,
                 backup: str = "line") -> None:
        if tokens < 1 or window < 1 or max_rescues < 0:
            raise ValueError("rescue: tokens and window must be >= 1, max_rescues >= 0")
        if backup not in BACKUPS:
            raise ValueError(f"rescue: backup must be one of {BACKUPS}, got {backup!r}")
        self.threshold, self.tokens, self.window = float(threshold), int(tokens), int(window)
        self.max_rescues, self.backup = int(max_rescues), backup

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold, "tokens": self.tokens, "window": self.window,
                "max_rescues": self.max_rescues, "backup": self.backup}

    def cut(self, gen: Generation) -> int | None:
        """Where to back up to in `gen.text` (None: no doubt found, or nothing to watch)."""
        return doubt_cut(gen.text, gen.logprobs, self.threshold, self.window, self.backup)

    async def decide(self, ctx: PolicyContext) -> Decision:
        for role, backend in (("slm", ctx.slm), ("llm", ctx.llm)):
            if not getattr(backend, "supports_prefix", True) or getattr(backend, "hint_mode", "prefix") != "prefix":
                raise PrefixNotSupported(f"rescue needs both models to continue an assistant turn; the {role} "
                                         f"({backend.model_id}) cannot")
        return Decision("slm", reason=f"rescue: the SLM writes; below {self.threshold:g} over {self.window} tokens "
                        f"the LLM writes {self.tokens}", details=self.describe(),
                        rescue=Rescue(self.cut, self.tokens, self.max_rescues))


register_policy(RescuePolicy.name, RescuePolicy)
