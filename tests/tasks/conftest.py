"""Task fixtures over the read-only benchmark files shipped in shepherd/tasks/data (or $SHEPHERD_DATA_DIR)."""

from __future__ import annotations

import pytest

from shepherd.tasks import get_task


@pytest.fixture(scope="session")
def gsm8k(data_dir):
    return get_task("gsm8k", data_dir, source="local")


@pytest.fixture(scope="session")
def cnk12(data_dir):
    return get_task("cnk12", data_dir, source="local")


@pytest.fixture(scope="session")
def humaneval(data_dir):
    return get_task("humaneval", data_dir, source="local")


@pytest.fixture(scope="session")
def mbpp(data_dir):
    return get_task("mbpp", data_dir, source="local")
