"""Training examples read from sweeps: code samples agree the way the reactive policy's do."""

from __future__ import annotations

from shepherd.models.base import Generation
from shepherd.predictor.data import examples_from_sweeps, load_store, samples_of, sweep_task_items
from shepherd.predictor.features import SampleFeaturizer
from shepherd.tasks.registry import get_task
from shepherd.traces.labels import labels_from_sweeps
from shepherd.traces.records import Graded, HintLevel, ItemSweep


def _gen(text: str) -> Generation:
    return Generation(text=text, prompt_tokens=10, completion_tokens=5, finish_reason="stop", latency_s=0.0,
                      model="m")


def _code_sweep(data_dir, bodies):
    task = get_task("humaneval", data_dir)
    item = task.load(limit=1)[0]
    entry = item.metadata["entry_point"]
    texts = [f"```python\ndef {entry}(*args):\n{b}\n```" for b in bodies]
    samples = [Graded(_gen(t), False, task.extract(item, t)) for t in texts]
    full = Graded(_gen("```python\npass\n```"), True, None)
    sweep = ItemSweep(task="humaneval", item_id=str(item.id), messages=[{"role": "user", "content": "q"}],
                      llm_full=full, full_tokens=5, samples=samples, split="test",
                      levels=[HintLevel(0.0, 0, [Graded(_gen("x"), False, None)])])
    return item, sweep


def test_code_samples_agree_by_behaviour_with_the_item_and_by_syntax_tree_without(data_dir):
    item, sweep = _code_sweep(data_dir, ["    return 1", "    x = 0\n    return x + 1", "    return 2"])
    by_tree = samples_of(sweep)
    by_run = samples_of(sweep, item)
    assert len({s.answer for s in by_tree}) == 3  # three different programs
    assert by_run[0].answer == by_run[1].answer != by_run[2].answer  # two compute the same on the examples
    assert SampleFeaturizer.consensus(by_run)[1] == 2 and SampleFeaturizer.consensus(by_tree)[1] == 1
    assert sweep_task_items("humaneval", [sweep], data_dir) == {str(item.id): item}
    assert sweep_task_items("gsm8k", [sweep], data_dir) == {}  # math: the grader's answer already is the key


def test_examples_take_the_items_and_load_store_falls_back_with_a_note(data_dir, tmp_path, monkeypatch):
    item, sweep = _code_sweep(data_dir, ["    return 1", "    return 0 + 1", "    return 1"])
    labels = labels_from_sweeps([sweep], filter=False)
    [with_items] = examples_from_sweeps([sweep], labels, {str(item.id): item})
    [without] = examples_from_sweeps([sweep], labels)
    assert SampleFeaturizer.consensus(with_items.samples)[1] == 3
    assert SampleFeaturizer.consensus(without.samples)[1] == 2

    class Store:  # an open store's interface, as load_store reads it
        path = "mem"

        def item_sweeps(self, task, split=None, sweep=None, _sweeps=(sweep,)):
            return list(_sweeps)

    got = load_store(Store(), "humaneval", filter=False, data=data_dir)
    assert not got.notes and SampleFeaturizer.consensus(got.examples[0].samples)[1] == 3
    got = load_store(Store(), "humaneval", filter=False, data=tmp_path / "no-such-data")
    assert "syntax tree" in got.notes[0] and SampleFeaturizer.consensus(got.examples[0].samples)[1] == 2
