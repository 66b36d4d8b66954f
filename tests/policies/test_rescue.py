"""`rescue`: where the SLM's confidence falls mid-answer, its text is cut back to the start of the line, the
LLM continues the SLM's own partial answer for n tokens, and the SLM takes over again.

Scripted models (one word = one token) for the orchestration: the trigger, the cut, the segments, the
stream, the cap on rescues and the faults. The real pair is in the slow test at the end."""

from __future__ import annotations

import pytest
from rescue_fakes import SLM_TEXT, UnsureSLM, llm

from shepherd.confidence import first_doubt
from shepherd.models.base import BackendError
from shepherd.models.scripted import ScriptedBackend
from shepherd.policies.registry import make_policy
from shepherd.runner import Runner, RunSettings


def answer(slm, big, policy, emit=None, **settings):
    from shepherd.models.base import run_sync
    runner = Runner(slm, big, settings=RunSettings(max_tokens=60, **settings))
    return run_sync(runner.answer("How many apples?", policy, emit=emit))


def test_first_doubt_finds_the_first_low_window():
    assert first_doubt([-0.1] * 10, -1.0, 4) is None
    assert first_doubt([-0.1] * 5 + [-5.0] * 3 + [-0.1] * 5, -1.0, 4) == 2  # (-0.3 - 5) / 4 < -1
    assert first_doubt([-3.0, -0.1], -1.0, 8) == 0  # shorter than the window: one stretch
    assert first_doubt([], -1.0, 4) is None


def test_the_llm_continues_the_slms_text_from_the_line_where_it_lost_confidence():
    slm, big = UnsureSLM(), llm()
    pieces: list[tuple[str, str]] = []
    ans = answer(slm, big, make_policy("rescue", threshold=-1.0, tokens=5, window=2),
                 emit=lambda src, text: pieces.append((src, text)))
    # cut back to the start of the line with "99": the LLM continues "Alice has 3 apples.\n" for 5 tokens
    (call,) = big.calls
    assert call.prefix == "Alice has 3 apples.\n" and call.max_tokens == 5
    assert slm.calls[1].prefix == "Alice has 3 apples.\n" + "She buys 99 more so"
    assert [s for s, _, _ in ans.segments] == ["slm", "llm", "slm"]
    assert "".join(t for _, t, _ in ans.segments) == ans.text == "".join(t for _, t in pieces)
    assert ans.segments[0][1] == "Alice has 3 apples.\n" and ans.segments[0][2] == 4
    assert ans.text.endswith("The answer is 102.") and "= 7" not in ans.text
    assert ans.usage["llm"].completion_tokens == 5 and ans.hint_tokens == 5
    assert ans.cost.llm > 0 and ans.usage["slm"].calls == 2  # the doubted answer too, in the usage
    assert [d["source"] for d in ans.to_json()["segments"]] == ["slm", "llm", "slm"]


def test_a_trigger_that_fires_everywhere_is_capped_and_no_watch_means_the_answer_stands():
    slm, big = UnsureSLM(always_doubt=True), llm()
    ans = answer(slm, big, make_policy("rescue", threshold=-1.0, tokens=3, window=2, max_rescues=2))
    assert len(big.calls) == 2 and [s for s, _, _ in ans.segments].count("llm") == 2
    assert ans.segments[-1][0] == "slm"  # past the cap the SLM's continuation stands
    plain = answer(ScriptedBackend(SLM_TEXT, model_id="slm", verbatim=True), llm(), make_policy("rescue", threshold=0.0))
    assert plain.text == SLM_TEXT and plain.usage["llm"].calls == 0  # no log-probabilities: nothing to watch


def test_an_llm_that_fails_mid_rescue_leaves_the_slms_own_answer():
    ans = answer(UnsureSLM(), llm(fail=BackendError("down")), make_policy("rescue", threshold=-1.0, window=2),
                 on_llm_error="slm")
    assert ans.degraded and ans.text == SLM_TEXT and [s for s, _, _ in ans.segments] == ["slm", "slm"]
    with pytest.raises(BackendError, match="down"):
        answer(UnsureSLM(), llm(fail=BackendError("down")), make_policy("rescue", threshold=-1.0, window=2))


def test_a_backend_that_cannot_continue_a_turn_is_refused_before_anything_runs():
    from shepherd.models.base import PrefixNotSupported

    big = llm()
    big.hint_mode = "user_prompt"
    slm = UnsureSLM()
    with pytest.raises(PrefixNotSupported, match="llm"):
        answer(slm, big, make_policy("rescue"))
    assert slm.calls == [] and big.calls == []


@pytest.mark.slow
async def test_rescue_on_the_real_pair(slm_backend, llm_backend):
    """The real 0.5B SLM and 1.5B LLM, cut after the SLM's first line (the trigger is the scripted tests'
    business; this one is the protocol): the LLM's request continues exactly the SLM's kept text, the SLM's
    next request continues exactly kept text + the LLM's tokens, and the segments add up to the answer."""
    from shepherd.policies.rescue import RescuePolicy

    class AfterFirstLine(RescuePolicy):
        def cut(self, gen):
            i = gen.text.find("\n")
            return i + 1 if 0 <= i < len(gen.text) - 1 else len(gen.text) // 2

    runner = Runner(slm_backend, llm_backend, settings=RunSettings(max_tokens=80))
    q = ("Tom has 12 marbles. He gives 5 to Ann and then finds 9 more. How many marbles does he have now? "
         "Think step by step, one step per line, and finish with 'The answer is N.'")
    ans = await runner.answer(q, AfterFirstLine(tokens=8))
    assert [s for s, _, _ in ans.segments] == ["slm", "llm", "slm"]
    (kept, _, k), (hint, _, n), (rest, _, _) = [(t, s, c) for s, t, c in ans.segments]
    assert kept and hint and 0 < n <= 8 and k > 0
    assert ans.text == kept + hint + rest
    slm_gens = [g for r, g in ans.generations if r == "slm"]
    assert len(slm_gens) == 2 and slm_gens[0].text.startswith(kept) and slm_gens[1].text == rest
    assert ans.usage["llm"].calls == 1 and ans.usage["llm"].completion_tokens == n
