"""The task interface: deterministic selection, ids, registry, data location, hub branch, light import."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from shepherd.tasks import Grade, Item, get_task, list_tasks
from shepherd.tasks.base import default_data_dir, select

ITEMS = [Item(f"t/{i}", f"q{i}", str(i)) for i in range(50)]


def test_select_is_deterministic_nested_and_in_upstream_order():
    a = select(ITEMS, limit=10, seed=3)
    assert a == select(ITEMS, limit=10, seed=3)
    assert a != select(ITEMS, limit=10, seed=4)
    assert [i.id for i in a] == sorted((i.id for i in a), key=lambda s: int(s.split("/")[1]))
    assert {i.id for i in a} <= {i.id for i in select(ITEMS, limit=20, seed=3)}
    assert select(ITEMS, limit=5) == ITEMS[:5]
    assert select(ITEMS) == ITEMS
    assert len(select(ITEMS, limit=500, seed=1)) == 50


def test_select_by_ids_keeps_their_order_and_rejects_unknown_ids():
    assert [i.id for i in select(ITEMS, ids=["t/7", "t/2"])] == ["t/7", "t/2"]
    with pytest.raises(KeyError, match="t/99"):
        select(ITEMS, ids=["t/99"])


def test_registry_and_paper_sizes():
    assert list_tasks() == ["gsm8k", "cnk12", "humaneval", "humaneval-completion", "mbpp"]
    sizes = {name: type(get_task(name)).paper_size for name in list_tasks()}
    assert sizes == {"gsm8k": 776, "cnk12": 2147, "humaneval": 164, "humaneval-completion": 164, "mbpp": 500}
    styles = {name: type(get_task(name)).prompt_style for name in list_tasks()}
    assert [n for n, s in styles.items() if s == "completion"] == ["humaneval-completion"]
    with pytest.raises(KeyError, match="unknown task"):
        get_task("nope")


def test_unknown_split_is_an_error(gsm8k):
    with pytest.raises(ValueError, match="unknown split"):
        gsm8k.load("validation")


def test_paper_subsample_names_its_items(gsm8k):
    items = gsm8k.load(limit=776, seed=0)
    assert len(items) == 776 and len({i.id for i in items}) == 776
    again = gsm8k.load(ids=[i.id for i in items])
    assert [i.id for i in again] == [i.id for i in items]
    assert items[0].id.startswith("gsm8k/test/")


def test_item_ids_are_stable(humaneval, mbpp, gsm8k, cnk12):
    assert humaneval.load(limit=1)[0].id == "HumanEval/0"
    assert mbpp.load(limit=1)[0].id == "mbpp/11"
    assert gsm8k.load(limit=1)[0].id == "gsm8k/test/0"
    assert cnk12.load(limit=1)[0].id.startswith("cnk12/")


def test_data_dir_env_override(monkeypatch, tmp_path):
    (tmp_path / "gsm8k").mkdir()
    rows = [{"question": "1+1?", "answer": "1+1=2\n#### 2"}, {"question": "2+2?", "answer": "#### 4"}]
    (tmp_path / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv("SHEPHERD_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    items = get_task("gsm8k").load()
    assert [(i.id, i.reference) for i in items] == [("gsm8k/test/0", "2"), ("gsm8k/test/1", "4")]
    assert get_task("gsm8k", tmp_path / "gsm8k" / "test.jsonl").load()[1].reference == "4"


def test_missing_local_data_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="gsm8k"):
        get_task("gsm8k", tmp_path, source="local").load()


@pytest.fixture
def fake_datasets(monkeypatch):
    """A stand-in `datasets` module: records what was asked for and returns rows in the hub's schema."""
    calls = []
    hub_rows = {
        "openai/gsm8k": [{"question": "q", "answer": "r\n#### 1,234"}],
        "open-r1/OpenR1-Math-220k": [
            {"problem": "Find x if 2x=6.", "solution": "x=3", "answer": "3", "problem_type": "Algebra",
             "question_type": "math-word-problem", "source": "cn_k12", "uuid": "u1",
             "generations": ["long text the loader must not keep"]},
            {"problem": "Prove it.", "solution": "...", "answer": "proof", "problem_type": "Algebra",
             "question_type": "proof", "source": "cn_k12", "uuid": "u2"},
            {"problem": "Other", "solution": "", "answer": "1", "problem_type": "Algebra",
             "question_type": "math-word-problem", "source": "olympiads", "uuid": "u3"},
            {"problem": "Pick one. A: 1 B: 2 C: 3 D: 4", "solution": "", "answer": "B", "problem_type": "Algebra",
             "question_type": "MCQ", "source": "cn_k12", "uuid": "u4"},
        ],
        "openai_humaneval": [{"task_id": "HumanEval/0", "prompt": "def f():\n", "canonical_solution": "    return 1\n",
                              "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}],
        "mbpp": [{"task_id": 11, "text": "t", "code": "def f():\n    return 1", "test_list": ["assert f() == 1"],
                  "test_setup_code": "", "challenge_test_list": []}],
    }

    class FakeDataset(list):
        """The slice of `datasets.Dataset` that the loaders use."""

        @property
        def column_names(self):
            return list(self[0]) if self else []

        def filter(self, function, input_columns):
            return FakeDataset(row for row in self if function(row[input_columns]))

        def select_columns(self, columns):
            return FakeDataset({c: row[c] for c in columns} for row in self)

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return FakeDataset(hub_rows[path])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_branch_uses_datasets_with_upstream_names(fake_datasets):
    assert get_task("gsm8k", source="hub").load()[0].reference == "1234"
    cnk = get_task("cnk12", source="hub")
    items = cnk.load()
    assert [i.id for i in items] == ["cnk12/u1", "cnk12/u4"]
    assert items[1].reference == "B" and items[1].metadata["answer_type"] == "choice"
    assert "generations" not in items[0].metadata
    assert [d.id for d in cnk.dropped] == ["cnk12/u2"] and "proof" in cnk.dropped[0].reason
    assert get_task("humaneval", source="hub").load()[0].id == "HumanEval/0"
    assert get_task("mbpp", source="hub").load()[0].metadata["entry_point"] == "f"
    assert fake_datasets == [("openai/gsm8k", "main", "test"), ("open-r1/OpenR1-Math-220k", "default", "train"),
                             ("openai_humaneval", None, "test"), ("mbpp", "full", "test")]


def test_import_is_light():
    code = ("import sys, shepherd.tasks; heavy = [m for m in ('math_verify', 'sympy', 'datasets', 'latex2sympy2_extended')"
            " if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_messages_are_chat_messages(gsm8k, cnk12, humaneval, mbpp):
    for task in (gsm8k, cnk12, humaneval, mbpp):
        messages = task.messages(task.load(limit=1)[0])
        assert messages and all(set(m) == {"role", "content"} for m in messages)
        assert messages[-1]["role"] == "user"
    assert "The answer is" in gsm8k.messages(gsm8k.load(limit=1)[0])[-1]["content"]
    assert "```python" in humaneval.messages(humaneval.load(limit=1)[0])[-1]["content"]


def test_grade_is_a_plain_record():
    g = Grade(True, "42", "ok")
    assert (g.correct, g.extracted, g.reason) == (True, "42", "ok")


def test_extract_is_what_grade_extracts_and_code_is_not_run(humaneval, mbpp, gsm8k, monkeypatch):
    from shepherd.tasks import code_task

    he, mb, gs = humaneval.load(limit=2)[1], mbpp.load(limit=1)[0], gsm8k.load(limit=1)[0]
    cases = [(humaneval, he, "```python\n" + he.metadata["prompt"] + he.reference + "```"),
             (humaneval, he, "```python\ndef separate_paren_groups(s):\n    return []\n```"),
             (humaneval, he, "I cannot help."),
             (mbpp, mb, "```python\ndef f(x):\n    return x\n```"), (mbpp, mb, ""),
             (gsm8k, gs, "So she makes 9 * 2 = 18 dollars. The answer is 18."), (gsm8k, gs, "no idea")]
    graded = [t.grade(item, resp) for t, item, resp in cases]
    assert graded[0].correct and not graded[1].correct and graded[1].extracted
    assert graded[4].extracted is None and graded[5].extracted == "18" and graded[6].extracted is None

    def no_sandbox(*_a, **_k):
        raise AssertionError("extract ran the code")

    monkeypatch.setattr(code_task, "run_python", no_sandbox)
    assert [t.extract(item, resp) for t, item, resp in cases] == [g.extracted for g in graded]


def test_cnk12_extract_matches_grade_without_comparing_to_the_reference(cnk12, monkeypatch):
    from shepherd.tasks import cnk12 as cnk12_mod

    items = cnk12.load()
    latex = next(i for i in items if i.metadata.get("answer_type") != "choice" and not i.metadata.get("choices"))
    listed = next((i for i in items if i.metadata.get("answer_type") != "choice" and i.metadata.get("choices")),
                  None)
    choice = next(i for i in items if i.metadata.get("answer_type") == "choice")
    responses = ["So the answer is $\\boxed{5}$.", "Hence $\\boxed{B}$", "I do not know."]
    cases = [(it, r) for it in (latex, listed, choice) if it is not None for r in responses]
    expected = [cnk12.grade(it, r).extracted for it, r in cases]
    assert any(expected) and None in expected
    # a choice item may match a value to its options (math-verify), never to the reference
    assert [cnk12.extract(it, r) for it, r in cases if it is choice] == \
        [e for (it, _), e in zip(cases, expected) if it is choice]

    def no_reference(gold, pred, *a, **k):
        raise AssertionError("extract compared with the reference")

    monkeypatch.setattr(cnk12_mod, "latex_equal", no_reference)
    assert [cnk12.extract(it, r) for it, r in cases if it is not choice] == \
        [e for (it, _), e in zip(cases, expected) if it is not choice]
