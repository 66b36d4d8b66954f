"""Render a model's own chat template, so an assistant prefix can be appended and continued.

Used by the in-process GGUF backend (template from the GGUF metadata) and by the HTTP backend's
`/v1/completions` route (template given in config or read from a local GGUF).
"""

from __future__ import annotations

import datetime
import json
from functools import lru_cache

from .base import GenerationRequest, Message

#: ChatML, the template of Qwen2.5 and many others; used when a model ships none
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

BUILTIN_TEMPLATES = {"chatml": CHATML}


class TemplateError(ValueError):
    pass


@lru_cache(maxsize=16)
def _compile(source: str):
    from jinja2 import StrictUndefined  # noqa: F401  (jinja2 is a core dependency)
    from jinja2.exceptions import TemplateError as JinjaError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message):
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    try:
        return env.from_string(source)
    except JinjaError as exc:
        raise TemplateError(f"chat template does not compile: {exc}") from exc


def render_prompt(template: str, messages: list[Message], prefix: str = "", *, bos_token: str = "",
                  eos_token: str = "") -> str:
    """The text a completion endpoint must continue: the rendered conversation, an open assistant turn,
    and the prefix (hint) already written into it."""
    source = BUILTIN_TEMPLATES.get(template, template)
    rendered = _compile(source).render(messages=messages, add_generation_prompt=True, bos_token=bos_token,
                                       eos_token=eos_token, tools=None)
    return rendered + prefix


def render_request(template: str, request: GenerationRequest, **tokens: str) -> str:
    return render_prompt(template, request.message_dicts, request.prefix, **tokens)
