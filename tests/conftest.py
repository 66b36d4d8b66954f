import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SHEPHERD_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"benchmark data not found at {DATA_DIR} (set SHEPHERD_DATA_DIR)")
    return DATA_DIR


from local_models import llm_backend, llm_path, slm_backend, slm_path  # noqa: F401  (shared fixtures)
