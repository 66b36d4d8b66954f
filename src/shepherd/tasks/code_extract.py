"""Get the program out of a model's answer.

Chat models wrap code in markdown fences, add prose around it, repeat the whole function rather than
only its body, add example calls or a `__main__` block, or stop mid-function at the token limit. This
module turns any of those into source that can be appended to a task's tests.
"""

from __future__ import annotations

import ast
import re
import threading
import warnings

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |async def |class |import |from \S+ import |@)", re.MULTILINE)
_PYTHON_TAGS = {"", "python", "py", "python3", "py3", "pycon"}


def fenced_blocks(text: str) -> list[str]:
    """Python (or untagged) fenced blocks, in order; a last fence left open (token limit) counts."""
    return [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(", code, re.MULTILINE) is not None


def extract_code(response: str, entry_point: str | None = None) -> str:
    """The code of a response: the last fenced block that defines `entry_point` (else the longest block);
    without fences, the text from its first line of code on ("" when there is none). Trailing prose is
    trimmed and top-level demo code (prints, asserts, `if __name__ == "__main__":`) removed when the
    code parses."""
    blocks = fenced_blocks(response)
    if blocks:
        defining = [b for b in blocks if entry_point and defines(b, entry_point)]
        code = defining[-1] if defining else max(blocks, key=len)
    else:
        code = response
        if not is_body(response) and not parses(response):
            start = _CODE_START.search(response)
            if start is None:
                return ""  # prose only
            code = response[start.start():]
    code = code.replace("\r\n", "\n")
    if is_body(code):
        return code.rstrip() + "\n"
    code = _trim_to_parseable(code)
    return keep_definitions(code)


#: CPython 3.11 keeps the AST converter's recursion counter per interpreter, not per thread: two threads
#: parsing at once (a sweep grades several items' code in worker threads) can fail with "SystemError: AST
#: constructor recursion depth mismatch" (seen in a rescue sweep, 2026-12-05). Every parse goes through here.
_AST_LOCK = threading.Lock()


def parse_python(code: str, mode: str = "exec") -> ast.mod:
    """ast.parse, one thread at a time, without the invalid-escape warnings that upstream code ("\\w" in
    plain strings) raises."""
    with _AST_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(code, mode=mode)


def parses(code: str) -> bool:
    """Whether the code is valid Python (without warnings about invalid escapes)."""
    try:
        parse_python(code)
        return True
    except SyntaxError:
        return False


def is_body(code: str) -> bool:
    """A function body continuing a prompt (its first non-blank line is indented)."""
    for line in code.splitlines():
        if line.strip():
            return line[:1] in (" ", "\t")
    return False


def _trim_to_parseable(code: str, max_cut: int = 40) -> str:
    """Drop trailing lines (prose after unfenced code, a half-written last line) until the code parses."""
    lines = code.rstrip().splitlines()
    for cut in range(min(max_cut, len(lines))):
        candidate = "\n".join(lines[:len(lines) - cut])
        try:
            parse_python(candidate)
            return candidate + "\n"
        except SyntaxError:
            continue
    return code.rstrip() + "\n"


def keep_definitions(code: str) -> str:
    """Drop the top-level demo code that would run before the tests and could fail them on its own:
    `if __name__ == "__main__":` blocks, asserts, print()/input() calls and bare strings. Everything else
    (imports, definitions, assignments, set-up calls) stays."""
    try:
        tree = parse_python(code)
    except SyntaxError:
        return code
    lines = code.splitlines()
    drop: set[int] = set()
    keep: set[int] = set()
    for node in tree.body:
        span = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if ((isinstance(node, ast.If) and _is_main_guard(node.test)) or isinstance(node, ast.Assert)
                or (isinstance(node, ast.Expr) and _is_demo_expression(node.value))):
            drop |= span
        else:
            keep |= span
    drop -= keep  # a line shared with kept code ("x = f(); print(x)") stays
    if not drop:
        return code.rstrip() + "\n"
    return "\n".join(line for n, line in enumerate(lines, 1) if n not in drop).rstrip() + "\n"


def _is_demo_expression(value: ast.expr) -> bool:
    if isinstance(value, ast.Constant):
        return True
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id in {"print", "input", "pprint"})


def _is_main_guard(test: ast.expr) -> bool:
    return (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
            and test.left.id == "__name__")


def indent_body(code: str, spaces: int = 4) -> str:
    """Indent body-only code that arrived flush left ("return sorted(x)") so it can follow a prompt."""
    return "\n".join((" " * spaces + line) if line.strip() else line for line in code.splitlines()) + "\n"
