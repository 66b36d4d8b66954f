"""Fuzz the API from its own OpenAPI schema (schemathesis), scripted models behind it: no 5xx, ever.

Valid and invalid requests (positive and negative generation) against every operation, checked by all
of schemathesis's default checks (no server error, documented status codes and content types, response
schemas, invalid data rejected) except `positive_data_acceptance`: the server rightly refuses some
schema-valid requests (a whitespace-only question, n = 2) with a 400.
"""

from __future__ import annotations

import hypothesis
import schemathesis
from schemathesis.checks import positive_data_acceptance
from schemathesis.generation.modes import GenerationMode

from shepherd.server import create_app

from .support import make_config, scripted

_slm, _llm = scripted()
APP = create_app(make_config({"max_body_bytes": 65536, "max_tokens_cap": 256}), {"slm": _slm, "llm": _llm})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@hypothesis.settings(max_examples=100, deadline=None, derandomize=True,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_never_answers_5xx(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
