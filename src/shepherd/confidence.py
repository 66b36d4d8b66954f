"""How sure the small model was of its own answer: features read from a generation's per-token log-probs.

Each feature is a small pure function of a `TokenLogprobs` (plus the text where it needs one) and returns a
float, or None when it is undefined (no tokens, no answer span). Convention: for every feature HIGHER means
MORE confident (entropies are negated), so a threshold policy reads "the answer stands if feature >= t".

- `mean_logprob`: the plain average, the usual baseline;
- `quantile_logprob` / `min_logprob`: the low tail of token log-probabilities. A few very unsure tokens (a
  guessed digit, a wrong turn) say more than the mean, which long easy stretches dilute: quantiles of token
  uncertainty beat the mean as error predictors (arXiv 2404.10136);
- `lowest_window_mean`: DeepConf's "group confidence" (arXiv 2508.15260): the lowest mean over any window
  of consecutive tokens, finding the one stretch of reasoning where the model lost its footing;
- `mean_entropy` / `max_entropy` (negated in `features`): the spread of each next-token distribution,
  which also sees doubt when the chosen token happened to be likely;
- `first_token_margin`: top-1 minus top-2 log-probability of the first token: how decided the model was
  about the way to start (arXiv 2405.02134);
- `answer_confidence` with `final_answer_span`: the mean log-probability of only the tokens that state the
  final answer, so a confident derivation ending in a guessed result is not read as confident.

Plain Python, no numpy: importing shepherd stays light.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .models.base import TokenLogprobs

#: the names `features` returns, in order; for each, higher means more confident
FEATURE_NAMES: tuple[str, ...] = (
    "mean_logprob", "q05_logprob", "q10_logprob", "q25_logprob", "min_logprob", "lowest_window16",
    "neg_mean_entropy", "neg_max_entropy", "first_margin", "answer_logprob",
)


def mean_logprob(lp: TokenLogprobs) -> float | None:
    """Mean token log-probability (None without tokens)."""
    xs = lp.logprobs
    return sum(xs) / len(xs) if xs else None


def quantile_logprob(lp: TokenLogprobs, q: float) -> float | None:
    """The q-quantile of the token log-probabilities, interpolated linearly between the sorted values (as
    numpy's default). A low q reads the least confident tokens, which predict errors better than the mean
    (arXiv 2404.10136)."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q}")
    xs = sorted(lp.logprobs)
    if not xs:
        return None
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])


def min_logprob(lp: TokenLogprobs) -> float | None:
    """The least likely token's log-probability: the single worst moment of the generation."""
    return min(lp.logprobs) if lp.logprobs else None


def lowest_window_mean(lp: TokenLogprobs, window: int = 16) -> float | None:
    """Lowest mean log-probability over any `window` consecutive tokens (the mean of all when there are
    fewer): DeepConf's group confidence (arXiv 2508.15260), a local dip the global mean averages away."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    xs = lp.logprobs
    if not xs:
        return None
    if len(xs) <= window:
        return sum(xs) / len(xs)
    total = sum(xs[:window])
    lowest = total
    for i in range(window, len(xs)):  # slide: add the token entering, drop the one leaving
        total += xs[i] - xs[i - window]
        lowest = min(lowest, total)
    return lowest / window


def first_doubt(logprobs: list[float], threshold: float, window: int) -> int | None:
    """Index of the first token of the first `window`-token stretch whose mean log-probability is below
    `threshold` (a shorter answer is one stretch), or None: where a watch of the SLM's confidence fires."""
    n = len(logprobs)
    if n == 0:
        return None
    w = min(window, n)
    s = sum(logprobs[:w])
    for i in range(n - w + 1):
        if i:
            s += logprobs[i + w - 1] - logprobs[i - 1]
        if s / w < threshold:
            return i
    return None


#: where an answer is cut back to when doubt is found: the start of the doubtful line, or that token
BACKUPS = ("line", "token")


def doubt_cut(text: str, lp: TokenLogprobs | None, threshold: float, window: int, backup: str = "line") -> int | None:
    """The character offset in `text` to cut back to at the first doubt (None: no doubt found, or no
    log-probabilities to watch). With backup "line" the cut is the start of the line the doubt begins on,
    so a helper does not inherit a half-written number."""
    if lp is None:
        return None
    i = first_doubt(lp.logprobs, threshold, window)
    if i is None:
        return None
    start = lp.ends[i - 1] if i > 0 else 0
    start = max(0, min(start, len(text)))
    if backup == "token":
        return start
    return text.rfind("\n", 0, start) + 1


def mean_entropy(lp: TokenLogprobs) -> float | None:
    """Mean entropy (nats) of the next-token distributions; a lower bound when not `entropy_exact`."""
    xs = lp.entropies
    return sum(xs) / len(xs) if xs else None


def max_entropy(lp: TokenLogprobs) -> float | None:
    """The most spread-out next-token distribution: the point of greatest doubt."""
    return max(lp.entropies) if lp.entropies else None


def first_token_margin(lp: TokenLogprobs) -> float | None:
    """Top-1 minus top-2 log-probability of the first token: how decided the model was about how to begin
    (arXiv 2405.02134)."""
    return lp.margins[0] if lp.margins else None


def answer_confidence(lp: TokenLogprobs, text: str, answer_span: tuple[int, int] | None) -> float | None:
    """Mean log-probability of the tokens overlapping the character span `(start, end)` of `text` that
    states the final answer. Token i covers [ends[i-1], ends[i]) (the first starts at 0); it counts when
    that range intersects the span. None without a span or when no token overlaps it."""
    if answer_span is None:
        return None
    start, end = answer_span
    if not 0 <= start < end <= len(text):
        return None
    picked, tok_start = [], 0
    for x, tok_end in zip(lp.logprobs, lp.ends):
        if tok_start < end and tok_end > start and tok_end > tok_start:
            picked.append(x)
        tok_start = tok_end
    return sum(picked) / len(picked) if picked else None


_NUMBER = re.compile(r"[-+]?\d[\d,]*(\.\d+)?")


def _answer_forms(answer: str) -> list[str]:
    """The answer as given and, for a number, with thousands separators removed and added."""
    forms = [answer]
    if _NUMBER.fullmatch(answer):
        bare = answer.replace(",", "")
        sign = bare[0] if bare[0] in "+-" else ""
        whole, _, frac = bare.lstrip("+-").partition(".")
        grouped = sign + f"{int(whole):,}" + ("." + frac if frac else "")
        if whole.startswith("0") and whole != "0":  # "007": not a number to regroup
            grouped = bare
        forms += [f for f in (bare, grouped) if f not in forms]
    return forms


def final_answer_span(text: str, answer: str | None) -> tuple[int, int] | None:
    """Where `text` last states `answer` (the extracted final answer string): (start, end), or None.

    The last occurrence, because the final answer comes after the working that may mention it. A numeric
    answer is also sought with thousands separators removed or added, and must not sit inside a longer
    number ("4" is not found in "14")."""
    if not text or answer is None or not answer.strip():
        return None
    answer = answer.strip()
    numeric = _NUMBER.fullmatch(answer) is not None
    best: tuple[int, int] | None = None
    for form in _answer_forms(answer):
        pattern = re.escape(form)
        if numeric:  # not a piece of a longer number: no digit (or digit and separator) on either side
            pattern = r"(?<!\d)(?<!\d[,.])" + pattern + r"(?!\d)(?![,.]\d)"
        for m in re.finditer(pattern, text):
            if best is None or m.start() > best[0]:
                best = m.span()
    return best


def features(lp: TokenLogprobs, text: str | None = None, answer: str | None = None) -> dict[str, float | None]:
    """Every feature under its name in `FEATURE_NAMES`, each oriented so that higher = more confident.
    `answer_logprob` needs the generation's `text` and its extracted `answer` (else None)."""
    ent, top = mean_entropy(lp), max_entropy(lp)
    span = final_answer_span(text, answer) if text is not None else None
    return {
        "mean_logprob": mean_logprob(lp),
        "q05_logprob": quantile_logprob(lp, 0.05),
        "q10_logprob": quantile_logprob(lp, 0.10),
        "q25_logprob": quantile_logprob(lp, 0.25),
        "min_logprob": min_logprob(lp),
        "lowest_window16": lowest_window_mean(lp, 16),
        "neg_mean_entropy": None if ent is None else -ent,
        "neg_max_entropy": None if top is None else -top,
        "first_margin": first_token_margin(lp),
        "answer_logprob": answer_confidence(lp, text, span) if text is not None else None,
    }
