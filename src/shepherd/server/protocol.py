"""The OpenAI chat-completions wire format: request models, error bodies, response and chunk JSON.

Requests accept the fields OpenAI clients send and ignore the ones that do not change a text answer
(frequency_penalty, logit_bias, user, ...); fields that would silently change the meaning of the
answer (n > 1, tools, non-text content, a JSON response_format) are refused with a 400.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..answer import Answer
from ..models.base import GenerationRequest


class ApiError(Exception):
    """An error the client gets as OpenAI-style JSON: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode("utf-8")


# -- request ---------------------------------------------------------------------------------------

class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ShepherdOptions(BaseModel):
    """Extensions a client may send in a `shepherd` object (OpenAI SDK: extra_body={"shepherd": {...}})."""

    model_config = ConfigDict(extra="forbid")
    #: buy exactly this many LLM tokens as the hint, whatever the model's policy would decide
    hint_tokens: int | None = Field(None, ge=0)


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    shepherd: ShepherdOptions | None = None


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: a caller's verdict on an answer it received (by the response's `id`)."""

    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(..., min_length=1, max_length=128)
    #: 1 right, 0 wrong (and anything between)
    score: float | None = Field(None, ge=0.0, le=1.0)
    #: what the answer should have been
    corrected_answer: str | None = Field(None, min_length=1)  # bounded by max_body_bytes

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.score is None and self.corrected_answer is None:
            raise ValueError("give a score (0..1) and/or a corrected_answer")
        return self


def _text(content: str | list[ContentPart] | None, i: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.type != "text" or part.text is None:
            raise ApiError(400, f"messages[{i}].content: only text parts are supported, got {part.type!r}",
                           param=f"messages[{i}].content")
        parts.append(part.text)
    return "".join(parts)


#: fields of the OpenAI chat API this server cannot honour: set to anything but their default, they get a
#: 400 that says why, rather than an answer made as if they had not been sent
REJECTED_FIELDS = {
    "frequency_penalty": "no repetition penalties: the models decode without them",
    "presence_penalty": "no repetition penalties: the models decode without them",
    "logit_bias": "no logit bias: a hint's tokens come from the LLM unbiased",
    "logprobs": "log-probabilities are not returned (the `shepherd` object reports the answer's segments)",
    "top_logprobs": "log-probabilities are not returned",
    "tool_choice": "tools are not supported",
    "functions": "function calling is not supported",
    "function_call": "function calling is not supported",
    "parallel_tool_calls": "tools are not supported",
    "audio": "only text",
    "modalities": "only text",
    "prediction": "predicted outputs are not supported",
    "reasoning_effort": "no reasoning-effort control",
    "web_search_options": "no web search",
}
#: accepted and not used: they describe the caller, never the answer
IGNORED_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "safety_identifier", "prompt_cache_key"})


def _unset(value: Any) -> bool:
    return value is None or value is False or value == 0 or value == {} or value == []


def to_generation_request(body: ChatCompletionRequest, *, default_max_tokens: int, max_tokens_cap: int,
                          max_messages: int, passthrough: bool = False) -> GenerationRequest:
    """Validate what pydantic cannot and build the core request; raises ApiError(400).

    Sampling the client leaves unset: on a shepherding route, greedy with seed 0 (what the sweeps and the
    policies assume); on a pass-through route (`passthrough`: one model, no policy), the API's defaults
    (temperature 1, top_p 1, no seed), as the model's own endpoint would."""
    for name, value in (body.model_extra or {}).items():
        if name in IGNORED_FIELDS:
            continue
        if name in REJECTED_FIELDS:
            if not _unset(value):
                raise ApiError(400, f"{name} is not supported: {REJECTED_FIELDS[name]}", param=name)
            continue
        raise ApiError(400, f"unknown field {name!r}: this server does not use it, and would otherwise answer as "
                       "if it had not been sent", param=name)
    if body.n not in (None, 1):
        raise ApiError(400, "n must be 1: the server returns one answer per request", param="n")
    if body.tools:
        raise ApiError(400, "tools are not supported by this server", param="tools")
    if body.response_format and body.response_format.get("type", "text") != "text":
        raise ApiError(400, "only response_format {\"type\": \"text\"} is supported", param="response_format")
    if len(body.messages) > max_messages:
        raise ApiError(400, f"too many messages: {len(body.messages)} > {max_messages}", param="messages")
    max_tokens = body.max_completion_tokens or body.max_tokens
    if max_tokens is None:
        max_tokens = min(default_max_tokens, max_tokens_cap)
    elif max_tokens > max_tokens_cap:
        param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise ApiError(400, f"{param} is {max_tokens}; this server allows at most {max_tokens_cap}", param=param)
    stop = body.stop
    if isinstance(stop, str):
        stop = [stop]
    stop = [s for s in (stop or []) if s]
    if len(stop) > 4:
        raise ApiError(400, "stop: at most 4 sequences", param="stop")
    messages = []
    for i, m in enumerate(body.messages):
        role = "system" if m.role == "developer" else m.role
        messages.append({"role": role, "content": _text(m.content, i)})
    for i, m in enumerate(messages):
        _check_unicode(m["content"], f"messages[{i}].content")
    for s in stop:
        _check_unicode(s, "stop")
    hint = body.shepherd.hint_tokens if body.shepherd else None
    if hint is not None and hint > max_tokens:
        raise ApiError(400, f"shepherd.hint_tokens ({hint}) is larger than max_tokens ({max_tokens})",
                       param="shepherd.hint_tokens")
    try:
        return GenerationRequest.create(
            messages,
            max_tokens=max_tokens,
            temperature=(1.0 if passthrough else 0.0) if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            seed=(body.seed % 2**32) if body.seed is not None else (None if passthrough else 0),
            stop=stop,
        )
    except ValueError as exc:
        raise ApiError(400, str(exc), param="messages") from None


def _check_unicode(text: str, param: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{param}: text is not valid Unicode (lone surrogate)", param=param) from None


# -- response ----------------------------------------------------------------------------------------

def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex


def finish_reason(answer: Answer) -> str:
    if answer.decision.answer_text is not None or not answer.generations:
        return "stop"
    reason = answer.generations[-1][1].finish_reason
    return reason if reason in ("stop", "length") else "stop"


def usage_of(answer: Answer) -> dict[str, int]:
    """Every token the request processed, over both models (`shepherd.usage` splits it by model)."""
    prompt = sum(u.prompt_tokens for u in answer.usage.values())
    completion = sum(u.completion_tokens for u in answer.usage.values())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def shepherd_object(answer: Answer, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    d = answer.decision
    out = {
        "decision": d.label,
        "decision_kind": d.kind,
        "policy": answer.policy,
        "reason": d.reason,
        "hint_tokens": answer.hint_tokens,
        "hint_text": answer.hint_text,
        "hint_mode": answer.hint_mode,
        "cost_usd": answer.cost.total,
        "llm_only_cost_usd": answer.llm_only_cost_usd,
        "savings_usd": answer.llm_only_cost_usd - answer.cost.total,
        "cost": _cost_dict(answer.cost),
        "usage": {role: {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                         "calls": u.calls} for role, u in answer.usage.items()},
        "degraded": answer.degraded,
        "notes": list(answer.notes),
        "latency_s": answer.latency_s,
    }
    if d.details:
        out["details"] = _jsonable(d.details)
    if answer.segments:
        out["segments"] = answer.segment_dicts()
    if extra:
        out.update(extra)
    return out


def _cost_dict(c) -> dict[str, float]:  # dataclasses.asdict is slow on the hot path
    out = {"llm_input": c.llm_input, "llm_output": c.llm_output, "slm_input": c.slm_input,
           "slm_output": c.slm_output, "total": c.total}
    if c.llm_cached_input or c.slm_cached_input:  # only answers that re-read a cached prompt have the lines
        out["llm_cached_input"], out["slm_cached_input"] = c.llm_cached_input, c.slm_cached_input
    return out


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return json.loads(json.dumps(value, default=str))


def completion_body(answer: Answer, *, rid: str, model: str, extra: dict[str, Any] | None = None) -> bytes:
    body = {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                     "logprobs": None, "finish_reason": finish_reason(answer)}],
        "usage": usage_of(answer),
        "shepherd": shepherd_object(answer, extra),
    }
    return json.dumps(body).encode("utf-8")


class ChunkWriter:
    """chat.completion.chunk SSE lines for one stream; the constant head is built once."""

    def __init__(self, rid: str, model: str) -> None:
        self._head = ('{"id":' + json.dumps(rid) + ',"object":"chat.completion.chunk","created":'
                      + str(int(time.time())) + ',"model":' + json.dumps(model) + ",")

    def role(self) -> bytes:
        return self._line('"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                          '"logprobs":null,"finish_reason":null}]}')

    def delta(self, text: str, source: str) -> bytes:
        return self._line('"choices":[{"index":0,"delta":{"content":' + json.dumps(text)
                          + '},"logprobs":null,"finish_reason":null}],"shepherd":{"source":"' + source + '"}}')

    def finish(self, reason: str, usage: dict | None = None, shepherd: dict | None = None) -> bytes:
        tail = '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"' + reason + '"}]'
        if usage is not None:
            tail += ',"usage":' + json.dumps(usage)
        if shepherd is not None:
            tail += ',"shepherd":' + json.dumps(shepherd)
        return self._line(tail + "}")

    def usage(self, usage: dict, shepherd: dict) -> bytes:
        return self._line('"choices":[],"usage":' + json.dumps(usage) + ',"shepherd":' + json.dumps(shepherd) + "}")

    def _line(self, tail: str) -> bytes:
        return ("data: " + self._head + tail + "\n\n").encode("utf-8")

    @staticmethod
    def error(err: ApiError) -> bytes:
        return b"data: " + err.body_bytes() + b"\n\n"

    DONE = b"data: [DONE]\n\n"
