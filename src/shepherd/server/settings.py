"""The `[server]` section of the config file, validated here (the core keeps it free-form).

```toml
[server]
host = "127.0.0.1"
port = 8000
max_tokens_cap = 1024          # a request asking for more gets a 400
on_llm_error = "slm"           # LLM down or timing out: answer SLM-only, flagged degraded ("fail": 503)
on_slm_error = "llm"           # SLM down: the LLM answers ("fail": 503)
llm_timeout_s = 60             # per LLM call, and per wait for the next streamed chunk

[server.models.shepherd]       # `model: "shepherd"` in a request picks this policy
policy = "fixed-hint"
settings = { tokens = 32 }

[[server.keys]]                # no keys: the server is open (bind it to loopback)
name = "team-a"
key_env = "SHEPHERD_KEY_TEAM_A"   # or key = "sk-..." or key_sha256 = "<hex digest>"
budget_usd = 5.0               # lifetime dollars for this key, kept in the ledger

[server.ledger]                # where budgets are kept (default: a SQLite file in the cache)
url_env = "SHEPHERD_LEDGER_URL"   # PostgreSQL shared by server replicas (or url = "postgresql://...")
lease_s = 15                   # a replica silent this long is dead: its reservations count as spent
heartbeat_s = 2

[server.record]                # optional, off by default: keep every answered request (users' prompts!)
store = "runs/served.sqlite"   # a trace store: `shepherd sweep run --from-record` sweeps it
max_requests = 100000          # retention: the newest N requests ...
max_age_days = 30              # ... of at most this age
hash_messages = false          # true: keep only hashes of the messages (can be rated, not swept)

[server.global_budget]         # optional: one cap over all keys
cap_usd = 100.0
soften_from = 0.8              # from 80 % of the cap, hints shrink linearly ...
slm_only_from = 0.95           # ... down to SLM-only at 95 %
```
No fastapi import here: `shepherd serve` validates the config before it imports the web stack.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..config import ConfigError, PolicyConfig, ShepherdConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelRoute(_Strict):
    """A name clients put in `model` that selects a policy."""

    policy: str
    settings: dict[str, Any] = Field(default_factory=dict)
    description: str = ""


class KeyConfig(_Strict):
    """One bearer API key. Give the key itself, the variable that holds it, or its sha256."""

    name: str
    key: str | None = None
    key_env: str | None = None
    key_sha256: str | None = None
    #: lifetime dollars this key may spend (None: unlimited)
    budget_usd: float | None = Field(None, ge=0.0)
    #: may call POST /admin/reload
    admin: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be 1-128 characters of letters, digits and ._:/-")
        return v

    @field_validator("key_sha256")
    @classmethod
    def _hex(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", v):
            raise ValueError("must be a sha256 hex digest (64 hex digits)")
        return v.lower() if v else v

    @model_validator(mode="after")
    def _one_source(self) -> KeyConfig:
        given = [k for k in ("key", "key_env", "key_sha256") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of key, key_env, key_sha256")
        if self.key is not None and len(self.key) < 8:
            raise ValueError("key must be at least 8 characters")
        return self

    def digest(self) -> str:
        """sha256 of the key; keys are compared by digest, never stored in the clear in memory maps."""
        if self.key_sha256:
            return self.key_sha256
        secret = self.key if self.key is not None else os.environ.get(self.key_env or "")
        if not secret:
            raise ConfigError(f"server.keys: key {self.name!r}: environment variable {self.key_env} is not set")
        return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class GlobalBudget(_Strict):
    cap_usd: float = Field(..., gt=0.0)
    #: fraction of the cap (spent + reserved) from which hints are scaled down linearly
    soften_from: float = Field(0.8, ge=0.0, le=1.0)
    #: fraction of the cap from which every query is answered SLM-only
    slm_only_from: float = Field(0.95, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> GlobalBudget:
        if self.soften_from > self.slm_only_from:
            raise ValueError("soften_from must be <= slm_only_from")
        return self


class LedgerSettings(_Strict):
    """Where the budget ledger lives: a SQLite file (`path`, one machine) or PostgreSQL (`url`, or
    `url_env` naming the environment variable that holds it, so the password stays out of the file)
    shared by server replicas."""

    path: str | None = None
    url: str | None = None
    url_env: str | None = None
    #: PostgreSQL: a replica whose heartbeat is older than this is dead, and its reservations are
    #: counted as spent at their worst case (docs/deployment.md)
    lease_s: float = Field(15.0, gt=0)
    #: PostgreSQL: how often each replica refreshes its heartbeat
    heartbeat_s: float = Field(2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            from .ledger import check_pg_url

            check_pg_url(v)  # its message never shows the URL (it may hold a password)
        return v

    @model_validator(mode="after")
    def _one_store(self) -> LedgerSettings:
        given = [k for k in ("path", "url", "url_env") if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"give one of path (SQLite), url or url_env (PostgreSQL), not {' and '.join(given)}")
        if self.lease_s < 2 * self.heartbeat_s:
            raise ValueError(f"lease_s ({self.lease_s:g}) must be at least twice heartbeat_s "
                             f"({self.heartbeat_s:g}): a live replica must never look dead")
        return self

    def resolved_url(self) -> str | None:
        """The PostgreSQL URL, or None for SQLite."""
        if self.url:
            return self.url
        if self.url_env:
            url = os.environ.get(self.url_env)
            if not url:
                raise ConfigError(f"server.ledger.url_env: environment variable {self.url_env} is not set")
            from .ledger import check_pg_url

            try:
                check_pg_url(url)
            except ValueError as exc:
                raise ConfigError(f"server.ledger.url_env: the URL in {self.url_env} {exc}") from None
            return url
        return None
class RecordSettings(_Strict):
    """Recording of served traffic (`shepherd.traces.record`): off unless `[server.record]` is given."""

    store: str = Field(..., min_length=1)
    #: keep at most the newest N requests (None: no limit)
    max_requests: int | None = Field(None, ge=1)
    #: drop requests older than this (None: no limit)
    max_age_days: float | None = Field(None, gt=0)
    #: keep only hashes of the messages (and no generations, whose requests hold them)
    hash_messages: bool = False

    def resolved_path(self) -> Path:
        return Path(self.store).expanduser()


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: model names that select a policy; empty: {"shepherd": the config's [policy]}
    models: dict[str, ModelRoute] = Field(default_factory=dict)
    #: also serve "slm" / "llm" (and the two model ids) straight from one model
    passthrough: bool = True
    keys: list[KeyConfig] = Field(default_factory=list)
    #: SQLite file of the budget ledger (default: <cache>/shepherd/ledger.sqlite when a budget is set);
    #: the older spelling of [server.ledger] path
    ledger_path: str | None = None
    ledger: LedgerSettings | None = None
    global_budget: GlobalBudget | None = None
    #: record served requests for `shepherd sweep run --from-record` (None: off)
    record: RecordSettings | None = None
    #: reservations multiply the counted prompt tokens by this, to stay an upper bound
    reserve_margin: float = Field(1.2, ge=1.0, le=10.0)
    #: reservations left by a crashed process older than this are counted as spent at startup
    stale_reservation_s: float = Field(3600.0, gt=0)

    max_body_bytes: int = Field(1_000_000, ge=1024)
    max_messages: int = Field(256, ge=1)
    #: largest max_tokens a request may ask for (larger: 400)
    max_tokens_cap: int = Field(2048, ge=1)
    #: max_tokens when a request gives none (default: min(run.max_tokens, max_tokens_cap))
    default_max_tokens: int | None = Field(None, ge=1)
    #: concurrent chat requests; more get a 503 with Retry-After
    max_in_flight: int = Field(256, ge=1)

    llm_timeout_s: float = Field(60.0, gt=0)
    slm_timeout_s: float = Field(120.0, gt=0)
    on_llm_error: Literal["fail", "slm"] = "slm"
    on_slm_error: Literal["fail", "llm"] = "llm"
    #: load local models at startup, so the first request does not pay for it
    warmup: bool = True

    @field_validator("models")
    @classmethod
    def _route_names(cls, v: dict[str, ModelRoute]) -> dict[str, ModelRoute]:
        for name in v:
            if not _NAME.match(name):
                raise ValueError(f"model name {name!r}: use 1-128 characters of letters, digits and ._:/-")
        return v

    @model_validator(mode="after")
    def _unique_keys(self) -> ServerSettings:
        names = [k.name for k in self.keys]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate key names: {', '.join(sorted(dup))}")
        if self.ledger_path and self.ledger is not None:
            raise ValueError("ledger_path and [server.ledger] both set: move ledger_path into [server.ledger] "
                             "as path (SQLite), or drop it for url / url_env (PostgreSQL)")
        return self

    @property
    def budgets_enabled(self) -> bool:
        return self.global_budget is not None or any(k.budget_usd is not None for k in self.keys)

    def routes(self, config: ShepherdConfig) -> dict[str, ModelRoute]:
        if self.models:
            return dict(self.models)
        pol: PolicyConfig = config.policy
        return {"shepherd": ModelRoute(policy=pol.name, settings=dict(pol.settings),
                                       description="the configured shepherding policy")}

    def resolved_ledger_path(self) -> Path:
        path = self.ledger_path or (self.ledger.path if self.ledger else None)
        if path:
            return Path(path).expanduser()
        root = os.environ.get("SHEPHERD_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "shepherd")
        return Path(root) / "ledger.sqlite"


def server_settings(config: ShepherdConfig) -> ServerSettings:
    """Validate `config.server`; errors name the key, like the core config's."""
    try:
        return ServerSettings.model_validate(config.server)
    except ValidationError as exc:
        lines = ["invalid config [server]:"]
        for err in exc.errors():
            key = ".".join(["server", *(str(p) for p in err["loc"])])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {key}: {msg}")
        raise ConfigError("\n".join(lines)) from None
