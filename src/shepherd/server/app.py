"""The OpenAI-compatible app: `create_app(config, backends=None)`.

One chat request, end to end:
  edge middleware (body size limit, request metrics)
  -> FastAPI validates the JSON against `ChatCompletionRequest` (400 on failure)
  -> bearer key (401), model name -> route (404), request checks and max_tokens cap (400)
  -> `ChatResponse`: the answer runs in its own task while another task watches for the client leaving;
     per request the shared backends are wrapped in `GuardedBackend` (time limits, budget metering) and
     the route's policy in `ServedPolicy` (forced hint, global budget softening);
     `Runner.answer` carries the decision out (for a streamed request with a listener that emits text as it comes);
  -> OpenAI JSON or chat.completion.chunk SSE, with `usage` and a `shepherd` object.
A client that leaves cancels the answer task: backend streams are closed and the ledger settled.

With `[server.record]`, every answered request (its generations, decision and cost) goes on the recorder's
queue, written to a trace store by the recorder's thread; `POST /v1/feedback` rates a recorded answer.
`POST /admin/reload` (admin keys) or SIGHUP rebuilds the routes' policies from disk (a retrained predictor):
requests in flight finish on the policy they started with.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..artifacts import artifact_id
from ..config import ConfigError, ShepherdConfig, load_config
from ..models.base import Backend, BackendError, Generation, GenerationRequest, PromptTooLong, StreamChunk
from ..policies.base import Decision, Policy, PolicyContext
from ..policies.registry import make_policy
from ..policies.simple import LLMOnly, SLMOnly
from ..runner import Runner, RunSettings
from ..traces.record import Feedback, Recorder, ServedGeneration, ServedRecord
from .guards import BackendHealth, Budgets, GuardedBackend, Meter, ServedPolicy, soften
from .ledger import BudgetExceeded, LedgerError, open_ledger
from .prometheus import ServerMetrics
from .protocol import (
    ApiError,
    ChatCompletionRequest,
    ChunkWriter,
    FeedbackRequest,
    completion_body,
    finish_reason,
    new_id,
    shepherd_object,
    to_generation_request,
    usage_of,
)
from .settings import KeyConfig, ServerSettings, server_settings

log = logging.getLogger("shepherd.server")

#: paths with their own metrics label; others share "other", so request paths cannot grow the metrics
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/models", "/v1/budget", "/v1/feedback", "/admin/reload",
                       "/health", "/metrics"})



@dataclass
class Route:
    name: str
    policy: Policy
    kind: str  # "policy" | "model"
    description: str = ""
    #: the predictor (or baseline) artifact that decides: "<dir>#<12 hex of its content hash>"
    artifact: str | None = None


def _artifact_of(policy: Policy) -> str | None:
    path = getattr(policy, "artifact", None)
    if not isinstance(path, (str, Path)) or not Path(path).is_dir():
        return None
    return artifact_id(path)


class _Capture(Backend):
    """Passes calls through and keeps each generation with the request that addresses it (recording)."""

    def __init__(self, inner: Backend, role: str, out: list[ServedGeneration]) -> None:
        self.inner = inner
        self.role = role
        self.out = out
        self.model_id = inner.model_id
        self.supports_prefix = inner.supports_prefix
        self.hint_mode = inner.hint_mode

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def count_prompt_tokens(self, request: GenerationRequest) -> int:
        return self.inner.count_prompt_tokens(request)

    async def agenerate(self, request: GenerationRequest, n: int = 1) -> list[Generation]:
        gens = await self.inner.agenerate(request, n=n)
        for i, g in enumerate(gens):  # the i-th of n: seed + i, as the trace store addresses it
            req = request if i == 0 or request.seed is None else replace(request, seed=request.seed + i)
            self.out.append(ServedGeneration(self.role, self.model_id, req, g))
        return gens

    async def astream(self, request: GenerationRequest) -> AsyncIterator[StreamChunk]:
        async for chunk in self.inner.astream(request):
            if chunk.generation is not None:
                self.out.append(ServedGeneration(self.role, self.model_id, request, chunk.generation))
            yield chunk


class ServerState:
    """Everything the endpoints share: models, routes, keys, budgets, metrics, health."""

    def __init__(self, config: ShepherdConfig, settings: ServerSettings, slm: Backend, llm: Backend,
                 owned: list[Backend]) -> None:
        self.config = config
        self.settings = settings
        self.slm = slm
        self.llm = llm
        self.owned = owned
        self.slm_price = config.slm.price
        self.llm_price = config.llm.price
        self.max_tokens_default = min(settings.default_max_tokens or config.run.max_tokens,
                                      settings.max_tokens_cap)
        self.run_settings = RunSettings.from_config(config.run, max_tokens=self.max_tokens_default,
                                                    system_prompt=None, on_llm_error=settings.on_llm_error,
                                                    on_slm_error=settings.on_slm_error)
        self.metrics = ServerMetrics()
        self.health = {role: BackendHealth(role, on_error=self._backend_error) for role in ("slm", "llm")}
        self.routes = self._routes()
        self.keys: dict[str, KeyConfig] = {k.digest(): k for k in settings.keys}
        self.budgets = self._budgets()
        self.in_flight = 0
        self.tasks: set[asyncio.Task] = set()
        #: started with the app (lifespan), when `[server.record]` is set
        self.recorder: Recorder | None = None
        self.reloads = 0
        self.ready = not settings.warmup
        self.started = time.time()

    def _backend_error(self, role: str, kind: str) -> None:
        self.metrics.backend_errors.labels(role, kind).inc()

    def _routes(self) -> dict[str, Route]:
        routes: dict[str, Route] = {}
        for name, spec in self.settings.routes(self.config).items():
            given = spec.settings.get("artifact")
            for _ in range(3):  # an artifact rewritten while it loads (a train finishing): load it again
                before = artifact_id(given) if isinstance(given, str) and Path(given).is_dir() else None
                try:
                    policy = make_policy(spec.policy, **spec.settings)
                except ValueError as exc:
                    raise ConfigError(f"server.models.{name}: {exc}") from None
                artifact = _artifact_of(policy)
                if before is None or before == artifact:
                    break
            routes[name] = Route(name, policy, "policy", spec.description or f"policy {spec.policy}", artifact)
        if self.settings.passthrough:
            for alias, role in (("slm", "slm"), ("llm", "llm")):
                routes.setdefault(alias, Route(alias, SLMOnly() if role == "slm" else LLMOnly(), "model",
                                               f"the {role} alone"))
            slm_id, llm_id = self.slm.model_id, self.llm.model_id
            if slm_id != llm_id:  # the same file as both roles: its id would be ambiguous
                routes.setdefault(slm_id, Route(slm_id, SLMOnly(), "model", "the slm alone"))
                routes.setdefault(llm_id, Route(llm_id, LLMOnly(), "model", "the llm alone"))
        return routes

    def reload(self) -> dict[str, str | None]:
        """Rebuild the routes from the config (their policies load their artifacts from disk again) and swap
        them in at once; a request in flight keeps the route, so the policy, it started with. Blocking (it
        reads the artifacts): run it off the event loop. A failure leaves the old routes serving."""
        routes = self._routes()
        self.routes = routes
        self.reloads += 1
        return {name: r.artifact for name, r in routes.items() if r.kind == "policy"}

    def _budgets(self) -> Budgets | None:
        s = self.settings
        if not s.budgets_enabled:
            return None
        ledger = open_ledger(s)
        budgets = Budgets(ledger, global_cap_usd=s.global_budget.cap_usd if s.global_budget else None)
        budgets.on_balances = self.metrics.observe_balances
        balances = []
        for k in s.keys:
            if k.budget_usd is not None:
                balances.append(ledger.set_budget(self.key_account(k), k.budget_usd))
        if s.global_budget:
            b = ledger.set_budget(Budgets.GLOBAL, s.global_budget.cap_usd)
            budgets.global_fraction = b.committed_fraction
            balances.append(b)
        self.metrics.observe_balances(balances)
        ledger.close()  # this thread's connection: none may outlive a fork of a preloading server
        return budgets

    @staticmethod
    def key_account(key: KeyConfig) -> str:
        return f"key:{key.name}"

    def accounts(self, key: KeyConfig | None) -> list[str]:
        out = []
        if key is not None and key.budget_usd is not None:
            out.append(self.key_account(key))
        if self.settings.global_budget is not None:
            out.append(Budgets.GLOBAL)
        return out

    # -- request helpers ---------------------------------------------------------------------------
    def authenticate(self, request: Request) -> KeyConfig | None:
        if not self.keys:
            return None
        header = request.headers.get("authorization", "")
        if not header[:7].lower() == "bearer " or not header[7:].strip():
            raise ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'",
                           code="invalid_api_key", headers={"www-authenticate": "Bearer"})
        key = self.keys.get(hashlib.sha256(header[7:].strip().encode("utf-8", "surrogatepass")).hexdigest())
        if key is None:
            raise ApiError(401, "invalid API key", code="invalid_api_key", headers={"www-authenticate": "Bearer"})
        return key

    def route(self, name: str) -> Route:
        route = self.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.routes))
            raise ApiError(404, f"the model {name!r} does not exist; this server offers: {known}",
                           code="model_not_found", param="model")
        return route

    def adjust(self, decision: Decision, ctx: PolicyContext) -> Decision:
        g = self.settings.global_budget
        assert g is not None and self.budgets is not None
        cap = ctx.request.max_tokens or self.max_tokens_default
        return soften(decision, self.budgets.global_fraction, g.soften_from, g.slm_only_from, cap)


# -- responses ---------------------------------------------------------------------------------------

async def _send_error(send, err: ApiError) -> None:
    headers = [(b"content-type", b"application/json")]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": err.body_bytes(), "more_body": False})


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def _watch_disconnect(receive, put) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            put(("disconnect",))
            return


class _ClientGone(Exception):
    pass


class ChatResponse(Response):
    """Runs the answer while watching the connection; sends JSON or SSE once it knows the status."""

    def __init__(self, state: ServerState, key: KeyConfig | None, route: Route, body: ChatCompletionRequest,
                 greq: GenerationRequest) -> None:
        self.state = state
        self.key = key
        self.route = route
        self.body = body
        self.greq = greq
        self.stream = bool(body.stream)
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.rid = new_id()
        self.background = None
        self.status_code = 200
        self.meter: Meter | None = None

    async def __call__(self, scope, receive, send) -> None:
        st = self.state
        if st.in_flight >= st.settings.max_in_flight:
            await _send_error(send, ApiError(
                503, f"server busy: {st.in_flight} requests in flight (max_in_flight)", type="server_error",
                code="server_busy", headers={"retry-after": "1"}))
            return
        st.in_flight += 1
        st.metrics.in_flight.inc()
        queue: asyncio.Queue = asyncio.Queue()
        work = asyncio.create_task(self._work(queue.put_nowait))
        st.tasks.add(work)
        watcher = asyncio.create_task(_watch_disconnect(receive, queue.put_nowait))
        try:
            if self.stream:
                await self._send_stream(queue, send)
            else:
                await self._send_whole(queue, send)
        except _ClientGone:
            gone = True
        else:
            gone = False
        finally:
            watcher.cancel()
            if not work.done():
                work.cancel()
            # wait for the answer task's cleanup (streams closed, ledger settled): nothing left running
            await asyncio.wait([work])
            st.tasks.discard(work)
            st.in_flight -= 1
            st.metrics.in_flight.dec()
        if gone:
            self._gone()

    def _gone(self) -> None:
        m = self.state.metrics
        m.disconnects.labels(self.route.name).inc()
        if self.meter is not None and self.meter.spent_usd > 0:  # what the abandoned answer had cost
            m.cost.labels(self.route.name, self.key.name if self.key else "anonymous").inc(self.meter.spent_usd)

    # -- the answer ----------------------------------------------------------------------------------
    async def _work(self, put) -> None:
        st = self.state
        try:
            accounts = st.accounts(self.key)
            if accounts:
                for b in await st.budgets.balances(accounts):
                    if b.account != Budgets.GLOBAL and b.exhausted:
                        raise BudgetExceeded(b, 0.0)
            self.meter = Meter(st.budgets, accounts)
            s = st.settings
            slm: Backend = GuardedBackend(st.slm, role="slm", price=st.slm_price, timeout_s=s.slm_timeout_s,
                                          meter=self.meter, default_max_tokens=st.max_tokens_default,
                                          margin=s.reserve_margin, health=st.health["slm"])
            llm: Backend = GuardedBackend(st.llm, role="llm", price=st.llm_price, timeout_s=s.llm_timeout_s,
                                          meter=self.meter, default_max_tokens=st.max_tokens_default,
                                          margin=s.reserve_margin, health=st.health["llm"])
            captured: list[ServedGeneration] | None = None
            if st.recorder is not None:
                captured = []
                slm, llm = _Capture(slm, "slm", captured), _Capture(llm, "llm", captured)
            runner = Runner(slm, llm, slm_price=st.slm_price, llm_price=st.llm_price, settings=st.run_settings)
            hint = self.body.shepherd.hint_tokens if self.body.shepherd else None
            if self.route.kind == "model":
                hint = None  # a model name means that model alone
            policy = ServedPolicy(self.route.policy, hint_tokens=hint,
                                  adjust=st.adjust if s.global_budget is not None else None)
            emit = (lambda source, text: put(("delta", source, text))) if self.stream else None
            answer = await runner.answer(self.greq, policy, emit=emit)
            if captured is not None:
                self._record(answer, captured)
            put(("done", answer))
        except asyncio.CancelledError:
            raise
        except ApiError as exc:
            put(("error", exc))
        except BudgetExceeded as exc:
            name = self.key.name if self.key else "anonymous"
            st.metrics.budget_rejections.labels(name if exc.balance.account != Budgets.GLOBAL else "global").inc()
            scope = "the server's global budget" if exc.balance.account == Budgets.GLOBAL else f"key {name!r}"
            put(("error", ApiError(429, f"budget exhausted for {scope}: {exc}", type="insufficient_quota",
                                   code="budget_exceeded", headers={"x-should-retry": "false"})))
        except PromptTooLong as exc:
            put(("error", ApiError(400, f"the request does not fit the model's context window: {exc}",
                                   type="invalid_request_error", code="context_length_exceeded")))
        except BackendError as exc:
            put(("error", ApiError(503, f"no model could answer: {_reason(exc)}", type="server_error",
                                   code="backend_unavailable")))
        except LedgerError as exc:  # the budgets cannot be checked: no paid call without them
            log.error("chat request %s: %s", self.rid, exc)
            put(("error", ApiError(503, f"the budget ledger is unavailable: {exc}", type="server_error",
                                   code="ledger_unavailable", headers={"retry-after": "1"})))
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("chat request %s failed", self.rid)
            put(("error", ApiError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                                   code="internal_error")))

    def _record(self, answer, captured: list[ServedGeneration]) -> None:
        d = answer.decision
        decision = {"label": d.label, "kind": d.kind, "hint_tokens": answer.hint_tokens, "reason": d.reason}
        self.state.recorder.submit(ServedRecord(  # type: ignore[union-attr]
            response_id=self.rid, key_name=self.key.name if self.key else "anonymous", route=self.route.name,
            policy=answer.policy, request=self.greq, answer=answer.text, decision=decision,
            cost_usd=answer.cost.total, llm_only_cost_usd=answer.llm_only_cost_usd, latency_s=answer.latency_s,
            artifact=self.route.artifact, generations=captured))

    def _extra(self, answer) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.route.name}
        if self.route.artifact is not None:
            out["artifact"] = self.route.artifact
        if self.meter is not None and self.meter.accounts:
            details = answer.decision.details
            out["budget"] = {"charged_usd": self.meter.spent_usd,
                             "mode": details.get("budget_mode", "normal"),
                             "global_committed_fraction": self.state.budgets.global_fraction
                             if self.state.settings.global_budget else None}
        return out

    def _observe(self, answer) -> None:
        self.state.metrics.observe_answer(self.route.name, self.key.name if self.key else "anonymous", answer,
                                          self.stream)

    # -- sending -------------------------------------------------------------------------------------
    @staticmethod
    async def _send(send, message) -> None:
        try:
            await send(message)
        except OSError as exc:  # some servers raise once the client is gone
            raise _ClientGone() from exc

    async def _send_error(self, send, err: ApiError) -> None:
        try:
            await _send_error(send, err)
        except OSError as exc:
            raise _ClientGone() from exc

    async def _send_whole(self, queue: asyncio.Queue, send) -> None:
        event = await queue.get()
        if event[0] == "disconnect":
            raise _ClientGone()
        if event[0] == "error":
            await self._send_error(send, event[1])
            return
        answer = event[1]
        body = completion_body(answer, rid=self.rid, model=self.body.model, extra=self._extra(answer))
        await self._send(send, {"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"x-request-id", self.rid.encode())]})
        await self._send(send, {"type": "http.response.body", "body": body, "more_body": False})
        self._observe(answer)

    async def _send_stream(self, queue: asyncio.Queue, send) -> None:
        writer = ChunkWriter(self.rid, self.body.model)
        started = False
        t0 = time.perf_counter()
        while True:
            event = await queue.get()
            kind = event[0]
            if kind == "disconnect":
                raise _ClientGone()
            if kind == "error":
                if not started:
                    await self._send_error(send, event[1])
                else:  # the status is already 200: the error goes in the stream (the OpenAI SDK raises it)
                    await self._send(send, {"type": "http.response.body", "body": writer.error(event[1]),
                                            "more_body": False})
                return
            out = []
            if not started:
                await self._send(send, {"type": "http.response.start", "status": 200, "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"), (b"x-request-id", self.rid.encode())]})
                out.append(writer.role())
                started = True
                if kind == "delta":
                    self.state.metrics.ttft.labels(self.route.name).observe(time.perf_counter() - t0)
            done = None
            while True:  # send what has piled up in one write
                if event[0] == "delta":
                    out.append(writer.delta(event[2], event[1]))
                elif event[0] == "done":
                    done = event[1]
                    break
                else:  # an error or a disconnect after some text: handle it on the next turn
                    queue.put_nowait(event)
                    break
                if queue.empty():
                    break
                event = queue.get_nowait()
            if done is not None:
                usage, shep = usage_of(done), shepherd_object(done, self._extra(done))
                if self.include_usage:
                    out += [writer.finish(finish_reason(done)), writer.usage(usage, shep)]
                else:
                    out.append(writer.finish(finish_reason(done), usage, shep))
                out.append(ChunkWriter.DONE)
                await self._send(send, {"type": "http.response.body", "body": b"".join(out), "more_body": False})
                self._observe(done)
                return
            await self._send(send, {"type": "http.response.body", "body": b"".join(out), "more_body": True})


def _reason(exc: BaseException) -> str:
    """The failures behind a BackendError, oldest first (the runner raises the fallback's inside the first's)."""
    seen, chain = set(), []
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, BackendError):
            chain.append(str(e))
        e = e.__context__
    return "; then ".join(reversed(chain)) or str(exc)


# -- the edge: body size limit and request metrics ----------------------------------------------------

class EdgeMiddleware:
    def __init__(self, app, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.limit = state.settings.max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = [499]  # nothing sent: the client left first (nginx's code for it)

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if scope["method"] in ("POST", "PUT", "PATCH"):
                receive = await self._limited_body(scope, receive, send_status)
                if receive is None:
                    return
            await self.app(scope, receive, send_status)
        except Exception:
            if status[0] == 499:  # a crash before any response: the outer middleware answers 500
                status[0] = 500
            raise
        finally:
            m = self.state.metrics
            m.requests.labels(endpoint, str(status[0])).inc()
            m.request_latency.labels(endpoint).observe(time.perf_counter() - t0)

    async def _limited_body(self, scope, receive, send):
        """Read the whole body (at most the limit), then replay it; a larger body gets a 413."""
        too_large = ApiError(413, f"request body is larger than {self.limit} bytes", code="body_too_large")
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_error(send, ApiError(400, "invalid Content-Length header"))
                    return None
                if declared > self.limit:
                    await _send_error(send, too_large)
                    return None
                break
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _send_error(send, too_large)
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


# -- the app -------------------------------------------------------------------------------------------

_ERROR_SCHEMA = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"],
    "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                   "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}


def _err(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}


CHAT_RESPONSES: dict[int | str, dict] = {
    200: {"description": "chat.completion JSON, or chat.completion.chunk server-sent events when stream=true",
          "content": {"application/json": {"schema": {"type": "object", "required": ["choices", "usage",
                                                                                    "shepherd"]}},
                      "text/event-stream": {"schema": {"type": "string"}}}},
    400: _err("invalid request"), 401: _err("missing or invalid API key"), 404: _err("unknown model"),
    413: _err("request body too large"), 429: _err("budget exhausted"),
    503: _err("no model could answer, or the server is busy"),
}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    parts, param = [], None
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc)
        if err.get("type") == "json_invalid":
            detail = (err.get("ctx") or {}).get("error", "")
            return f"request body is not valid JSON: {detail}".rstrip(": "), None
        if not where and err.get("type") in ("model_attributes_type", "dict_type", "missing"):
            return ("the request body must be a JSON object (send Content-Type: application/json)"
                    if err.get("type") != "missing" else "the request body is missing"), None
        param = param or where or None
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more, param


def create_app(config: ShepherdConfig | str | Path | None = None,
               backends: Mapping[str, Backend] | None = None) -> FastAPI:
    """The server. `backends` ({"slm": ..., "llm": ...}) replaces the configured models (tests inject
    ScriptedBackends); models built here from the config are loaded at startup and closed at shutdown."""
    cfg = config if isinstance(config, ShepherdConfig) else load_config(config)
    settings = server_settings(cfg)
    backends = dict(backends or {})
    owned: list[Backend] = []
    for role in ("slm", "llm"):
        if role not in backends:
            from ..models.factory import build_backend

            backends[role] = build_backend(getattr(cfg, role))
            owned.append(backends[role])
    state = ServerState(cfg, settings, backends["slm"], backends["llm"], owned)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.warmup:
            await asyncio.to_thread(_warm, [state.slm, state.llm])
        if state.budgets is not None:
            expired = await state.budgets.call(state.budgets.ledger.expire_stale, settings.stale_reservation_s)
            if expired:
                log.warning("counted %d stale reservations from a previous run as spent", expired)
            state.budgets.start()  # heartbeats (PostgreSQL) start before the first request
        rec = settings.record
        if rec is not None:
            state.recorder = Recorder(rec.resolved_path(), hash_messages=rec.hash_messages,
                                      max_requests=rec.max_requests, max_age_days=rec.max_age_days)
        hup = _on_sighup(state)
        state.ready = True
        try:
            yield
        finally:
            if hup:
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
            state.ready = False
            for task in list(state.tasks):
                task.cancel()
            if state.tasks:
                await asyncio.wait(list(state.tasks), timeout=10)
            if state.budgets is not None:
                state.budgets.close()
            if state.recorder is not None:
                await asyncio.to_thread(state.recorder.close)
                state.recorder = None
            for b in state.owned:
                await b.aclose()

    app = FastAPI(title="llm-shepherd", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="OpenAI-compatible chat completions answered by a small model that buys "
                              "hints from a large one.")
    app.state.shepherd = state
    app.add_middleware(EdgeMiddleware, state=state)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(ApiError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else None
        err = ApiError(exc.status_code, str(exc.detail), code=kind,
                       type="invalid_request_error" if exc.status_code < 500 else "server_error")
        err.headers = dict(exc.headers or {})
        return error_response(err)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return error_response(ApiError(500, f"internal error: {type(exc).__name__}", type="server_error",
                                       code="internal_error"))

    @app.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES,
              summary="Create a chat completion (shepherded)")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        key = state.authenticate(request)
        route = state.route(body.model)
        greq = to_generation_request(body, default_max_tokens=state.max_tokens_default,
                                     max_tokens_cap=settings.max_tokens_cap, max_messages=settings.max_messages,
                                     passthrough=route.kind == "model")
        return ChatResponse(state, key, route, body, greq)

    @app.get("/v1/models", responses={401: _err("missing or invalid API key")}, summary="List models")
    async def list_models(request: Request) -> dict:
        state.authenticate(request)
        created = int(state.started)
        return {"object": "list", "data": [
            {"id": r.name, "object": "model", "created": created, "owned_by": "shepherd",
             "shepherd": {"kind": r.kind, "policy": r.policy.name, "description": r.description}}
            for r in state.routes.values()]}

    @app.get("/v1/models/{model_id:path}", responses={401: _err("missing or invalid API key"),
                                                     404: _err("unknown model")}, summary="Describe a model")
    async def get_model(model_id: str, request: Request) -> dict:
        state.authenticate(request)
        r = state.route(model_id)
        return {"id": r.name, "object": "model", "created": int(state.started), "owned_by": "shepherd",
                "shepherd": {"kind": r.kind, "policy": r.policy.name, "description": r.description}}

    @app.get("/v1/budget", responses={401: _err("missing or invalid API key")},
             summary="The caller's budget: spent, reserved and remaining dollars")
    async def budget(request: Request) -> dict:
        key = state.authenticate(request)
        accounts = state.accounts(key)
        if not accounts or state.budgets is None:
            return {"object": "budget", "accounts": []}
        balances = await state.budgets.call(state.budgets.ledger.balances, accounts)
        return {"object": "budget", "accounts": [b.to_dict() for b in balances]}

    @app.post("/v1/feedback", responses={400: _err("malformed feedback"), 401: _err("missing or invalid API key"),
                                         404: _err("no response with this id was served to this key"),
                                         409: _err("this server does not record its answers"),
                                         413: _err("request body too large")},
              summary="Rate an answer this key received: a score in [0, 1] and/or a corrected answer")
    async def feedback(body: FeedbackRequest, request: Request) -> dict:
        key = state.authenticate(request)
        recorder = state.recorder
        if recorder is None:
            raise ApiError(409, "this server does not record its answers ([server.record] is not set), so there "
                           "is nothing to attach feedback to", code="recording_disabled")
        name = key.name if key else "anonymous"
        fb = Feedback(score=body.score, corrected_answer=body.corrected_answer)
        if not await asyncio.to_thread(recorder.feedback, body.response_id, name, fb):
            raise ApiError(404, f"no response {body.response_id!r} was served to this key (unknown, another "
                           "key's, or past the record's retention)", code="response_not_found",
                           param="response_id")
        return {"object": "feedback", "response_id": body.response_id, "score": body.score,
                "corrected_answer": body.corrected_answer}

    @app.post("/admin/reload", responses={401: _err("missing or invalid API key"), 403: _err("not an admin key"),
                                          413: _err("request body too large"),
                                          500: _err("the reload failed; the old policies keep serving")},
              summary="Reload the routes' policies (and their artifacts) from disk, without a restart")
    async def admin_reload(request: Request) -> dict:
        key = state.authenticate(request)
        if key is None or not key.admin:
            raise ApiError(403, "reloading needs an API key with admin = true", type="permission_error",
                           code="forbidden")
        try:
            artifacts = await asyncio.to_thread(state.reload)
        except (ConfigError, ValueError, OSError) as exc:
            raise ApiError(500, f"reload failed, the old policies keep serving: {exc}", type="server_error",
                           code="reload_failed") from None
        return {"object": "reload", "reloads": state.reloads, "artifacts": artifacts}

    @app.get("/health", summary="Liveness, readiness and the last backend failures")
    async def health() -> dict:
        return {"status": "ok" if state.ready else "starting", "ready": state.ready,
                "version": __version__, "in_flight": state.in_flight,
                "models": {"slm": state.slm.model_id, "llm": state.llm.model_id},
                "backends": {role: h.to_dict() for role, h in state.health.items()}}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        data, content_type = state.metrics.render()
        return Response(data, media_type=content_type)

    return app


def _on_sighup(state: ServerState) -> bool:
    """SIGHUP reloads the policies (as POST /admin/reload does); False where signals cannot be set here (not
    the main thread, or no SIGHUP on this platform)."""
    loop = asyncio.get_running_loop()

    def reload() -> None:
        async def run() -> None:
            try:
                artifacts = await asyncio.to_thread(state.reload)
                log.info("SIGHUP: reloaded the policies: %s", artifacts)
            except Exception:
                log.exception("SIGHUP: reload failed, the old policies keep serving")

        task = loop.create_task(run())
        state.tasks.add(task)
        task.add_done_callback(state.tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (ValueError, RuntimeError, NotImplementedError, AttributeError):
        return False
    return True


def _warm(backends: list[Backend]) -> None:
    for b in backends:
        load = getattr(b, "load", None)
        if callable(load):
            try:
                load()
            except BackendError as exc:  # the first request will report it
                log.warning("could not load %s at startup: %s", b.model_id, exc)
