"""What a policy decided for one query: answer with the SLM, buy a hint of n LLM tokens, or ask the LLM; plus
what it already paid for while deciding. Vocabulary shared by the policies, the hint protocol that carries a
decision out, and the answer that reports it, so it sits below all three."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from .models.base import Generation

DecisionKind = Literal["slm", "hint", "llm"]


@dataclass(frozen=True)
class Rescue:
    """The LLM steps in where the SLM loses confidence, in the middle of its answer: `cut(generation)` reads
    the SLM's text (and its token log-probabilities) and returns where to back up to, a clean boundary before
    the doubt began (a character offset into that generation's text), or None when it stands; the LLM then
    continues the answer from there for `tokens` tokens and the SLM takes over again, at most `max_rescues`
    times per answer."""

    cut: Callable[[Generation], int | None]
    tokens: int
    max_rescues: int = 1

    def __post_init__(self) -> None:
        if self.tokens < 1 or self.max_rescues < 0:
            raise ValueError("a rescue buys at least one token, at most max_rescues >= 0 times")


@dataclass
class Decision:
    kind: DecisionKind
    hint_tokens: int = 0
    reason: str = ""
    #: generations already paid for while deciding, as (role, generation) with role "slm" or "llm"
    spent: list[tuple[str, Generation]] = field(default_factory=list)
    #: set when deciding already produced the final answer (e.g. the SLM samples agreed)
    answer_text: str | None = None
    #: the predictor's score or other numbers worth keeping with the trace
    details: dict[str, Any] = field(default_factory=dict)
    #: a hint bought a piece at a time: after the SLM continues the hint, `accept(continuation)` says whether
    #: it stands; if not, the LLM extends its own hint to the next size in `ladder` (total tokens, rising),
    #: paying output for the new tokens only, and the SLM continues again
    ladder: tuple[int, ...] = ()
    accept: Callable[[Generation], bool] | None = None
    #: past the last rung, a continuation still not accepted: "slm" keeps it, "llm" lets the LLM finish
    exhausted: Literal["slm", "llm"] = "slm"
    #: with kind "slm": the LLM may step in mid-answer where the SLM's confidence falls
    rescue: Rescue | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("slm", "hint", "llm"):
            raise ValueError(f"unknown decision kind {self.kind!r}")
        if self.hint_tokens < 0:
            raise ValueError("hint_tokens must be >= 0")
        rising = all(a < b for a, b in pairwise((self.hint_tokens, *self.ladder)))
        if self.ladder and (self.accept is None or not rising):
            raise ValueError("a hint ladder needs accept= and sizes that rise above hint_tokens")
        if self.rescue is not None and self.kind != "slm":
            raise ValueError("a rescue watches the SLM's own answer: it goes with kind 'slm'")
        if self.exhausted not in ("slm", "llm"):
            raise ValueError(f"exhausted must be 'slm' or 'llm', got {self.exhausted!r}")
        if self.kind == "hint" and self.hint_tokens == 0:
            self.kind = "slm"

    @property
    def label(self) -> str:
        return f"hint({self.hint_tokens})" if self.kind == "hint" else self.kind
