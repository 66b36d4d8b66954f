from pathlib import Path

import pytest

from shepherd.tasks.base import default_data_dir

REPO = Path(__file__).resolve().parents[1]
#: the benchmark files the package ships (or $SHEPHERD_DATA_DIR): what a fresh clone has
DATA_DIR = default_data_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if DATA_DIR is None or not DATA_DIR.is_dir():
        pytest.fail(f"benchmark data not found at {DATA_DIR}: the package's shepherd/tasks/data is missing")
    return DATA_DIR


from local_models import llm_backend, llm_path, slm_backend, slm_path  # noqa: F401  (shared fixtures)
