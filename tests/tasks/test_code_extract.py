"""Getting the program out of a chat model's answer."""

from __future__ import annotations

from shepherd.tasks.code_extract import extract_code, fenced_blocks, is_body

FUNC = "def add(a, b):\n    return a + b\n"


def test_fenced_block_with_prose_around_it():
    response = f"Here is the function:\n\n```python\n{FUNC}```\n\nIt adds two numbers."
    assert extract_code(response, "add") == FUNC


def test_an_unclosed_fence_at_the_token_limit_counts():
    assert fenced_blocks("```python\ndef f():\n    return 1") == ["def f():\n    return 1"]


def test_the_block_that_defines_the_entry_point_wins():
    response = ("```python\nprint(add(1, 2))\n```\nThe function:\n```python\n" + FUNC
                + "```\nUsage:\n```python\nadd(3, 4)\n```")
    assert extract_code(response, "add") == FUNC


def test_other_languages_are_ignored():
    response = "```bash\npip install x\n```\n```py\n" + FUNC + "```"
    assert extract_code(response, "add") == FUNC


def test_demo_code_is_removed_but_setup_stays():
    code = ("import sys\nsys.setrecursionlimit(10000)\n" + FUNC
            + "\nassert add(1, 2) == 4\nprint(add(1, 2))\n'''docs'''\nx = add(2, 3)\n"
            "if __name__ == '__main__':\n    print(input())\n")
    out = extract_code(f"```python\n{code}```", "add")
    assert "sys.setrecursionlimit(10000)" in out and "x = add(2, 3)" in out
    assert "assert" not in out and "print" not in out and "__main__" not in out and "docs" not in out


def test_unfenced_code_after_prose_and_prose_after_code():
    response = "Sure! Here you go:\n" + FUNC + "\nThis function returns the sum."
    assert extract_code(response, "add") == FUNC


def test_body_only_continuation_is_kept_as_is():
    body = "    return a + b\n"
    assert is_body(body) and extract_code(body, "add") == body
    assert is_body("\n   \n    x = 1\n")


def test_a_complete_program_without_fences_is_kept_whole():
    code = "R = 3\nC = 3\ndef f(x):\n\treturn x * R\n"
    assert extract_code(code, "f") == code


def test_parsing_from_many_threads_at_once_never_trips_the_ast_converter():
    """CPython 3.11's AST converter counts recursion per interpreter: unguarded, threads parsing nested code
    at once fail with "SystemError: AST constructor recursion depth mismatch" (a rescue sweep lost an item
    to it). `parse_python` serialises them."""
    from concurrent.futures import ThreadPoolExecutor

    from shepherd.tasks.code_extract import parse_python

    nested = "x = " + "[" * 40 + "1" + "]" * 40 + "\n" + "def f(a):\n    return ((((a + 1) * 2) - 3) / 4)\n"

    def work(i: int) -> int:
        return sum(len(parse_python(nested + f"y = {i}\n").body) for _ in range(100))

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, range(16))) == [300] * 16
