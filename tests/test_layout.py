"""Imports between the packages run downwards: no package reaches up into one that imports it.

Counted with the imports made inside functions, which Python resolves late and a reader easily misses.
The command modules (`cli.py` and the `*/cli.py` sub-commands) sit on top of everything and are left
out as importers: they only wire packages to the command line. Nothing imports them back: the top-level
command imports its sub-commands, and what they share (`console.py`) lies below both.
"""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "shepherd"


def _package_graph() -> dict[str, set[str]]:
    """shepherd's top-level units (a package, or a module such as runner.py) -> the units they import."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("").parts  # ("shepherd", "policies", "base")
        if rel[-1] == "cli":
            continue
        unit, package = rel[1], rel[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                target = list(package[: len(package) - (node.level - 1)]) + (node.module or "").split(".")
            else:
                target = (node.module or "").split(".")
            if target[0] == "shepherd" and len(target) > 1 and target[1] not in (unit, ""):
                edges[unit].add(target[1])
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_packages():
    edges = _package_graph()
    assert {"policies", "predictor", "traces", "evaluation"} <= set(edges)  # the scan sees the packages
    assert _cycle(edges) is None, " -> ".join(_cycle(edges))


def test_answer_comparison_sits_below_policies_predictor_and_traces():
    """One home for "when two answers agree", which reads only the tasks (graders, code sandbox)."""
    edges = _package_graph()
    assert edges["agreement"] <= {"tasks", "embedding"}
    for unit in ("policies", "predictor"):
        assert "agreement" in edges[unit]
    assert "policies" not in edges["predictor"] and "policies" not in edges["traces"]


def test_nothing_imports_the_command_back():
    """Sub-commands once imported `fail` from shepherd/cli.py, which loaded them: upside down."""
    importers = [path.relative_to(SRC).as_posix() for path in SRC.rglob("*.py")
                 if any(isinstance(n, ast.ImportFrom) and ((n.module == "cli" and n.level >= 1 and path.parent != SRC)
                                                           or n.module == "shepherd.cli")
                        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))]
    assert importers == []
    assert all(unit != "cli" for targets in _package_graph().values() for unit in targets)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
