"""`Shepherd`: the Python entry point. Two models, a policy, prices -> `answer(query)`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .answer import Answer
from .config import ModelConfig, ShepherdConfig, load_config
from .costs import FREE, PAPER_LLM_PRICE, Price
from .models.base import Backend, Message, run_sync
from .models.factory import build_backend
from .policies.base import Policy
from .policies.registry import make_policy
from .runner import Runner, RunSettings


def _backend(spec: Backend | ModelConfig | str, progress=None) -> Backend:
    if isinstance(spec, Backend):
        return spec
    if isinstance(spec, str):
        spec = ModelConfig(model=spec)
    return build_backend(spec, progress=progress)


class Shepherd:
    """A small model that buys hints from a large one.

    >>> sh = Shepherd()                      # the local Qwen2.5-Coder 0.5B / 1.5B pair
    >>> sh.answer("What is 17 * 23?", hint_tokens=16).text
    """

    def __init__(
        self,
        slm: Backend | ModelConfig | str | None = None,
        llm: Backend | ModelConfig | str | None = None,
        policy: Policy | str = "fixed-hint",
        *,
        slm_price: Price | None = None,
        llm_price: Price | None = None,
        settings: RunSettings | None = None,
        policy_settings: dict[str, Any] | None = None,
        progress=None,
    ) -> None:
        default = ShepherdConfig()
        slm_cfg = slm if slm is not None else default.slm
        llm_cfg = llm if llm is not None else default.llm
        self.slm = _backend(slm_cfg, progress)
        self.llm = _backend(llm_cfg, progress)
        if slm_price is None:
            slm_price = slm_cfg.price if isinstance(slm_cfg, ModelConfig) else FREE
        if llm_price is None:
            llm_price = llm_cfg.price if isinstance(llm_cfg, ModelConfig) else PAPER_LLM_PRICE
        if isinstance(policy, str):
            settings_ = policy_settings if policy_settings is not None else (
                {"tokens": 32} if policy == "fixed-hint" else {})
            policy = make_policy(policy, **settings_)
        self.policy = policy
        self.runner = Runner(self.slm, self.llm, slm_price=slm_price, llm_price=llm_price, settings=settings)

    @classmethod
    def from_config(cls, config: ShepherdConfig | str | None = None, progress=None) -> Shepherd:
        cfg = config if isinstance(config, ShepherdConfig) else load_config(config)
        settings = RunSettings.from_config(cfg.run)
        return cls(slm=cfg.slm, llm=cfg.llm, policy=cfg.policy.name, policy_settings=cfg.policy.settings,
                   settings=settings, progress=progress)

    def _policy(self, policy: Policy | str | None, hint_tokens: int | None) -> Policy:
        if hint_tokens is not None:
            return make_policy("fixed-hint", tokens=hint_tokens)
        if isinstance(policy, str):
            # the configured policy keeps its settings (artifact, threshold, ...) when named again
            return self.policy if policy == self.policy.name else make_policy(policy)
        return policy or self.policy

    async def aanswer(self, query: str | Sequence[Message], *, policy: Policy | str | None = None,
                      hint_tokens: int | None = None, item: Any = None) -> Answer:
        return await self.runner.answer(query, self._policy(policy, hint_tokens), item=item)

    def answer(self, query: str | Sequence[Message], *, policy: Policy | str | None = None,
               hint_tokens: int | None = None) -> Answer:
        return run_sync(self.aanswer(query, policy=policy, hint_tokens=hint_tokens))

    async def abatch(self, queries: Sequence[str | Sequence[Message]], *, policy: Policy | str | None = None,
                     hint_tokens: int | None = None, concurrency: int = 4) -> list[Answer]:
        return await self.runner.answer_many(queries, self._policy(policy, hint_tokens), concurrency)

    def batch(self, queries, **kwargs) -> list[Answer]:
        return run_sync(self.abatch(queries, **kwargs))

    async def aclose(self) -> None:
        await self.slm.aclose()
        await self.llm.aclose()
