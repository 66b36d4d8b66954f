"""Proxy labels from sweeps (shepherd/traces/proxy.py): every row regraded by agreement with the LLM's full
answer, on hand-built sweeps whose gold and proxy grades are known in advance. Code runs in the real sandbox
with the real HumanEval and GSM8K tasks' extraction."""

import pytest

from shepherd.models.base import Generation
from shepherd.tasks.base import Item
from shepherd.tasks.registry import get_task
from shepherd.traces.labels import label_item
from shepherd.traces.proxy import proxy_stats, proxy_sweep, proxy_sweeps, wilson
from shepherd.traces.records import Graded, HintLevel, ItemSweep


def gen(text: str) -> Generation:
    return Generation(text=text, prompt_tokens=20, completion_tokens=max(1, len(text.split())),
                      finish_reason="stop", latency_s=0.1, model="m")


def sweep(task: str, iid: str, question: str, llm: tuple[str, bool], levels: list[tuple[float, str, str, bool]],
          samples: list[tuple[str, bool]] = ()) -> ItemSweep:
    """levels: (fraction, hint text, the SLM's continuation, gold grade of hint + continuation)."""
    return ItemSweep(task=task, item_id=iid, messages=[{"role": "user", "content": question}],
                     llm_full=Graded(gen(llm[0]), llm[1]), full_tokens=len(llm[0].split()),
                     levels=[HintLevel(f, len(h.split()), h, [Graded(gen(c), ok)]) for f, h, c, ok in levels],
                     samples=[Graded(gen(t), ok) for t, ok in samples], sweep={"grid": [f for f, *_ in levels]})


# -- math: the proxy repeats the LLM's verdict, right or wrong ------------------------------------------

LLM_RIGHT = "Half of 10 is 5, plus 3 is 8. The answer is 8."
LLM_WRONG = "Half of 10 is 5, plus 3 is 9. The answer is 9."


def math_sweep(iid: str, llm: str, llm_ok: bool) -> ItemSweep:
    cut = "Half of 10 is 5,"
    rest = llm[len(cut):]
    return sweep("gsm8k", iid, "What is half of 10 plus 3?", (llm, llm_ok), [
        (0.0, "", "10 / 2 = 4, plus 3 is 7. The answer is 7.", False),  # SLM alone: wrong, disagrees
        (0.5, cut, rest, llm_ok),                                       # follows the LLM: right iff the LLM is
    ], samples=[("The answer is 8.", True), ("The answer is 7.", False), ("The answer is 9.", False)])


@pytest.mark.parametrize("variant", ["live", "task-aware"])
def test_math_rows_are_regraded_by_agreement_with_the_llm(variant):
    item = Item("gsm8k/test/0", "What is half of 10 plus 3?", "8", {})
    right = proxy_sweep(math_sweep("gsm8k/test/0", LLM_RIGHT, True), variant, item=item)
    assert [(r.kind, r.fraction, r.gold, r.proxy) for r in right.rows] == [
        ("llm", 1.0, True, True), ("hint", 0.0, False, False), ("hint", 0.5, True, True),
        ("sample", 0.0, True, True), ("sample", 0.0, False, False), ("sample", 0.0, False, False)]
    assert {r.basis for r in right.rows} == {"answer"}
    lab = label_item(right.sweep)
    assert (lab.kind, lab.hint_fraction) == ("hint", 0.5) == (label_item(math_sweep("x", LLM_RIGHT, True)).kind, 0.5)
    # the LLM is wrong: the hinted continuation repeats its 9 and the proxy calls it right (gold: wrong)
    wrong = proxy_sweep(math_sweep("gsm8k/test/0", LLM_WRONG, False), variant, item=item)
    hint = next(r for r in wrong.rows if r.kind == "hint" and r.fraction == 0.5)
    assert (hint.gold, hint.proxy) == (False, True)
    assert wrong.sweep.llm_full.correct and not math_sweep("x", LLM_WRONG, False).llm_full.correct
    assert label_item(wrong.sweep).kind == "hint" and label_item(math_sweep("x", LLM_WRONG, False)).kind == "unsolvable"
    # the sample that agrees with the wrong LLM (9) is the proxy's right one
    assert [r.proxy for r in wrong.rows if r.kind == "sample"] == [False, False, True]


def _no_embedding(a: str, b: str) -> float:
    raise AssertionError("not compared by embedding")


def test_a_reference_cut_off_at_the_cap_agrees_with_nothing():
    """Two derivations stopped mid-way "agree" on their last numbers by chance; the proxy knows the LLM's
    answer stopped at the cap (its finish reason) and labels nothing right on it."""
    s = math_sweep("gsm8k/test/0", "Half of 10 is 5, plus 3 is", False)
    s.llm_full = s.llm_full._replace(generation=Generation(**{**s.llm_full.generation.to_dict(),
                                                              "finish_reason": "length"}))
    s.levels[0].trials[0] = s.levels[0].trials[0]._replace(generation=gen("10 / 2 = 5, plus 3 is"))
    p = proxy_sweep(s, "live", similarity=_no_embedding)
    assert {(r.proxy, r.basis) for r in p.rows} == {(False, "reference cut off")}
    assert label_item(p.sweep).kind == "unsolvable"
    # the same texts with a finished reference: compared by their last numbers, and "agreeing" on the 5 where
    # both stopped, which is what a cut-off reference would give too
    s.llm_full = s.llm_full._replace(generation=gen("10 / 2 = 5, plus 3 is"))
    row = proxy_sweep(s, "live", similarity=_no_embedding).rows[1]
    assert (row.kind, row.fraction, row.basis, row.proxy) == ("hint", 0.0, "last number", True)


def test_stats_count_agreement_confusion_and_labels():
    item = Item("gsm8k/test/0", "q", "8", {})
    gold = [math_sweep("a", LLM_RIGHT, True), math_sweep("b", LLM_WRONG, False)]
    proxy = [proxy_sweep(s, "task-aware", item=item) for s in gold]
    st = proxy_stats(gold, proxy)
    assert st["rows"]["n"] == 4 and st["rows"]["k"] == 3  # 4 hint rows, the wrong LLM's follower differs
    assert (st["rows_llm_right"]["n"], st["rows_llm_right"]["k"]) == (2, 2)
    assert st["proxy_right_gold_wrong"] == {"rows": 1, "llm_wrong": 1}
    assert st["proxy_wrong_gold_right"] == {"rows": 0, "llm_wrong": 0}
    assert st["labels"]["kinds_gold"] == {"none": 0, "hint": 1, "llm": 0, "unsolvable": 1}
    assert st["labels"]["kinds_proxy"] == {"none": 0, "hint": 2, "llm": 0, "unsolvable": 0}
    assert st["labels"]["needed_equal"]["k"] == 2 and st["labels"]["nstar_equal"]["k"] == 1
    assert st["kept"] == {"gold": 1, "proxy": 2, "both": 1}
    assert st["llm"]["gold_right"] == 1 and st["llm"]["proxy_right"] == 2
    lo, hi = st["rows"]["ci"]
    assert lo < 0.75 < hi and 0 <= lo and hi <= 1
    with pytest.raises(ValueError, match="paired"):
        proxy_stats(gold, proxy[::-1])


def test_wilson_interval():
    assert wilson(0, 0) == (None, None)
    lo, hi = wilson(50, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3
    lo, hi = wilson(10, 10)
    assert abs(hi - 1.0) < 1e-9 and 0.69 < lo < 0.73  # never the degenerate [1, 1]


# -- code: the variants see different example calls ---------------------------------------------------

PROMPT = 'def add(a, b):\n    """Add two numbers.\n    For example: add(2, 3) == 5\n    """\n'
QUESTION = f"Complete this Python function.\n\n```python\n{PROMPT}```"
PLUS = "```python\ndef add(a, b):\n    return a + b\n```"
SUM = "```python\ndef add(a, b):\n    return sum([a, b])\n```"
MINUS = "```python\ndef add(a, b):\n    return a - b\n```"


def code_sweep() -> tuple[ItemSweep, Item]:
    item = Item("HumanEval/999", PROMPT, "    return a + b\n",
                {"prompt": PROMPT, "entry_point": "add", "test": "def check(f):\n    assert f(2, 3) == 5\n"})
    s = sweep("humaneval", "HumanEval/999", QUESTION, (PLUS, True), [
        (0.0, "", MINUS, False),  # wrong: differs on add(2, 3) and in its syntax tree
        (0.5, "```python\ndef add(a, b):\n", "    return sum([a, b])\n```", True),  # right, written otherwise
    ])
    return s, item


def test_code_variants_differ_where_the_prompt_shows_no_doctest():
    """The prompt's example is `add(2, 3) == 5`, not a `>>>` line: the task finds the call and the rewritten
    program agrees by what it computes; the live proxy sees no example call, compares syntax trees and says
    the hint did not suffice."""
    s, item = code_sweep()
    aware = proxy_sweep(s, "task-aware", item=item, task=get_task("humaneval"))
    live = proxy_sweep(s, "live")
    hint = {v: [r for r in p.rows if r.kind == "hint"] for v, p in (("aware", aware), ("live", live))}
    assert [(r.gold, r.proxy, r.basis) for r in hint["aware"]] == [(False, False, "example calls"),
                                                                   (True, True, "example calls")]
    assert [(r.gold, r.proxy, r.basis) for r in hint["live"]] == [(False, False, "syntax tree"),
                                                                  (True, False, "syntax tree")]
    assert label_item(aware.sweep).kind == "hint" and label_item(live.sweep).kind == "llm"
    # with a `>>>` line the live proxy runs the programs too
    doctest = s.messages[0]["content"].replace("For example: add(2, 3) == 5", ">>> add(2, 3)\n    5")
    s2 = sweep("humaneval", "HumanEval/999", doctest, (PLUS, True), [(0.5, "", SUM, True)])
    (row,) = [r for r in proxy_sweep(s2, "live").rows if r.kind == "hint"]
    assert (row.proxy, row.basis) == (True, "example calls")


def test_a_program_that_raises_is_not_the_llms_right_answer():
    s, item = code_sweep()
    broken = "```python\ndef add(a, b):\n    raise ValueError\n```"
    s = sweep("humaneval", s.item_id, QUESTION, (broken, False), [(0.0, "", broken, False)])
    p = proxy_sweep(s, "task-aware", item=item, task=get_task("humaneval"))
    assert not p.sweep.llm_full.correct and label_item(p.sweep).kind == "unsolvable"


def test_task_aware_needs_the_item_and_variants_are_checked():
    s, _ = code_sweep()
    with pytest.raises(ValueError, match="needs the task"):
        proxy_sweep(s, "task-aware")
    with pytest.raises(ValueError, match="unknown proxy variant"):
        proxy_sweep(s, "gold")


def test_proxy_sweeps_keeps_order_with_threads():
    item = Item("gsm8k/test/0", "q", "8", {})
    sweeps = [math_sweep(f"gsm8k/test/{i}", LLM_RIGHT if i % 2 else LLM_WRONG, bool(i % 2)) for i in range(6)]
    seen = []
    out = proxy_sweeps(sweeps, "task-aware", items={s.item_id: item for s in sweeps}, workers=3,
                       progress=lambda d, n: seen.append((d, n)))
    assert [p.sweep.item_id for p in out] == [s.item_id for s in sweeps]
    assert max(seen) == (6, 6)


def test_the_committed_gsm8k_numbers_recompute_from_the_committed_traces(tmp_path):
    """docs/proxy_labels.json's GSM8K test rows and labels, recomputed from traces/gsm8k-test.jsonl.gz (math only:
    no sandbox, a few seconds): the page's numbers are the code's, not edited by hand."""
    import json
    from pathlib import Path

    from shepherd.traces.compact import import_compact
    from shepherd.traces.proxy import VARIANTS, task_items
    from shepherd.traces.store import TraceStore

    repo = Path(__file__).resolve().parents[2]
    doc = json.loads((repo / "docs/proxy_labels.json").read_text(encoding="utf-8"))["benchmarks"]["gsm8k"]
    with TraceStore(tmp_path / "gsm8k.sqlite") as store:
        import_compact(repo / "traces/gsm8k-test.jsonl.gz", store)
        sweeps = store.item_sweeps("gsm8k")
    assert len(sweeps) == doc["items"]
    items = task_items("gsm8k", sweeps)
    for variant in VARIANTS:
        got = proxy_stats(sweeps, proxy_sweeps(sweeps, variant, items=items, workers=1))
        assert json.loads(json.dumps(got)) == doc["variants"][variant], variant
