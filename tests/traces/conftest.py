import pytest
from trace_fakes import FakeTask, models, run_fake_sweep  # noqa: F401  (re-exported for fixtures)

from shepherd.traces.store import TraceStore


@pytest.fixture
def swept_store(tmp_path):
    store = TraceStore(tmp_path / "swept.sqlite")
    task = FakeTask(8)
    run_fake_sweep(store, task)
    return store, task
