"""One TOML file: the two models (backend, source, price), the policy, and run settings.

Validated with pydantic; errors name the key and the problem. No file -> the embedded default: the
local Qwen2.5-Coder 1.5B as LLM and 0.5B as SLM, priced as in the paper.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .costs import FREE, PAPER_LLM_PRICE, Price
from .models.catalog import DEFAULT_LLM, DEFAULT_SLM

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(ValueError):
    """The config file is missing, not TOML, or does not validate; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    backend: Literal["llamacpp", "openai", "scripted"] = "llamacpp"
    #: llamacpp: a catalog name or a .gguf path; openai: the server's model name
    model: str
    #: identity for prices, traces and cache keys (default: `model`)
    model_id: str | None = None
    price: Price = Field(default_factory=lambda: FREE)
    # llamacpp
    n_ctx: int = Field(4096, gt=0)
    n_threads: int | None = Field(None, gt=0)
    #: "batched": concurrent calls decoded together in one context (sweeps); "sequential": one at a time
    engine: Literal["sequential", "batched"] = "sequential"
    #: sequences the batched engine decodes together (each gets n_ctx tokens of KV cache)
    slots: int = Field(8, gt=0, le=64)
    # openai-compatible HTTP
    base_url: str | None = None
    #: more servers of the same model: the Ray executor spreads its workers over base_url and these
    replicas: list[str] = Field(default_factory=list)
    api_key_env: str | None = None
    prefix_route: Literal["completions", "continue_final_message", "user_hint", "none"] = "completions"
    chat_template: str | None = None
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(3, ge=0)
    max_concurrency: int = Field(8, gt=0)
    # scripted (tests only)
    script: str | None = None
    #: scripted: seconds each call takes (orchestration tests: a sweep that is still running)
    delay_s: float = Field(0.0, ge=0.0)

    @field_validator("model")
    @classmethod
    def _non_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _backend_fields(self) -> ModelConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("backend 'openai' needs base_url (for example http://127.0.0.1:8000/v1)")
        return self

    @property
    def identity(self) -> str:
        return self.model_id or self.model


class PolicyConfig(_Strict):
    name: str = "fixed-hint"
    #: policy-specific settings, e.g. tokens = 32 for fixed-hint, artifact = "path" for proactive
    settings: dict[str, Any] = Field(default_factory=lambda: {"tokens": 32})


class RunConfig(_Strict):
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    seed: int | None = 0
    system_prompt: str | None = None
    on_llm_error: Literal["fail", "slm"] = "fail"
    on_slm_error: Literal["fail", "llm"] = "fail"


class ShepherdConfig(_Strict):
    slm: ModelConfig = Field(default_factory=lambda: ModelConfig(model=DEFAULT_SLM, price=FREE))
    llm: ModelConfig = Field(default_factory=lambda: ModelConfig(model=DEFAULT_LLM, price=PAPER_LLM_PRICE))
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    #: sections owned by other components (server, traces, ...) validate themselves
    server: dict[str, Any] = Field(default_factory=dict)
    traces: dict[str, Any] = Field(default_factory=dict)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "<dict>") -> ShepherdConfig:
    try:
        return ShepherdConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, source)) from None


def load_config(path: str | Path | None = None) -> ShepherdConfig:
    if path is None:
        return ShepherdConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config {p} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config {p} is not UTF-8 text: {exc}") from None
    return parse_config(data, str(p))
