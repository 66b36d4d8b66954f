"""What the server puts around the core for each request: guarded backends and a guarded policy.

`GuardedBackend` wraps a model for one request. It
  - gives each call a time limit (a whole non-streamed call; each wait for the next streamed chunk),
    turning a timeout into `BackendTimeout` and any unexpected exception into `BackendError`, so the
    runner's fallbacks see every failure of a backend the same way;
  - reserves the call's worst-case cost in the budget ledger before calling, and settles the real cost
    after (also when the call fails or the client goes away).
`ServedPolicy` wraps the route's policy: a per-request hint override, and the global budget's softening
(hints shrink as spend approaches the cap, then SLM-only).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..costs import Price
from ..models.base import (
    Backend,
    BackendError,
    BackendTimeout,
    Generation,
    GenerationRequest,
    PromptTooLong,
    StreamChunk,
)
from ..policies.base import Decision, Policy, PolicyContext
from .ledger import Balance, Ledger, PgLedger

log = logging.getLogger("shepherd.server")

if sys.version_info >= (3, 11):
    async def _within(awaitable, timeout_s: float):
        async with asyncio.timeout(timeout_s):
            return await awaitable
else:  # pragma: no cover
    async def _within(awaitable, timeout_s: float):
        return await asyncio.wait_for(awaitable, timeout_s)


# -- the budget side -------------------------------------------------------------------------------

class Budgets:
    """The ledger, run on one dedicated thread; a background thread does the ledger's periodic work off
    the hot path (`ledger.maintain()`: SQLite checkpoints its WAL, PostgreSQL heartbeats this replica
    and releases what dead replicas left).

    The last balance seen of each account is kept (every reserve and settle returns them), so the
    per-request checks (key already spent? global fraction for softening?) need no database round
    trip; they are refreshed from the database when older than `fresh_s` (other processes may share
    the ledger). The reservations themselves always go to the database.
    """

    GLOBAL = "global"

    def __init__(self, ledger: Ledger | PgLedger, *, global_cap_usd: float | None = None, fresh_s: float = 1.0,
                 checkpoint_every_s: float | None = None) -> None:
        self.ledger = ledger
        self.global_cap_usd = global_cap_usd
        self.fresh_s = fresh_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shepherd-ledger")
        # a ledger that takes concurrent writers (PostgreSQL) settles on a thread of its own, so that a
        # settle never delays the next request's reservation; SQLite has one writer anyway
        self.settle_executor = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="shepherd-ledger-settle")
                                if getattr(ledger, "concurrent", False) else self.executor)
        self.global_fraction = 0.0
        self.on_balances: Callable[[list[Balance]], None] | None = None
        self._seen: dict[str, tuple[float, Balance]] = {}
        self._stop = threading.Event()
        self._every_s = checkpoint_every_s if checkpoint_every_s is not None else ledger.maintain_every_s
        self._checkpointer: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        """Start the background thread (at the server's startup, or with the first reservation: building
        an app starts no thread)."""
        with self._start_lock:
            if self._checkpointer is None and self._every_s and not self._stop.is_set():
                self._checkpointer = threading.Thread(target=self._maintain, args=(self._every_s,),
                                                      name="shepherd-ledger-maintain", daemon=True)
                self._checkpointer.start()

    def _maintain(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.ledger.maintain()
            except Exception as exc:  # noqa: BLE001 - retried next time
                log.warning("ledger maintenance failed: %s", exc)
        self.ledger.close()  # this thread's connection

    def note(self, balances: list[Balance]) -> None:
        now = time.monotonic()
        for b in balances:
            self._seen[b.account] = (now, b)
            if b.account == self.GLOBAL and b.budget_usd:
                self.global_fraction = b.committed_fraction
        if self.on_balances is not None:
            self.on_balances(balances)

    async def balances(self, accounts: list[str]) -> list[Balance]:
        """Recent balances of `accounts`, from memory when fresh, else from the database."""
        now = time.monotonic()
        seen = [self._seen.get(a) for a in accounts]
        if all(s is not None and now - s[0] < self.fresh_s for s in seen):
            return [s[1] for s in seen]  # type: ignore[index]
        balances = await self.call(self.ledger.balances, accounts)
        self.note(balances)
        return balances

    async def call(self, fn, *args):
        return await asyncio.wrap_future(self.executor.submit(fn, *args))

    async def reserve(self, accounts: list[str], amount_usd: float) -> str:
        self.start()
        cf: Future = self.executor.submit(self.ledger.reserve, accounts, amount_usd)
        try:
            rid, balances = await asyncio.wrap_future(cf)
        except asyncio.CancelledError:
            # the reservation may still be made on the ledger thread: release it when it is
            def _undo(f: Future) -> None:
                if not f.cancelled() and f.exception() is None:
                    self._submit(self.ledger.release, f.result()[0])
            cf.add_done_callback(_undo)
            raise
        self.note(balances)
        return rid

    def settle(self, rid: str, actual_usd: float) -> None:
        """Fire and forget (safe inside cancellation): runs on the settling thread, in order."""
        self._submit(self.ledger.settle, rid, actual_usd)

    def _submit(self, fn, *args) -> None:
        def done(f: Future) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:  # the reservation stays open; a restart counts it as spent
                log.error("ledger %s%r failed: %s", fn.__name__, args, f.exception())
            else:
                self.note(f.result())

        try:
            self.settle_executor.submit(fn, *args).add_done_callback(done)
        except RuntimeError:  # the executor is shut down (server stopping): do it here
            self.note(fn(*args))

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until every settle submitted so far has run."""
        self.settle_executor.submit(lambda: None).result(timeout=timeout_s)
        self.executor.submit(lambda: None).result(timeout=timeout_s)

    def close(self) -> None:
        for ex in {self.executor, self.settle_executor}:
            ex.submit(self.ledger.close)  # the ledger threads' connections
            ex.shutdown(wait=True)
        self._stop.set()
        if self._checkpointer is not None:
            self._checkpointer.join(5)


@dataclass
class Meter:
    """One request's spending: what its calls cost so far and, with budgets, the accounts it charges."""

    budgets: Budgets | None
    accounts: list[str]
    spent_usd: float = 0.0
    open: set[str] = field(default_factory=set)

    async def reserve(self, amount_usd: float) -> str | None:
        if amount_usd <= 0 or not self.accounts or self.budgets is None:
            return None
        rid = await self.budgets.reserve(self.accounts, amount_usd)
        self.open.add(rid)
        return rid

    def settle(self, rid: str | None, actual_usd: float) -> None:
        self.spent_usd += actual_usd
        if rid is None:
            return
        self.open.discard(rid)
        if self.budgets is not None:
            self.budgets.settle(rid, actual_usd)


# -- the backend side ------------------------------------------------------------------------------

@dataclass
class BackendHealth:
    """Last failure of one role's backend, for /health and the metrics."""

    role: str
    errors: int = 0
    timeouts: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    on_error: Callable[[str, str], None] | None = None

    def record(self, exc: BaseException) -> None:
        kind = "timeout" if isinstance(exc, BackendTimeout) else "error"
        if kind == "timeout":
            self.timeouts += 1
        else:
            self.errors += 1
        self.last_error = str(exc)
        self.last_error_at = time.time()
        if self.on_error is not None:
            self.on_error(self.role, kind)

    def to_dict(self) -> dict[str, Any]:
        return {"errors": self.errors, "timeouts": self.timeouts, "last_error": self.last_error,
                "last_error_at": self.last_error_at}


class GuardedBackend(Backend):
    def __init__(self, inner: Backend, *, role: str, price: Price, timeout_s: float,
                 meter: Meter | None = None, default_max_tokens: int = 512, margin: float = 1.2,
                 health: BackendHealth | None = None) -> None:
        self.inner = inner
        self.role = role
        self.model_id = inner.model_id
        self.supports_prefix = inner.supports_prefix
        self.hint_mode = inner.hint_mode
        self.price = price
        self.timeout_s = timeout_s
        self.meter = meter
        self.default_max_tokens = default_max_tokens
        self.margin = margin
        self.health = health

    # counting passes straight through
    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.inner.count_prompt_tokens(request)

    # -- cost --------------------------------------------------------------------------------------
    @property
    def _metered(self) -> bool:
        return self.meter is not None and bool(self.meter.accounts) and (
            self.price.input > 0 or self.price.output > 0)

    def worst_case_usd(self, request: GenerationRequest, n: int = 1) -> float:
        prompt = math.ceil(self.inner.count_prompt_tokens(request) * self.margin) + 8
        out = request.max_tokens if request.max_tokens is not None else self.default_max_tokens
        return n * self.price.cost(prompt, out)

    def _cost(self, gens: list[Generation]) -> float:
        return sum(self.price.cost(g.prompt_tokens, g.completion_tokens) for g in gens)

    def _partial(self, request: GenerationRequest, text: str) -> float:
        """A call that failed or was cut costs what it delivered: nothing if nothing, else prompt + text."""
        if not text:
            return 0.0
        return self.price.cost(self.inner.count_prompt_tokens(request), self.inner.count_tokens(text))

    def _fail(self, exc: BaseException) -> BackendError:
        if isinstance(exc, BackendError):
            err = exc
        elif isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
            err = BackendTimeout(f"{self.role} ({self.model_id}) did not answer within {self.timeout_s:g}s")
        else:
            err = BackendError(f"{self.role} ({self.model_id}) failed: {type(exc).__name__}: {exc}")
        if self.health is not None and not isinstance(err, PromptTooLong):  # the request's fault, not the model's
            self.health.record(err)
        return err

    # -- calls -------------------------------------------------------------------------------------
    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        rid = await self.meter.reserve(self.worst_case_usd(request, n)) if self._metered else None
        actual = None
        try:
            gens = await _within(self.inner.agenerate(request, n=n), self.timeout_s)
            actual = self._cost(gens)
            return gens
        except asyncio.CancelledError:
            raise
        except BackendError as exc:
            actual = 0.0
            raise self._fail(exc) from None
        except (asyncio.TimeoutError, TimeoutError) as exc:
            raise self._fail(exc) from None
        except Exception as exc:  # any failure of a backend is a BackendError here
            actual = 0.0
            raise self._fail(exc) from exc
        finally:
            if self.meter is not None:
                # timed out or cancelled: what the backend did is unknown, so the worst case counts
                if actual is None:
                    actual = self.worst_case_usd(request, n) if rid is not None else 0.0
                self.meter.settle(rid, actual)

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        rid = await self.meter.reserve(self.worst_case_usd(request)) if self._metered else None
        parts: list[str] = []
        final: Generation | None = None
        it = self.inner.astream(request).__aiter__()
        try:
            while True:
                try:
                    chunk = await _within(it.__anext__(), self.timeout_s)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - any failure of a backend is a BackendError here
                    raise self._fail(exc) from None
                if chunk.generation is not None:
                    final = chunk.generation
                elif chunk.text:
                    parts.append(chunk.text)
                yield chunk
        finally:
            closer = getattr(it, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:  # noqa: BLE001, S110 - closing a broken stream must not mask the real error
                    pass
            if self.meter is not None:
                actual = self._cost([final]) if final is not None else self._partial(request, "".join(parts))
                self.meter.settle(rid, actual)

    async def aclose(self) -> None:  # the shared backend outlives the request
        return None


# -- the policy side -------------------------------------------------------------------------------

def soften(decision: Decision, fraction: float, soften_from: float, slm_only_from: float,
           max_tokens: int) -> Decision:
    """Lower what a decision buys as the global spend nears its cap: hint(n) -> hint(n * s), llm ->
    hint(max_tokens * s), with s falling linearly from 1 at `soften_from` to 0 at `slm_only_from`."""
    if decision.kind == "slm" or decision.answer_text is not None or fraction < soften_from:
        return decision
    details = dict(decision.details)
    details["budget_original_decision"] = decision.label
    details["budget_fraction"] = round(fraction, 6)
    if fraction >= slm_only_from or slm_only_from <= soften_from:
        details["budget_mode"] = "slm-only"
        return Decision("slm", reason=f"{decision.reason}; global budget {fraction:.0%} used: SLM only",
                        spent=decision.spent, details=details)
    scale = (slm_only_from - fraction) / (slm_only_from - soften_from)
    base = decision.hint_tokens if decision.kind == "hint" else max_tokens
    n = int(base * scale)
    details["budget_mode"] = "softened"
    kind = "hint" if n > 0 else "slm"
    return Decision(kind, hint_tokens=n, spent=decision.spent, details=details,
                    reason=f"{decision.reason}; global budget {fraction:.0%} used: hint scaled by {scale:.2f}")


class ServedPolicy(Policy):
    """The route's policy, with a forced hint (`shepherd.hint_tokens`) and the global softening."""

    def __init__(self, inner: Policy, *, hint_tokens: int | None = None,
                 adjust: Callable[[Decision, PolicyContext], Decision] | None = None) -> None:
        self.inner = inner
        self.name = inner.name  # type: ignore[misc]
        self.hint_tokens = hint_tokens
        self.adjust = adjust

    async def decide(self, ctx: PolicyContext) -> Decision:
        if self.hint_tokens is not None:
            n = self.hint_tokens
            decision = Decision("hint", hint_tokens=n, reason=f"request: shepherd.hint_tokens = {n}")
        else:
            decision = await self.inner.decide(ctx)
        if self.adjust is not None:
            decision = self.adjust(decision, ctx)
        return decision

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
