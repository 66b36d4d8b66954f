"""What HumanEval and MBPP share: a chat prompt that asks for a whole function, and grading by running
the extracted code with the task's tests in the sandbox."""

from __future__ import annotations

import ast
import re
import secrets
import threading
from abc import abstractmethod

from .base import Grade, Item, Task
from .code_extract import parse_python
from .sandbox import Limits, SandboxOptions, run_python

_DOCTEST = re.compile(r"^\s*>>>\s?(.*\S)\s*$", re.MULTILINE)
#: at most this many example calls per item, each result cut to this many characters
MAX_PROBES, MAX_REPR = 10, 2000
PROBE_LIMITS = Limits(wall_s=5.0, cpu_s=5.0, memory_bytes=512 << 20)
#: the same program must print the same on every run (replays of a study are compared byte for byte)
PROBE_OPTIONS = SandboxOptions(hash_seed=0)


def _expression(src: str) -> str | None:
    """The expression src spells, without an expected value it compares with (`f(x) == y` -> `f(x)`)."""
    try:
        node = parse_python(src, mode="eval").body
    except (SyntaxError, ValueError):
        return None
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.left, ast.Call):
        node = node.left
    return ast.unparse(node)


def _literal_call(src: str, entry: str) -> str | None:
    """`entry(...)` at the start of src, when every argument is a literal (a call the prompt spells out)."""
    depth = 0
    for i, ch in enumerate(src):
        depth += ch == "("
        depth -= ch == ")"
        if ch == ")" and depth == 0:
            try:
                node = parse_python(src[: i + 1], mode="eval").body
            except (SyntaxError, ValueError):
                return None
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == entry):
                return None
            try:
                for a in [*node.args, *(k.value for k in node.keywords)]:
                    ast.literal_eval(a)  # a node already: nothing to parse
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return None
            return ast.unparse(node)
    return None


def doctest_calls(prompt: str, entry: str | None = None) -> list[str]:
    """The example calls a prompt shows: its docstring's `>>> ...` expressions (statements such as imports
    left out) and, given the entry point, every `entry(literal, ...)` written elsewhere in it
    (`f(7, 34) == 34`, `f([1, 2]) ==> 3`, `f("a") ➞ False`), the definition line excepted."""
    out = []
    for m in _DOCTEST.finditer(prompt):
        e = _expression(m.group(1).strip())
        if e is not None and e not in out:
            out.append(e)
    if entry:
        for line in prompt.splitlines():
            if line.lstrip().startswith(("def ", ">>>")):
                continue
            for m in re.finditer(rf"(?<![\w.]){re.escape(entry)}\s*\(", line):
                e = _literal_call(line[m.start():], entry)
                if e is not None and e not in out:
                    out.append(e)
    return out[:MAX_PROBES]


def assert_calls(asserts: list[str]) -> list[str]:
    """What each `assert` evaluates, without the expected value: `assert f(x) == y` -> `f(x)`,
    `assert math.isclose(f(x), y)` -> `f(x)`, `assert not f(x)` / `assert f(x)` -> `f(x)`."""
    out = []
    for line in asserts:
        try:
            tree = parse_python(line.strip())
        except SyntaxError:
            continue
        for node in tree.body:
            if not isinstance(node, ast.Assert):
                continue
            t = node.test
            if isinstance(t, ast.UnaryOp) and isinstance(t.op, ast.Not):
                t = t.operand
            if isinstance(t, ast.Compare):
                t = t.left
            elif (isinstance(t, ast.Call) and t.args and isinstance(t.func, (ast.Attribute, ast.Name))
                  and (getattr(t.func, "attr", None) or getattr(t.func, "id", "")) == "isclose"):
                t = t.args[0]
            e = ast.unparse(t)
            if e not in out:
                out.append(e)
    return out[:MAX_PROBES]


class CodeTask(Task):
    kind = "code"
    max_tokens = 512
    #: per-program limits; HumanEval/MBPP tests finish in well under a second
    limits = Limits()
    options = SandboxOptions()

    @abstractmethod
    def program(self, item: Item, response: str) -> tuple[str, str]:
        """(the program to run: code + tests, the code extracted from the response)."""

    def solution(self, item: Item, response: str) -> tuple[str, str]:
        """(what defines the solution: the program without its tests, the code extracted from the response)."""
        raise NotImplementedError(f"{self.name} does not split its program into solution and tests")

    def probes(self, item: Item) -> list[str]:
        """Example calls the prompt itself shows the model (never the hidden tests); none by default."""
        return []

    def behaviour(self, item: Item, response: str) -> str | None:
        """What the response's code does on the prompt's example calls: each result's repr (an exception
        as its type), one line each. Sampled programs that differ in text but compute the same results on
        these calls agree; agreement-based policies (reactive, ABC) compare them so. Only inputs are used,
        never the expected outputs the prompt may show. None when there are no example calls, when the
        code does not load or times out, or when every call raises (a sample like that agrees with no one).
        Cached per (item, code): replaying many operating points runs each sample once."""
        calls = self.probes(item)
        if not calls:
            return None
        try:
            head, code = self.solution(item, response)
        except NotImplementedError:
            return None
        if not code.strip():
            return None
        key = (str(item.id), code)
        cache = self.__dict__.setdefault("_behaviour_cache", {})
        lock = self.__dict__.setdefault("_behaviour_lock", threading.Lock())
        with lock:
            if key in cache:
                return cache[key]
        value = run_probes(head, calls)
        with lock:
            cache[key] = value
        return value

    def grade(self, item: Item, response: str) -> Grade:
        program, code = self.program(item, response)
        if not code.strip():
            return Grade(False, None, "no code found in the response")
        result = run_python(program, self.limits, options=self.options)
        return Grade(result.passed, code, result.reason)

    def extract(self, item: Item, response: str) -> str | None:
        """The extracted code, without running the tests (a reactive decision compares samples' code)."""
        _, code = self.program(item, response)
        return code if code.strip() else None


def run_probes(head: str, calls: list[str]) -> str | None:
    """Run `head` (a program) and then each call in the sandbox: each result's repr (an exception as `!Type`),
    one line each; None when the program does not load or times out, or when every call raises."""
    mark = "@probe-" + secrets.token_hex(8) + ":"
    # seeded `random`, a fixed hash seed (sandbox option) and reprs without memory addresses: what the
    # program computes, not what differs from one run to the next
    lines = [head, "", "def __shepherd_probe(f):", "    import random, re", "    random.seed(0)",
             "    try:", "        r = repr(f())",
             "    except BaseException as e:", "        r = '!' + type(e).__name__",
             "    r = re.sub(r' at 0x[0-9a-fA-F]+', '', r)",
             f"    print({mark!r} + r[:{MAX_REPR}].replace('\\n', '\\\\n'), flush=True)", ""]
    lines += [f"__shepherd_probe(lambda: ({c}))" for c in calls]
    result = run_python("\n".join(lines) + "\n", PROBE_LIMITS, options=PROBE_OPTIONS)
    if not result.passed:
        return None
    got = [ln[len(mark):] for ln in result.stdout.splitlines() if ln.startswith(mark)]
    if len(got) != len(calls) or all(g.startswith("!") for g in got):
        return None
    return "\n".join(got)
