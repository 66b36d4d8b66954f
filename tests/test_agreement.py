"""What an answer says and when two answers agree (shepherd/agreement.py): canonical final answers, code keys,
and live queries (no task item), whose code is run on the example calls the query itself shows, in the
sandbox; a query without examples compares syntax trees."""

import asyncio

import pytest

from shepherd.agreement import (
    agreement_basis,
    agreement_key,
    code_key,
    live_probes,
    live_prompt,
    normalize_answer,
    normalize_extracted,
    proxy_verdict,
    query_text,
)
from shepherd.models.base import GenerationRequest
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.base import PolicyContext
from shepherd.policies.baselines import ABC

QUERY = '''Write a Python function `second_largest(xs)` that returns the second largest distinct value.
>>> second_largest([3, 1, 4, 1, 5])
4
assert second_largest([2, 2, 7]) == 2
'''
QUERY_NO_EXAMPLES = "Write a Python function `second_largest(xs)` that returns the second largest distinct value."

SORTING = "```python\ndef second_largest(xs):\n    return sorted(set(xs))[-2]\n```"
LOOPING = ("Here it is:\n```python\ndef second_largest(xs):\n    best = second = None\n    for x in set(xs):\n"
           "        if best is None or x > best:\n            best, second = x, best\n"
           "        elif second is None or x > second:\n            second = x\n    return second\n```\n"
           "It keeps the two largest.")
WRONG = "```python\ndef second_largest(xs):\n    return max(xs)\n```"
RAISES = "```python\ndef second_largest(xs):\n    raise ValueError('todo')\n```"
DELETES = "```python\nimport shutil\ndef second_largest(xs):\n    shutil.rmtree('/')\n```"


def test_live_probes_are_the_querys_calls_without_expected_values():
    assert live_probes(QUERY) == ["second_largest([3, 1, 4, 1, 5])", "second_largest([2, 2, 7])"]
    assert live_probes(QUERY_NO_EXAMPLES) == []
    req = GenerationRequest.create([{"role": "system", "content": "Be brief. >>> f(1)"},
                                    {"role": "user", "content": QUERY}])
    assert live_prompt(PolicyContext(request=req, slm=None, llm=None)) == QUERY  # the user's turns only
    assert live_prompt(PolicyContext(request=req, slm=None, llm=None, item=object())) is None  # a task knows its own
    assert live_prompt(PolicyContext(request=None, slm=None, llm=None)) is None
    assert agreement_basis(None, None, QUERY, SORTING) == "example calls"
    assert agreement_basis(None, None, QUERY_NO_EXAMPLES, SORTING) == "syntax tree"
    assert agreement_basis(None, None, QUERY, "The answer is 4.") == "answer"


def test_live_programs_that_compute_the_same_agree():
    same = {agreement_key(None, None, t, QUERY) for t in (SORTING, LOOPING)}
    assert len(same) == 1 and next(iter(same)).startswith("run:")  # different text, same results: agree
    assert agreement_key(None, None, WRONG, QUERY) not in same  # the largest, not the second largest: differs
    assert agreement_key(None, None, RAISES, QUERY) is None  # raises on every call: agrees with no one
    assert agreement_key(None, None, DELETES, QUERY) is None  # the sandbox refuses, nothing is deleted


def test_live_query_without_examples_compares_syntax_trees():
    a = agreement_key(None, None, SORTING, QUERY_NO_EXAMPLES)
    assert not a.startswith("run:")
    assert agreement_key(None, None, SORTING.replace("return", "return  "), QUERY_NO_EXAMPLES) == a
    assert agreement_key(None, None, LOOPING, QUERY_NO_EXAMPLES) != a
    assert agreement_key(None, None, SORTING) == a  # no prompt at all: the same fallback


def test_abc_live_agrees_by_what_the_samples_compute():
    """Three samples written differently: with the query's examples they agree and the SLM answers; without
    them their syntax trees differ and ABC escalates."""
    texts = [SORTING, LOOPING, SORTING.replace("sorted(set(xs))[-2]", "sorted(set(xs), reverse=True)[1]")]
    slm = ScriptedBackend(lambda r: texts[r.seed % 3], model_id="s", verbatim=True)
    llm = ScriptedBackend(SORTING, model_id="l")

    def decide(query: str):
        req = GenerationRequest.create(query, max_tokens=128)
        return asyncio.run(ABC(k=3).decide(PolicyContext(request=req, slm=slm, llm=llm)))

    d = decide(QUERY)
    assert d.kind == "slm" and d.details["agreeing"] == 3 and d.answer_text == SORTING
    assert d.details["compared_by"] == "example calls"
    d = decide(QUERY_NO_EXAMPLES)
    assert d.kind == "llm" and d.details["agreeing"] == 1  # three programs, three syntax trees
    assert d.details["compared_by"] == "syntax tree"
    # a server that must not run code: the same samples compared by syntax tree, even with examples
    d = asyncio.run(ABC(k=3, run_live_code=False).decide(
        PolicyContext(request=GenerationRequest.create(QUERY, max_tokens=128), slm=slm, llm=llm)))
    assert d.kind == "llm" and d.details["compared_by"] == "syntax tree"


def _two_of_three(seed: int) -> str:
    return "4 so The answer is 4." if seed % 3 != 2 else "5 so The answer is 5."


def test_abc_counts_agreeing_samples_in_whole_numbers():
    """Two of three samples agree: ABC 2 of 3 answers with the SLM, 3 of 3 escalates. The knob is a count:
    it once was the share round(2/3, 4) = 0.6667 > 2/3, so "2 of 3" behaved as 3 of 3."""
    slm = ScriptedBackend(lambda r: _two_of_three(r.seed), model_id="s")
    llm = ScriptedBackend("The answer is 4.", model_id="l")
    req = GenerationRequest.create("What is 2 + 2?", max_tokens=32)

    def decide(policy):
        return asyncio.run(policy.decide(PolicyContext(request=req, slm=slm, llm=llm)))

    d = decide(ABC(k=3, agree=2))
    assert d.kind == "slm" and d.details["agreeing"] == 2 and "4" in d.answer_text
    assert decide(ABC(k=3)).kind == "llm" and decide(ABC(k=3, agree=3)).kind == "llm"
    for bad in (0, 4, 0.67, True):
        with pytest.raises(ValueError, match="whole number"):
            ABC(k=3, agree=bad)


def test_the_evaluation_suites_abc_points_are_whole_counts():
    """Every (k, j) point the suite replays is j of k samples, and "2 of 3" really answers on two agreeing
    samples (the suite's knob, not a hand-made policy)."""
    from shepherd.evaluation.suite import build_families

    class Sweep:
        item_id, full_tokens, levels, sweep, slm_greedy = "x/0", 10, [], {"temperature": 0.7}, None
        samples = [object()] * 3

    (fam,) = build_families("x", [Sweep()], scorers={}, predictor=None, wanted=["abc"])
    assert fam.values == [(2, 2), (3, 2), (3, 3)]
    assert [fam.label(v) for v in fam.values] == ["abc 2 of 2", "abc 2 of 3", "abc 3 of 3"]
    slm = ScriptedBackend(lambda r: _two_of_three(r.seed), model_id="s")
    llm = ScriptedBackend("The answer is 4.", model_id="l")
    ctx = PolicyContext(request=GenerationRequest.create("What is 2 + 2?", max_tokens=32), slm=slm, llm=llm)
    kinds = {fam.label(v): asyncio.run(fam.make(v).decide(ctx)).kind for v in fam.values}
    assert kinds == {"abc 2 of 2": "slm", "abc 2 of 3": "slm", "abc 3 of 3": "llm"}


def test_the_optional_agreement_gates_are_asked_for_by_name_and_count_the_greedy_vote():
    """`abc+greedy` and `reactive-fixed+vote` are not in the default study; asked for, their points are the
    greedy answer voting with the samples (3 of 4) or a looser sample gate (2 of 3)."""
    from shepherd.evaluation.suite import ALL_POLICIES, OPTIONAL_POLICIES, build_families

    class Sweep:
        item_id, full_tokens, sweep, slm_greedy = "x/0", 10, {"temperature": 0.7, "grid": (0.0, 0.5)}, None
        levels = ()
        samples = (object(),) * 3

    assert not set(OPTIONAL_POLICIES) & set(ALL_POLICIES)
    assert not build_families("x", [Sweep()], scorers={}, predictor=None, wanted=["abc"])[0].name.endswith("+greedy")
    abc, rf = build_families("x", [Sweep()], scorers={}, predictor=None, wanted=list(OPTIONAL_POLICIES))
    assert abc.label((3, 3)) == "abc 3 of 4 (greedy + 3 samples)" and (3, 4) in abc.values
    assert rf.values == [(f, j, g) for f in (0.5, 1.0) for j, g in ((2, False), (3, True), (2, True))]
    assert rf.label((0.5, 3, True)) == "reactive-fixed f=0.5, 3 of 4 (greedy votes)"
    texts = {0: "so The answer is 4.", 1: "so The answer is 5.", 2: "thus The answer is 4."}
    slm = ScriptedBackend(lambda r: "hence The answer is 6." if r.greedy else texts[r.seed % 3], model_id="s")
    llm = ScriptedBackend("The answer is 4.", model_id="l")
    ctx = PolicyContext(request=GenerationRequest.create("What is 2 + 2?", max_tokens=32), slm=slm, llm=llm)
    # the greedy answer (6) sides with no sample: 2 of 4 agree on 4
    assert asyncio.run(abc.make((3, 2)).decide(ctx)).kind == "slm"
    assert asyncio.run(abc.make((3, 3)).decide(ctx)).kind == "llm"
    assert asyncio.run(rf.make((0.5, 2, False)).decide(ctx)).kind == "slm"
    assert asyncio.run(rf.make((0.5, 3, True)).decide(ctx)).kind == "hint"  # 5 of the LLM's 10 tokens


def test_query_text_takes_user_turns():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}]
    assert query_text(msgs) == "2+2?"
    assert query_text((("system", "s"), ("user", "u"))) == "u"


@pytest.mark.parametrize("text,expected", [
    ("so 48 + 24 = 72. The answer is 72.", "72"),
    ("The answer is $1,200.00", "1200"),
    ("blah \\boxed{3.50} more", "3.5"),
    ("first 3 then 4", "4"),
    ("no numbers here\nFinal: Yes!", "final yes"),
    ("", None),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("a,b", [
    ("1/2", "2"), ("3/2", "2"), ("\\frac{16}{3}", "3"), ("2\\sqrt{3}", "3"), ("[2,+\\infty)", "(-\\infty,2]"),
    ("\\{1,2\\}", "2"), ("x^2+1", "1"), ("-\\frac{1}{2}", "\\frac{1}{2}"),
])
def test_different_math_answers_never_agree(a, b):
    """The last number of an answer is not the answer: these pairs once all read the same."""

    assert normalize_extracted(a) != normalize_extracted(b)
    assert normalize_answer(f"so The answer is ${a}$.") != normalize_answer(f"so The answer is ${b}$.")
    assert normalize_answer(f"Thus \\boxed{{{a}}}") != normalize_answer(f"Thus \\boxed{{{b}}}")


@pytest.mark.parametrize("a,b", [
    ("0.5", "\\frac{1}{2}"), ("1/2", "\\dfrac{1}{2}"), ("1,200", "1200.00"), ("18 dollars", "18"),
    ("\\left[2, +\\infty\\right)", "[2,+\\infty)"), ("\\frac{16}{3}", "16/3"),
])
def test_equal_math_answers_agree(a, b):

    assert normalize_extracted(a) == normalize_extracted(b)
    assert normalize_answer(f"The answer is ${a}$.") == normalize_answer(f"The answer is ${b}$.")


def test_code_answers_compare_by_syntax_tree_not_by_their_last_number():
    one = "def f(x):\n    return x + 1"
    assert normalize_extracted(one, "code") == normalize_extracted("def f(x):\n  # same\n  return x+1", "code")
    assert normalize_extracted(one, "code") != normalize_extracted("def g(y):\n    return y - 1", "code")
    assert normalize_answer(one) == normalize_answer("def g(y):\n    return y * 1")  # why code needs its own key
    assert code_key("def broken(:\n  1") == "def broken(: 1" and code_key("  ") is None


def _no_embedding(a: str, b: str) -> float:
    raise AssertionError("math answers are not compared by embedding")


def test_proxy_live_math_without_a_stated_answer_compares_last_numbers():
    """A worked solution cut off before "The answer is": its last number, never the embedding's cosine (two
    solutions worded alike but ending in different numbers are close in MiniLM's space)."""
    ref = "She buys 3 packs of 4, so 3 * 4 = 12 pens, then gives away 5: 12 - 5 = 7"
    same = "3 packs with 4 each: 3 * 4 = 12; after giving 5 away, 12 - 5 = 7"
    other = "She buys 3 packs of 4, so 3 * 4 = 12 pens, then gives away 5: 12 - 5 = 8"
    v = proxy_verdict(None, None, same, ref, similarity=_no_embedding)
    assert (v.agree, v.basis, v.similarity) == (True, "last number", None)
    assert proxy_verdict(None, None, other, ref, similarity=_no_embedding).agree is False
    assert proxy_verdict(None, None, "I do not know.", ref, similarity=_no_embedding).agree is False
    latex = "Let $x = \\frac{1}{2}$, so the area is $2x = 1$"
    assert proxy_verdict(None, None, "so $2x = 1$", latex, similarity=_no_embedding).basis == "last number"
    # a stated final answer is compared as a whole answer, as before
    v = proxy_verdict(None, None, "so The answer is $\\frac{1}{2}$.", "12 - 5 = 7, so The answer is 0.5.",
                      similarity=_no_embedding)
    assert (v.agree, v.basis) == (True, "answer")


def test_proxy_free_text_uses_the_embedding_threshold_and_code_its_examples():
    calls = []

    def sim(a: str, b: str) -> float:
        calls.append((a, b))
        return 0.9 if "Paris" in a else 0.3

    ref = "The capital of France is Paris, on the Seine."
    v = proxy_verdict(None, None, "Paris is the capital of France.", ref, similarity=sim)
    assert (v.agree, v.basis, v.similarity) == (True, "embedding", 0.9)
    assert proxy_verdict(None, None, "Lyon.", ref, similarity=sim).agree is False
    assert proxy_verdict(None, None, "Paris.", ref, similarity=sim, threshold=0.95).agree is False
    assert len(calls) == 3
    assert proxy_verdict(None, None, "", ref, similarity=sim).basis == "empty"
    v = proxy_verdict(None, None, LOOPING, SORTING, QUERY, similarity=_no_embedding)
    assert (v.agree, v.basis) == (True, "example calls")
    assert proxy_verdict(None, None, WRONG, SORTING, QUERY, similarity=_no_embedding).agree is False
