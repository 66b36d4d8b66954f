"""Cut hints from one stored full answer: the first n LLM tokens, for every grid fraction, without any
further LLM call.

The text is tokenized with the LLM's own tokenizer and the first n tokens detokenized:
  - a backend with `tokenize(text) -> list[int]` and `detokenize(ids) -> str` is used directly (the
    in-process llama.cpp backend has them, vocabulary only, no weights needed);
  - any other backend through `count_tokens` alone: a binary search for the longest character cut
    whose token count is at most n (exact for tokenizers whose counts grow with the text).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..models.base import Backend


def hint_tokens_for(fraction: float, full_tokens: int) -> int:
    """n = round(f * L), rounding halves up (Python's round() would send 2.5 to 2)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"hint fraction must be in [0, 1], got {fraction}")
    return min(full_tokens, math.floor(fraction * full_tokens + 0.5))


@dataclass
class TokenCutter:
    """The first n tokens of one text, in one model's tokenizer."""

    text: str
    length: int
    _cut: Callable[[int], str]
    method: str

    def cut(self, n: int) -> str:
        if n <= 0:
            return ""
        if n >= self.length:
            return self.text
        return self._cut(n)


def _unwrap(backend: Backend) -> Backend:
    seen = set()
    while getattr(backend, "inner", None) is not None and id(backend) not in seen:
        seen.add(id(backend))
        backend = backend.inner  # type: ignore[attr-defined]
    return backend


def token_cutter(backend: Backend, text: str) -> TokenCutter:
    b = _unwrap(backend)
    tokenize = getattr(b, "tokenize", None)
    detokenize = getattr(b, "detokenize", None)
    if callable(tokenize) and callable(detokenize):
        ids: Sequence[int] = list(tokenize(text))
        return TokenCutter(text, len(ids), lambda n: detokenize(ids[:n]), "tokenize")
    return _count_cutter(b, text)


def _count_cutter(b: Backend, text: str) -> TokenCutter:
    count = b.count_tokens
    length = count(text)

    def cut(n: int) -> str:
        lo, hi = 0, len(text)  # invariant: count(text[:lo]) <= n
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[:mid]) <= n:
                lo = mid
            else:
                hi = mid - 1
        piece = text[:lo]
        stripped = piece.rstrip()
        # whitespace that is not a token of its own (word tokenizers) stays with the rest of the answer
        return stripped if stripped and count(stripped) == count(piece) else piece

    return TokenCutter(text, length, cut, "count_tokens")
