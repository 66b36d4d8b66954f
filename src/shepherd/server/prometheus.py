"""Prometheus metrics of one app (its own registry, so several apps in one process do not collide).

Labels are bounded: `model` is a configured route name, `key` a configured key name, never free text
from a request.
"""

from __future__ import annotations

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
HINT_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._cache: dict = {}
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("shepherd_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.request_latency = Histogram("shepherd_request_latency_seconds",
                                         "Time from request to the end of the response, by endpoint",
                                         ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.answer_latency = Histogram("shepherd_answer_latency_seconds",
                                        "Time to a whole answer, by model and streaming",
                                        ["model", "stream"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("shepherd_time_to_first_token_seconds", "Time to the first streamed text",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.decisions = Counter("shepherd_decisions", "Decisions carried out, by model and kind",
                                 ["model", "kind"], registry=r)
        self.hint_tokens = Counter("shepherd_hint_tokens", "LLM tokens bought as hints", ["model"], registry=r)
        self.hint_size = Histogram("shepherd_hint_size_tokens", "Hint length per hinted answer", ["model"],
                                   buckets=HINT_BUCKETS, registry=r)
        self.tokens = Counter("shepherd_tokens", "Tokens processed, by model role and kind",
                              ["role", "kind"], registry=r)
        self.cost = Counter("shepherd_cost_usd", "Dollars spent on answers", ["model", "key"], registry=r)
        self.llm_only_cost = Counter("shepherd_llm_only_cost_usd",
                                     "What the same answers would have cost from the LLM alone",
                                     ["model", "key"], registry=r)
        self.degraded = Counter("shepherd_degraded_answers", "Answers given by a fallback", ["model"], registry=r)
        self.backend_errors = Counter("shepherd_backend_errors", "Backend failures by role and kind",
                                      ["role", "kind"], registry=r)
        self.budget_rejections = Counter("shepherd_budget_rejections", "Requests refused for budget",
                                         ["key"], registry=r)
        self.disconnects = Counter("shepherd_client_disconnects", "Clients gone before the answer ended",
                                   ["model"], registry=r)
        self.in_flight = Gauge("shepherd_in_flight_requests", "Chat requests being answered", registry=r)
        self.budget_spent = Gauge("shepherd_budget_spent_usd", "Dollars spent per ledger account",
                                  ["account"], registry=r)
        self.budget_limit = Gauge("shepherd_budget_limit_usd", "Budget per ledger account", ["account"],
                                  registry=r)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _children(self, model: str, key: str, stream: bool):
        """The labelled series of one (model, key, stream), looked up once."""
        k = (model, key, stream)
        c = self._cache.get(k)
        if c is None:
            c = self._cache[k] = {
                "decisions": {kind: self.decisions.labels(model, kind) for kind in ("slm", "hint", "llm")},
                "hint_tokens": self.hint_tokens.labels(model),
                "hint_size": self.hint_size.labels(model),
                "tokens": {(role, kind): self.tokens.labels(role, kind) for role in ("llm", "slm")
                           for kind in ("prompt", "completion")},
                "cost": self.cost.labels(model, key),
                "llm_only_cost": self.llm_only_cost.labels(model, key),
                "degraded": self.degraded.labels(model),
                "latency": self.answer_latency.labels(model, "true" if stream else "false"),
            }
        return c

    def observe_answer(self, model: str, key: str, answer, stream: bool) -> None:
        c = self._children(model, key, stream)
        d = answer.decision
        c["decisions"][d.kind].inc()
        if answer.hint_tokens:
            c["hint_tokens"].inc(answer.hint_tokens)
        if d.kind == "hint":
            c["hint_size"].observe(answer.hint_tokens)
        for role, u in answer.usage.items():
            if u.prompt_tokens:
                c["tokens"][(role, "prompt")].inc(u.prompt_tokens)
            if u.completion_tokens:
                c["tokens"][(role, "completion")].inc(u.completion_tokens)
        if answer.cost.total > 0:
            c["cost"].inc(answer.cost.total)
        if answer.llm_only_cost_usd > 0:
            c["llm_only_cost"].inc(answer.llm_only_cost_usd)
        if answer.degraded:
            c["degraded"].inc()
        c["latency"].observe(answer.latency_s)

    def observe_balances(self, balances) -> None:
        for b in balances:
            self.budget_spent.labels(b.account).set(b.spent_usd)
            if b.budget_usd is not None:
                self.budget_limit.labels(b.account).set(b.budget_usd)
