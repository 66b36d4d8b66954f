import pytest
from trace_fakes import FakeTask, models

from shepherd.traces.executor import LocalExecutor
from shepherd.traces.store import TraceStore
from shepherd.traces.sweep import SweepConfig, SweepPlan, make_units, register_sweep


def run_fake_sweep(store, task, plan=None, n=None, parallel_calls=False, delay_s=0.0, max_tokens=64):
    slm, llm = models(delay_s)
    plan = plan or SweepPlan(trials=1, samples=2, temperature=0.7)
    cfg = SweepConfig(task=task.name, slm=slm.model_id, llm=llm.model_id, max_tokens=max_tokens)
    register_sweep(store, cfg, plan, "test")
    ex = LocalExecutor(slm, llm, task, store, parallel_calls=parallel_calls)
    results = list(ex.run(make_units(task, task.load(limit=n), cfg, plan, "test")))
    return results, slm, llm, cfg


@pytest.fixture
def swept_store(tmp_path):
    store = TraceStore(tmp_path / "swept.sqlite")
    task = FakeTask(8)
    run_fake_sweep(store, task)
    return store, task
