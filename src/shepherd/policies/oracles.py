"""Oracle policies: they know from a sweep whether each answer is right, so they bound what a real
policy can reach. Written as ordinary policies, so they run through the runner like any other (in
replay here, since their knowledge comes from the store).

- oracle routing: the SLM when the SLM alone is right, else the LLM.
- oracle cascading: the SLM first; when it was wrong, the LLM too (paying both).
- oracle shepherding: the smallest passing hint n* on the swept grid (none when the SLM alone passes),
  else the LLM.
"""

from __future__ import annotations

from typing import Any

from ..traces.labels import label_item
from ..traces.records import ItemSweep
from .base import Decision, Policy, PolicyContext


def _item_id(item: Any) -> str:
    return str(getattr(item, "id", item))


class _Oracle(Policy):
    def __init__(self, sweeps: dict[str, ItemSweep] | list[ItemSweep]) -> None:
        self.sweeps = sweeps if isinstance(sweeps, dict) else {s.item_id: s for s in sweeps}

    def sweep_of(self, ctx: PolicyContext) -> ItemSweep:
        iid = _item_id(ctx.item)
        try:
            return self.sweeps[iid]
        except KeyError:
            raise LookupError(f"{self.name}: no sweep for item {iid!r}") from None

    @staticmethod
    def slm_right(sweep: ItemSweep) -> bool:
        g = sweep.slm_greedy
        return bool(g is not None and g.correct)


class OracleRouting(_Oracle):
    name = "oracle-routing"

    async def decide(self, ctx: PolicyContext) -> Decision:
        if self.slm_right(self.sweep_of(ctx)):
            return Decision("slm", reason="oracle: the SLM alone is right")
        return Decision("llm", reason="oracle: the SLM alone is wrong")


class OracleCascade(_Oracle):
    name = "oracle-cascade"

    async def decide(self, ctx: PolicyContext) -> Decision:
        sweep = self.sweep_of(ctx)
        (gen,) = await ctx.slm.agenerate(ctx.request)
        if self.slm_right(sweep):
            return Decision("slm", reason="oracle cascade: the SLM's answer is right", spent=[("slm", gen)],
                            answer_text=gen.text)
        return Decision("llm", reason="oracle cascade: the SLM's answer is wrong, escalate",
                        spent=[("slm", gen)])


class OracleShepherd(_Oracle):
    name = "oracle-shepherd"

    async def decide(self, ctx: PolicyContext) -> Decision:
        label = label_item(self.sweep_of(ctx))
        if label.kind == "none":
            return Decision("slm", reason="oracle: the SLM alone passes", details={"label": "none"})
        if label.kind == "hint":
            return Decision("hint", hint_tokens=int(label.hint_tokens or 0),
                            reason=f"oracle: smallest passing hint {label.hint_fraction:.0%}",
                            details={"label": "hint", "hint_fraction": label.hint_fraction})
        return Decision("llm", reason=f"oracle: no swept hint passes ({label.kind})",
                        details={"label": label.kind})
