"""The read-side records of a sweep: what the predictor and the evaluation read from the trace store.

One `ItemSweep` is everything swept for one item: the LLM's full answer, the hint levels cut from it
(each with the SLM's continuation trials), and the SLM's sampled answers, each graded. A `Label` is the
oracle hint for an item (n*: the smallest passing hint on the swept grid).

These are plain dataclasses with no database or model dependency, so they can be built in tests by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from ..models.base import Generation, Message

LabelKind = Literal["none", "hint", "llm", "unsolvable"]


class Graded(NamedTuple):
    """A generation with its grade. Unpacks as `(generation, correct, extracted)`.

    For a hint trial, `generation` is the SLM's continuation only (its `text` excludes the hint);
    `correct` grades the whole answer, hint text + continuation.
    """

    generation: Generation
    correct: bool
    extracted: str | None = None


def majority(trials: list[Graded]) -> bool:
    """Strict majority of the trials correct (1 of 1, 2 of 3; a 1-1 tie of 2 trials fails)."""
    return bool(trials) and 2 * sum(1 for t in trials if t.correct) > len(trials)


@dataclass
class HintLevel:
    """One grid point: the first `hint_tokens` LLM tokens of the full answer (`fraction` of it)."""

    fraction: float
    hint_tokens: int
    hint_text: str
    #: trial 0 is greedy; trials 1.. are sampled at the sweep's temperature with seeds seed, seed+1, ...
    trials: list[Graded] = field(default_factory=list)
    #: the SLM's sampled continuations of this hint (seeds seed, seed+1, ...), where the sweep drew them
    #: (`SweepPlan.samples_at`)
    samples: list[Graded] = field(default_factory=list)
    #: cut at a fixed token count of the sweep's token grid, not at a grid fraction: `fraction` is then
    #: this item's n / L, and the level is left out of per-fraction tables and knob grids
    by_tokens: bool = False

    @property
    def passed(self) -> bool:
        """Majority of the trials correct: the level counts as a passing hint."""
        return majority(self.trials)

    @property
    def accuracy(self) -> float:
        return sum(t.correct for t in self.trials) / len(self.trials) if self.trials else 0.0


@dataclass
class ItemSweep:
    task: str
    item_id: str
    #: the chat messages the models were asked (the task's prompt for the item)
    messages: list[Message]
    #: the LLM's full greedy answer and its grade
    llm_full: Graded
    #: L: length of the full answer in LLM tokens (hint fraction = hint_tokens / L)
    full_tokens: int
    #: swept levels in increasing fraction (an early-stopped sweep has only the levels it reached)
    levels: list[HintLevel] = field(default_factory=list)
    #: the SLM's answers sampled at the sweep's temperature, seeds seed, seed+1, ...
    samples: list[Graded] = field(default_factory=list)
    split: str | None = None
    reference: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the sweep's settings (grid, trials, temperature, max_tokens, models, early_stop)
    sweep: dict[str, Any] = field(default_factory=dict)
    #: the SLM's verification of its own greedy answer (`shepherd sweep verify`; `shepherd.verification`),
    #: graded as the answer it verifies; None where the sweep has none
    verification: Graded | None = None

    @property
    def slm_greedy(self) -> Graded | None:
        """The SLM alone, greedy: trial 0 of the 0.0 level (hint of no tokens)."""
        for lv in self.levels:
            if lv.hint_tokens == 0 and lv.trials:
                return lv.trials[0]
        return None

    def level(self, fraction: float) -> HintLevel | None:
        for lv in self.levels:
            if abs(lv.fraction - fraction) < 1e-9:
                return lv
        return None

    @property
    def grid_tokens(self) -> list[int]:
        return sorted({lv.hint_tokens for lv in self.levels})


@dataclass(frozen=True)
class Label:
    """n* for an item.

    kind:
      - "none": the SLM alone passes (hint_fraction 0.0, hint_tokens 0)
      - "hint": the smallest passing hint on the grid (hint_fraction > 0)
      - "llm": no swept hint passes but the LLM's own answer is right
      - "unsolvable": no hint passes and the LLM is wrong too
    """

    item_id: str
    hint_fraction: float | None
    hint_tokens: int | None
    kind: LabelKind
    #: whether the LLM's full answer was right (the filter rule drops items where it is not)
    llm_correct: bool = True
