"""Prices and cost arithmetic: dollars per 1M tokens, per model, as the paper counts them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field

from .models.base import Usage

PER_MILLION = 1_000_000


class Price(BaseModel):
    """Dollars per 1M input and output tokens. Groq Llama-3.3-70B is the paper's LLM price."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input: float = Field(0.0, ge=0.0, description="USD per 1M prompt tokens")
    output: float = Field(0.0, ge=0.0, description="USD per 1M completion tokens")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (self.input * prompt_tokens + self.output * completion_tokens) / PER_MILLION


#: the paper's LLM price (Groq, Llama-3.3-70B-Versatile)
PAPER_LLM_PRICE = Price(input=0.59, output=0.79)
#: the paper counts the SLM as free
FREE = Price(input=0.0, output=0.0)


@dataclass
class CostBreakdown:
    llm_input: float = 0.0
    llm_output: float = 0.0
    slm_input: float = 0.0
    slm_output: float = 0.0

    @property
    def llm(self) -> float:
        return self.llm_input + self.llm_output

    @property
    def slm(self) -> float:
        return self.slm_input + self.slm_output

    @property
    def total(self) -> float:
        return self.llm + self.slm

    def to_dict(self) -> dict[str, float]:
        d = asdict(self)
        d["total"] = self.total
        return d


def breakdown(llm_usage: Usage, slm_usage: Usage, llm_price: Price, slm_price: Price) -> CostBreakdown:
    return CostBreakdown(
        llm_input=llm_price.input * llm_usage.prompt_tokens / PER_MILLION,
        llm_output=llm_price.output * llm_usage.completion_tokens / PER_MILLION,
        slm_input=slm_price.input * slm_usage.prompt_tokens / PER_MILLION,
        slm_output=slm_price.output * slm_usage.completion_tokens / PER_MILLION,
    )
