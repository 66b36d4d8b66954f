"""What an answer says, and when two answers agree: the one home of answer comparison, read by the policies
(reactive, reactive-fixed, ABC), the predictor's training examples and the traces alike, and reading none of
them (only `tasks`, for graders, code keys and the sandbox, and `embedding` for free-text proxy labels).

- `query_text`: the text of a chat request a featurizer sees (its user turns);
- `normalize_answer`: a task-free canonical final answer ("The answer is ...", \\boxed{}, the last number);
  `normalize_extracted`: a grader's extracted answer made canonical (math as a whole answer, code by syntax);
- `agreement_key`: equal for two answers that agree, None for one that agrees with no one:
  - math and other answer tasks: the task's extracted final answer, canonical;
  - code: what the program does on the example calls its prompt shows (`CodeTask.behaviour`), so that two
    programs written differently but computing the same results agree; a program that does not load or
    raises on every example agrees with no one. A prompt without examples falls back to equal syntax trees;
  - no task item (a live query): code runs on the example calls the query itself shows (`>>> f(x)` lines and
    `assert f(x) == y` lines, expected values dropped: `live_probes`); a query without such calls compares
    the fenced program's syntax tree. Other answers: `normalize_answer`;
- `agreeing_count`: how many samples must agree, as a whole count ("k of m");
- `task_for` / `task_name_of`: the grader-bearing task of an item, loaded once per process;
- `proxy_verdict`: the label where there is no gold answer (recorded traffic): does the SLM's answer agree
  with the LLM's full answer (final answer, code behaviour, or for free text MiniLM embeddings' cosine).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def query_text(messages: Sequence[Any]) -> str:
    """The text a featurizer sees for a chat request: its user turns, joined.

    Accepts message dicts or (role, content) pairs (GenerationRequest.messages). Training (from the
    sweep's stored messages) and serving (from the live request) both go through this function.
    """
    parts = []
    for m in messages:
        role, content = (m["role"], m["content"]) if isinstance(m, dict) else (m[0], m[1])
        if role == "user":
            parts.append(content)
    if not parts:  # no user turn: take whatever text there is
        parts = [m["content"] if isinstance(m, dict) else m[1] for m in messages]
    return "\n".join(parts)


_WS = re.compile(r"\s+")


def code_key(code: str | None) -> str | None:
    """Two programs agree when their syntax trees are equal (formatting and comments ignored); code that
    does not parse is compared with whitespace collapsed. Never the last number in the code: two
    different programs that both end in `return x + 1` do not agree."""
    import ast

    from .tasks.code_extract import parse_python

    if code is None or not code.strip():
        return None
    try:
        return ast.dump(parse_python(code))
    except (SyntaxError, ValueError):
        return _WS.sub(" ", code).strip()


def normalize_answer(text: str) -> str | None:
    """A task-free final answer, canonical, for comparing the SLM's samples when no task grader is known:
    the last explicit final answer ("The answer is ...", \\boxed{...}, "#### ...") as a whole
    (`tasks.math_grading.answer_key`: "1/2" = "0.5", while "\\frac{16}{3}" and "3" stay different), else
    the last number in the text, else the last line lower-cased with punctuation and spaces collapsed. None
    when empty."""
    from .tasks.math_grading import answer_key, canonical_number, final_answer_span, last_number

    if not text or not text.strip():
        return None
    key = answer_key(final_answer_span(text))
    if key is not None:
        return key
    value = last_number(text)
    if value is not None:
        return canonical_number(value)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    last = re.sub(r"[^\w\s]", "", lines[-1].lower())
    last = re.sub(r"\s+", " ", last).strip()
    return last or None


def normalize_extracted(extracted: str | None, kind: str | None = None) -> str | None:
    """A grader's extracted answer in a canonical form, so that equal answers compare equal: math answers
    whole (`tasks.math_grading.answer_key`: fractions, LaTeX expressions, intervals and sets keep every
    symbol, never just their last number), code (`kind="code"`) by its syntax tree."""
    from .tasks.math_grading import answer_key

    if extracted is None:
        return None
    s = str(extracted).strip()
    if not s:
        return None
    if kind == "code":
        return code_key(s)
    return answer_key(s)


def task_name_of(item: Any) -> str | None:
    """The benchmark an item belongs to: its metadata's `task`, else the prefix of ids like `gsm8k/...`."""
    if item is None:
        return None
    meta = getattr(item, "metadata", None) or {}
    if isinstance(meta, dict) and meta.get("task"):
        return str(meta["task"])
    iid = str(getattr(item, "id", ""))
    return iid.split("/", 1)[0].lower() if "/" in iid else None


_TASKS: dict[str, Any] = {}


def task_for(name: str | None) -> Any:
    """The grader-bearing Task for a name, loaded once per process; None when unknown or unavailable."""
    if not name:
        return None
    if name not in _TASKS:
        try:
            from .tasks.registry import get_task

            _TASKS[name] = get_task(name)
        except (KeyError, ImportError, ValueError):
            return None  # not cached: a task registered later is still found
    return _TASKS[name]


def agreeing_count(agree: int | None, samples: int, policy: str) -> int:
    """The whole number of samples that must give the same answer ("k of m"), checked against m; None means
    all of them. Why a count and not a share: a share such as round(2/3, 4) = 0.6667 exceeds 2/3, and 2 of 3
    agreeing samples would then never be enough."""
    if agree is None:
        return samples
    if isinstance(agree, bool) or not isinstance(agree, int) or not 1 <= agree <= samples:
        raise ValueError(f"{policy}: agree must be a whole number of samples from 1 to {samples}, not {agree!r}")
    return agree


def live_probes(prompt: str) -> list[str]:
    """The example calls a live query shows: its `>>> ...` expressions and what its `assert` lines evaluate,
    never the expected values. Why: with no task item, these are the only inputs both samples are asked about."""
    from .tasks.code_task import MAX_PROBES, assert_calls, doctest_calls

    calls = doctest_calls(prompt)
    for call in assert_calls([ln for ln in prompt.splitlines() if ln.lstrip().startswith("assert ")]):
        if call not in calls:
            calls.append(call)
    return calls[:MAX_PROBES]


def live_prompt(ctx: Any, run_code: bool = True) -> str | None:
    """A live query's text (its user turns), where its example calls are written; None for a benchmark item,
    whose task knows its calls, and when the policy must not run live code (`run_code=False`)."""
    request = getattr(ctx, "request", None)
    if not run_code or getattr(ctx, "item", None) is not None or request is None:
        return None
    return query_text(request.messages) or None


def _route(task: Any, item: Any, prompt: str | None, text: str) -> tuple[str, list[str]]:
    """How answers like `text` are compared ("answer", "example calls" or "syntax tree") and, for a live
    code query, the calls its samples run. The one place that decides; keys and the reported basis follow it."""
    code = getattr(task, "kind", None) == "code" if task is not None else "```" in text
    if not code:
        return "answer", []
    if item is None or task is None:
        calls = live_probes(prompt) if prompt else []
        return ("example calls" if calls else "syntax tree"), calls
    probes = getattr(task, "probes", None)
    return ("example calls" if probes is not None and probes(item) else "syntax tree"), []


def agreement_basis(task: Any, item: Any, prompt: str | None, text: str) -> str:
    """How answers like `text` are compared, for a decision's details: "answer", "example calls" or
    "syntax tree"."""
    return _route(task, item, prompt, text)[0]


@functools.lru_cache(maxsize=256)
def _live_behaviour(program: str, calls: tuple[str, ...]) -> str | None:
    from .tasks.code_task import run_probes

    return run_probes(program, list(calls))


def agreement_key(task: Any, item: Any, text: str, prompt: str | None = None) -> str | None:
    """A key that is equal for two answers that agree; None for an answer that agrees with no one.

    `prompt` (the query's text) is read only for a live code query: its example calls, if it shows any."""
    basis, calls = _route(task, item, prompt, text)
    live = item is None or task is None
    if basis == "answer":
        if live:
            return normalize_answer(text)
        extract = getattr(task, "extract", None) or (lambda it, t: task.grade(it, t).extracted)
        return normalize_extracted(extract(item, text))
    if live:  # what the program does on the query's examples, else its syntax tree
        from .tasks.code_extract import extract_code

        program = extract_code(text)
        if calls and program.strip():
            b = _live_behaviour(program, tuple(calls))
            return None if b is None else "run:" + b
        return normalize_extracted(program, "code")
    if basis == "example calls":
        b = _behaviour(task, item, text)
        return None if b is None else "run:" + b
    return normalize_extracted(task.extract(item, text), "code")


#: what a program did on an item's example calls, by (task, item id, prompt, program text): a study computes the
#: same samples' keys for the predictor's scores, its features and every replayed point, each a sandbox run
_BEHAVIOURS: dict[tuple[str, str, str, str], str | None] = {}
_BEHAVIOURS_LOCK = threading.Lock()


def _behaviour(task: Any, item: Any, text: str) -> str | None:
    key = (str(getattr(task, "name", type(task).__name__)), str(getattr(item, "id", "")),
           str(getattr(item, "question", "")), text)
    with _BEHAVIOURS_LOCK:
        if key in _BEHAVIOURS:
            return _BEHAVIOURS[key]
    b = task.behaviour(item, text)
    with _BEHAVIOURS_LOCK:
        if len(_BEHAVIOURS) >= 50_000:
            _BEHAVIOURS.clear()
        _BEHAVIOURS[key] = b
    return b


# -- labels without gold answers -----------------------------------------------------------------------

#: the free-text proxy: the embedding model, and the cosine similarity from which two answers agree
PROXY_EMBEDDING = "all-MiniLM-L6-v2"
PROXY_SIMILARITY = 0.85


_MATH = re.compile(r"\d\s*[-+*/=×÷^]\s*\d|=\s*-?\$?\d|\\\(|\\\[|\$|\\frac|\\sqrt|\\cdot")


def _reads_as_math(text: str) -> bool:
    """A worked math answer: arithmetic (`3 * 4`, `x = 2`) or LaTeX, and some number."""
    from .tasks.math_grading import last_number

    return bool(_MATH.search(text)) and last_number(text) is not None


@dataclass(frozen=True)
class ProxyVerdict:
    """Whether an answer agrees with a reference answer, and on what basis: "answer" (the same final
    answer), "last number" (live math without a stated final answer), "example calls" / "syntax tree"
    (code), or "embedding" (free text: cosine >= threshold)."""

    agree: bool
    basis: str
    similarity: float | None = None


def proxy_verdict(task: Any, item: Any, answer: str, reference: str, prompt: str | None = None, *,
                  threshold: float = PROXY_SIMILARITY,
                  similarity: Callable[[str, str], float] | None = None) -> ProxyVerdict:
    """"The hint sufficed" where no gold answer exists: the SLM's (hinted) `answer` agrees with the LLM's
    full answer `reference`.

    - a benchmark item (task and item given), and code: `agreement_key` of both, equal and not None (math:
      the same final answer; code: the same results on the example calls);
    - a live query whose reference states a final answer ("The answer is ...", \\boxed{}, "#### ..."): the
      same final answer (`normalize_answer`);
    - a live math answer that states none (a worked solution cut off at the token cap: it holds arithmetic
      or LaTeX and a number): the same last number (basis "last number"). Why not embeddings: two
      solutions worded alike but ending in different numbers are close in MiniLM's space;
    - other free text: the cosine of the two answers' MiniLM embeddings (`similarity`, default
      `embedding.cosine`) at least `threshold`.
    An empty answer agrees with nothing."""
    if not answer or not answer.strip() or not reference or not reference.strip():
        return ProxyVerdict(False, "empty")
    basis, _ = _route(task, item, prompt, reference)
    live = item is None or task is None
    if basis != "answer" or not live:
        a = agreement_key(task, item, answer, prompt)
        return ProxyVerdict(a is not None and a == agreement_key(task, item, reference, prompt), basis)
    from .tasks.math_grading import answer_key, final_answer_span, last_number

    if answer_key(final_answer_span(reference)) is not None:
        return ProxyVerdict(normalize_answer(answer) == normalize_answer(reference), "answer")
    if _reads_as_math(reference):  # a worked solution cut off before its result: its last number, not prose
        a, r = last_number(answer), last_number(reference)
        return ProxyVerdict(a is not None and a == r, "last number")
    if similarity is None:
        from .embedding import cosine as similarity
    sim = float(similarity(answer, reference))
    return ProxyVerdict(sim >= threshold, "embedding", round(sim, 6))
