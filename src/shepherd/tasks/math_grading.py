"""Answer extraction and comparison for the math tasks.

GSM8K answers are numbers: exact rational comparison after normalising commas, currency, units, trailing
zeros and unicode minus signs. CNK12 answers are LaTeX: a cheap normalised string match first, then
math-verify (symbolic equivalence) in a worker process. The worker is there because math-verify's own
time limit uses SIGALRM, which works only in the main thread; here the timeout is ours (the worker is
killed and replaced), so grading works the same from any thread. math-verify is never imported in this
process, which keeps `import shepherd.tasks` light.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

# -- locating the final answer in a response ---------------------------------------------------------

_ANSWER_IS = re.compile(r"(?:final\s+)?answer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_HASHES = re.compile(r"####\s*")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (balanced braces), or None."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start:i - 1].strip()
    return None


def final_answer_span(text: str) -> str | None:
    """The text of the last explicit final-answer marker ("The answer is ...", \\boxed{...}, "#### ..."),
    whichever comes last in the response; None if there is none."""
    candidates: list[tuple[int, str]] = []
    for pattern in (_ANSWER_IS, _HASHES):
        for m in pattern.finditer(text):
            line = text[m.end():].split("\n", 1)[0]
            if not line.strip() and pattern is _ANSWER_IS:  # "The answer is:\n$$ 42 $$"
                line = text[m.end():].lstrip("\n").split("\n", 1)[0]
            if not _is_prose(line):
                candidates.append((m.start(), line))
    boxed_starts = [m.start() for m in _BOXED.finditer(text)]
    if boxed_starts:
        boxed = last_boxed(text)
        if boxed is not None:
            candidates.append((boxed_starts[-1], "\\boxed{" + boxed + "}"))
    if not candidates:
        return None
    span = max(candidates, key=lambda c: c[0])[1].strip()
    inner = last_boxed(span)
    return clean_latex_span(inner if inner is not None else span)


def _is_prose(span: str) -> bool:
    """ "the answer is obtained by ..." is a sentence, not an answer: a lowercase word and no math."""
    s = span.strip()
    return (re.match(r"[a-z]{3,}\b", s) is not None and not re.search(r"[\d$\\=]", s)
            and re.search(r"\b[A-E]\b", s) is None)


def clean_latex_span(span: str) -> str:
    """Strip math delimiters and trailing punctuation: "$\\frac{1}{2}$." -> "\\frac{1}{2}"."""
    s = span.strip()
    for _ in range(3):
        s = s.rstrip(" .。;,")
        s = s.strip()
        for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**")):
            if s.startswith(left) and s.endswith(right) and len(s) >= len(left) + len(right):
                s = s[len(left):len(s) - len(right)].strip()
    return s


# -- numbers (GSM8K) -----------------------------------------------------------------------------------

_NUMBER = re.compile(
    r"(?<![\w.])([-−–]?)\s?\$?\s?((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*(\d+)(?![\d.]))?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{\s*(-?[\d.,]+)\s*\}\{\s*(-?[\d.,]+)\s*\}")


def parse_number(text: str) -> Fraction | None:
    """The first number in `text` as an exact rational ("1,234.50", "-3", "$18.00", "3/4", "\\frac{3}{4}")."""
    frac = _LATEX_FRAC.search(text)
    m = _NUMBER.search(text)
    if frac and (m is None or frac.start() <= m.start()):
        try:
            return Fraction(frac.group(1).replace(",", "")) / Fraction(frac.group(2).replace(",", ""))
        except (ValueError, ZeroDivisionError):
            return None
    if m is None:
        return None
    value = Fraction(m.group(2).replace(",", ""))
    if m.group(3):
        denominator = int(m.group(3))
        if denominator == 0:
            return None
        value /= denominator
    return -value if m.group(1) else value


def last_number(text: str) -> Fraction | None:
    matches = list(_NUMBER.finditer(text))
    return parse_number(matches[-1].group(0)) if matches else None


def extract_number(response: str) -> tuple[Fraction | None, str | None]:
    """The response's final numeric answer and the text it came from."""
    span = final_answer_span(response)
    if span is not None:
        value = parse_number(span)
        if value is not None:
            return value, span
    value = last_number(response)
    return value, (format_number(value) if value is not None else None)


def format_number(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(value)


# -- LaTeX answers (CNK12) -----------------------------------------------------------------------------

_DOLLARS = re.compile(r"\$([^$]+)\$")


def extract_latex(response: str) -> str | None:
    """The final answer of a free-form math response, as LaTeX (or plain text)."""
    span = final_answer_span(response)
    if span:
        return span
    dollars = _DOLLARS.findall(response)
    if dollars:
        return clean_latex_span(dollars[-1])
    value = last_number(response)
    return format_number(value) if value is not None else None


def normalize_latex(s: str) -> str:
    """A conservative canonical form for the cheap equality check before math-verify."""
    s = clean_latex_span(s)
    s = re.sub(r"\\(?:left|right|displaystyle|!|,|;|:|quad|qquad)", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"([\^_])\{(\w)\}", r"\1\2", s)
    s = s.replace("\\leqslant", "\\le").replace("\\geqslant", "\\ge").replace("\\leq", "\\le")
    s = s.replace("\\geq", "\\ge").replace("−", "-").replace("π", "\\pi").replace("$", "")
    return re.sub(r"\s+", "", s)


# -- canonical final answers (when two samples agree) ---------------------------------------------------

_EXACT = re.compile(r"[-−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-−]?\.\d+")
_EXACT_FRAC = re.compile(r"([-−]?)\\frac\{([-−]?\d+)\}\{(\d+)\}|([-−]?\d+)/(\d+)")
_MATH_STRUCTURE = re.compile(r"[\\^_{}()\[\]=<>+*/|]")


def canonical_number(value: Fraction) -> str:
    """A rational as one string: a terminating decimal without trailing zeros ("3.5", "-2", "0.125"),
    otherwise "p/q" ("1/3"), so "0.5", "1/2" and "\\frac{1}{2}" read the same."""
    q = value.denominator
    while q % 2 == 0:
        q //= 2
    while q % 5 == 0:
        q //= 5
    if q != 1:
        return f"{value.numerator}/{value.denominator}"
    text = format(value.numerator * 10**40 // value.denominator, "d")
    sign = "-" if text.startswith("-") else ""
    digits = text.lstrip("-").rjust(41, "0")
    whole, frac = digits[:-40].lstrip("0") or "0", digits[-40:].rstrip("0")
    return sign + whole + ("." + frac if frac else "")


def _exact_value(s: str) -> Fraction | None:
    """`s` (normalised LaTeX) when all of it is one number or one fraction of integers, else None."""
    if _EXACT.fullmatch(s):
        return Fraction(s.replace(",", "").replace("−", "-"))
    m = _EXACT_FRAC.fullmatch(s)
    if m is None:
        return None
    sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else ("", m.group(4), m.group(5))
    if int(den) == 0:
        return None
    value = Fraction(int(num.replace("−", "-")), int(den))
    return -value if sign else value


def answer_key(span: str | None) -> str | None:
    """A canonical form of one final answer (an extracted span, not a whole response), equal for answers
    that read the same: numbers and numeric fractions exactly ("0.50" = "1/2" = "\\frac{1}{2}"), a lone
    number among words by that number ("18 dollars" = "18"), anything else (an expression, an interval,
    a set, a choice letter) as the whole normalised LaTeX. Never a part of the answer: "\\frac{16}{3}",
    "2\\sqrt{3}" and "[2,+\\infty)" keep every symbol, where the last number alone would merge them with
    "3" or "2". Regular expressions only, so it runs on every sample."""
    if span is None:
        return None
    s = normalize_latex(span)
    if not s:
        return None
    value = _exact_value(s)
    if value is not None:
        return canonical_number(value)
    if not _MATH_STRUCTURE.search(s):
        numbers = _NUMBER.findall(span)
        if len(numbers) == 1:
            value = parse_number(span)
            if value is not None:
                return canonical_number(value)
    return s


# -- multiple choice -----------------------------------------------------------------------------------

_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-E])\s*[)）:：.．、]")


def parse_options(problem: str) -> dict[str, str]:
    """Options "A: ..", "(B) ..", "C. .." of a multiple-choice problem, letter -> text."""
    found = list(_OPTION.finditer(problem))
    # keep the last run that starts at A and goes on in order (the option list, not stray letters)
    best: list[re.Match[str]] = []
    for i, m in enumerate(found):
        if m.group(1) != "A":
            continue
        run = [m]
        for n in found[i + 1:]:
            if ord(n.group(1)) == ord(run[-1].group(1)) + 1:
                run.append(n)
        if len(run) >= 2:
            best = run
    options: dict[str, str] = {}
    for k, m in enumerate(best):
        end = best[k + 1].start() if k + 1 < len(best) else len(problem)
        options[m.group(1)] = problem[m.end():end].strip()
    return options


_LETTERS = re.compile(r"^\(?([A-E])\)?(?:\s*[:.)：]|\s|$)")


def choice_letters(answer: str) -> str | None:
    """"B", "\\text{B}", "(B)", "B: 40", "A and C", "AC" -> the sorted letters; None if not a choice."""
    s = clean_latex_span(answer)
    s = re.sub(r"\\(?:text|textbf|mathrm)\{([^{}]*)\}", r"\1", s).strip().strip("$*").strip()
    s = re.sub(r"^(?:options?|choices?)\s*", "", s, flags=re.IGNORECASE)
    if re.fullmatch(r"[A-E](?:\s*(?:,|and|&|、|\s)\s*[A-E])*", s) or re.fullmatch(r"[A-E]{2,5}", s):
        return "".join(sorted(set(re.findall(r"[A-E]", s))))
    m = _LETTERS.match(s)
    return m.group(1) if m else None


# -- math-verify in worker processes -------------------------------------------------------------------

_WORKER_SOURCE = (Path(__file__).with_name("_math_verify_worker.py")).read_text()


class MathVerifyUnavailable(ImportError):
    """math-verify is not installed (it comes with the `tasks` extra)."""


class _Worker:
    def __init__(self, startup_timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_SOURCE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        self.buffer = b""
        if self.read_line(startup_timeout) != {"ready": True}:
            self.kill()
            raise RuntimeError("math-verify worker did not start")

    def read_line(self, timeout: float) -> dict | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def ask(self, request: dict, timeout: float) -> dict | None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        return self.read_line(timeout)

    def kill(self) -> None:
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()


class MathVerifier:
    """A small pool of math-verify worker processes with a per-check time limit. Thread-safe."""

    def __init__(self, max_workers: int | None = None, timeout_s: float = 5.0,
                 startup_timeout_s: float = 60.0) -> None:
        self.max_workers = max_workers or max(1, os.cpu_count() or 1)
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self._idle: list[_Worker] = []
        self._count = 0
        self._cond = threading.Condition()

    def equal(self, gold: str, pred: str, timeout_s: float | None = None) -> tuple[bool | None, str]:
        """(True/False, detail) when math-verify decided; (None, why) on a timeout or an error."""
        worker = self._take()
        ok = False
        try:
            answer = worker.ask({"gold": gold, "pred": pred}, timeout_s or self.timeout_s)
            if answer is None:
                return None, f"math-verify timed out after {timeout_s or self.timeout_s:g}s"
            ok = True
            if "error" in answer:
                return None, f"math-verify error: {answer['error']}"
            return bool(answer["equal"]), f"math-verify: gold {answer['gold']} vs {answer['pred']}"
        except (OSError, ValueError) as exc:
            return None, f"math-verify worker failed: {exc}"
        finally:
            self._give(worker, keep=ok)

    def _take(self) -> _Worker:
        with self._cond:
            while not self._idle and self._count >= self.max_workers:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
        try:
            if importlib.util.find_spec("math_verify") is None:
                raise MathVerifyUnavailable(
                    "grading LaTeX answers needs math-verify: pip install 'llm-shepherd[tasks]'")
            return _Worker(self.startup_timeout_s)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give(self, worker: _Worker, keep: bool) -> None:
        if not keep:
            worker.kill()
        with self._cond:
            if keep:
                self._idle.append(worker)
            else:
                self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_default.close)
        return _default


def latex_equal(gold: str, pred: str, *, timeout_s: float = 5.0,
                verifier: MathVerifier | None = None) -> tuple[bool, str]:
    """Whether two LaTeX answers are equivalent, and why. A timeout or an error counts as not equal."""
    if normalize_latex(gold) == normalize_latex(pred):
        return True, "same answer after normalisation"
    a, b = parse_number(gold), parse_number(pred)
    if (a is not None and b is not None and _is_plain_number(gold) and _is_plain_number(pred)):
        return a == b, "numeric comparison"
    equal, detail = (verifier or default_verifier()).equal(gold, pred, timeout_s)
    return bool(equal), detail


def _is_plain_number(s: str) -> bool:
    return re.fullmatch(r"\s*[-−]?\d[\d,]*(?:\.\d+)?\s*", clean_latex_span(s)) is not None
