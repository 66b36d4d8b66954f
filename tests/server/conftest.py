import threading
import time

import pytest

from .support import LiveServer


@pytest.fixture
def live():
    """live(app) -> a started LiveServer. At the end of the test: no request task may still run in the
    server's loop, and once the servers are stopped no thread they started may be left."""
    before = set(threading.enumerate())
    servers: list[LiveServer] = []

    def start(app) -> LiveServer:
        server = LiveServer(app).__enter__()
        servers.append(server)
        return server

    yield start
    try:
        for s in servers:
            s.settle()
            assert s.request_tasks() == [], f"tasks left running: {s.request_tasks()}"
    finally:
        for s in servers:
            s.__exit__(None, None, None)
    deadline = time.monotonic() + 3
    while (left := [t for t in set(threading.enumerate()) - before if t.is_alive()]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"threads left running: {left}"


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL for this test session (tests/server/postgres.py); missing PostgreSQL fails the
    test with how to install it."""
    from .postgres import PostgresMissing, PostgresServer

    try:
        server = PostgresServer()
    except PostgresMissing as exc:
        pytest.fail(str(exc))
    with server:
        yield server


@pytest.fixture
def pg_url(postgres) -> str:
    """The URL of a fresh database of its own for one test."""
    return postgres.create_database()
