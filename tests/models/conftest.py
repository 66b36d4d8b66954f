"""Fixtures for the model backends: a real OpenAI-compatible server serving the real 0.5B GGUF."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llama_server(slm_path, tmp_path_factory):
    """`python -m llama_cpp.server` serving the real 0.5B GGUF (`slm_path`, tests/local_models.py) on a
    free loopback port; yields its base URL (…/v1).

    `--interrupt_requests false`: by default this server ends a running stream early whenever another
    request arrives, which would make concurrent tests flaky.
    """
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.fail("llama-cpp-python[server] is not installed (pip install 'llm-shepherd[dev]')")
    import httpx

    port = free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    threads = str(min(2, os.cpu_count() or 1))
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(slm_path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads,
           "--interrupt_requests", "false", "--verbose", "false"]
    base = f"http://127.0.0.1:{port}/v1"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        try:
            deadline = time.monotonic() + 180
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                try:
                    if httpx.get(base + "/models", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("llama_cpp.server did not answer /v1/models within 180 s:\n"
                                       + log_path.read_text(errors="replace")[-3000:])
                time.sleep(0.25)
            yield base
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
