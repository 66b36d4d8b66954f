"""Prices and cost arithmetic: dollars per 1M tokens, per model, as the paper counts them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, model_serializer

from .models.base import Usage

PER_MILLION = 1_000_000


class Price(BaseModel):
    """Dollars per 1M input and output tokens. Groq Llama-3.3-70B is the paper's LLM price.

    `cached_input` is the rate for prompt tokens the provider serves from its prompt cache (a hint extended
    re-sends the prompt and the hint already bought); unset, they cost the input rate, as in the paper's
    pricing."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(0.0, ge=0.0, description="USD per 1M prompt tokens")
    output: float = Field(0.0, ge=0.0, description="USD per 1M completion tokens")
    cached_input: float | None = Field(None, ge=0.0, description="USD per 1M cached prompt tokens "
                                       "(default: the input rate)")

    @model_serializer(mode="wrap")
    def _without_unset_cache_rate(self, handler):  # records written before the rate existed stay the same
        d = handler(self)
        if isinstance(d, dict) and d.get("cached_input") is None:
            d.pop("cached_input", None)
        return d

    @property
    def cached_rate(self) -> float:
        return self.input if self.cached_input is None else self.cached_input

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """`cached_tokens` of the `prompt_tokens` are priced at the cached-input rate."""
        fresh = prompt_tokens - cached_tokens
        return (self.input * fresh + self.cached_rate * cached_tokens + self.output * completion_tokens) / PER_MILLION


#: the paper's LLM price (Groq, Llama-3.3-70B-Versatile)
PAPER_LLM_PRICE = Price(input=0.59, output=0.79)
#: the paper counts the SLM as free
FREE = Price(input=0.0, output=0.0)


@dataclass
class CostBreakdown:
    """Dollars per line; `*_input` counts fresh prompt tokens, `*_cached_input` those read from a cache."""

    llm_input: float = 0.0
    llm_output: float = 0.0
    slm_input: float = 0.0
    slm_output: float = 0.0
    llm_cached_input: float = 0.0
    slm_cached_input: float = 0.0

    @property
    def llm(self) -> float:
        return self.llm_input + self.llm_cached_input + self.llm_output

    @property
    def slm(self) -> float:
        return self.slm_input + self.slm_cached_input + self.slm_output

    @property
    def total(self) -> float:
        return self.llm + self.slm

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d["total"] = self.total
        return d


def breakdown(llm_usage: Usage, slm_usage: Usage, llm_price: Price, slm_price: Price) -> CostBreakdown:
    def fresh(u: Usage) -> int:
        return u.prompt_tokens - u.cached_prompt_tokens

    return CostBreakdown(
        llm_input=llm_price.input * fresh(llm_usage) / PER_MILLION,
        llm_output=llm_price.output * llm_usage.completion_tokens / PER_MILLION,
        slm_input=slm_price.input * fresh(slm_usage) / PER_MILLION,
        slm_output=slm_price.output * slm_usage.completion_tokens / PER_MILLION,
        llm_cached_input=llm_price.cached_rate * llm_usage.cached_prompt_tokens / PER_MILLION,
        slm_cached_input=slm_price.cached_rate * slm_usage.cached_prompt_tokens / PER_MILLION,
    )
