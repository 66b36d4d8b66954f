"""`shepherd serve` as a user runs it (a subprocess), the config's [server] section, and light imports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from shepherd.config import ConfigError, parse_config
from shepherd.server.settings import server_settings

from .support import interrupt

CONFIG = """
[llm]
backend = "scripted"
model = "big"
script = "Step one add three and four . The answer is 7."
price = { input = 0.59, output = 0.79 }

[slm]
backend = "scripted"
model = "small"
script = "I believe the answer is 7."

[server]
warmup = false
max_tokens_cap = 64

[server.models.shepherd]
policy = "fixed-hint"
settings = { tokens = 3 }

[[server.keys]]
name = "ci"
key_env = "SHEPHERD_TEST_KEY"
budget_usd = 1.0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_importing_shepherd_does_not_import_the_web_stack():
    code = ("import sys, shepherd, shepherd.server, shepherd.server.settings, shepherd.server.ledger, "
            "shepherd.server.cli, shepherd.cli\n"
            "heavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'prometheus_client') if m in sys.modules]\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_serve_runs_the_server_from_a_config_file(tmp_path):
    cfg = tmp_path / "server.toml"
    cfg.write_text(CONFIG.replace("[server]\n", f'[server]\nledger_path = "{tmp_path / "ledger.sqlite"}"\n'))
    port = free_port()
    env = {**os.environ, "SHEPHERD_TEST_KEY": "sk-test-key-123"}
    proc = subprocess.Popen([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg), "--port",
                             str(port), "--log-level", "warning"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).json()["ready"]:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-test-key-123", max_retries=0)
        resp = client.chat.completions.create(model="shepherd", messages=[{"role": "user", "content": "3+4?"}])
        assert resp.choices[0].message.content.startswith("Step one add")
        assert resp.shepherd["decision"] == "hint(3)" and resp.shepherd["cost_usd"] > 0
        assert resp.shepherd["budget"]["charged_usd"] == pytest.approx(resp.shepherd["cost_usd"])
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="shepherd", messages=[{"role": "user", "content": "3+4?"}], stream=True) if c.choices)
        assert streamed == resp.choices[0].message.content
    finally:
        rc = interrupt(proc)
    assert rc == 0


@pytest.mark.parametrize("server,needle", [
    ({"bogus": 1}, "server.bogus: unknown key"),
    ({"port": 70000}, "server.port"),
    ({"keys": [{"name": "a"}]}, "exactly one of key, key_env, key_sha256"),
    ({"keys": [{"name": "a", "key": "short"}]}, "at least 8"),
    ({"keys": [{"name": "a", "key": "12345678"}, {"name": "a", "key": "abcdefgh"}]}, "duplicate key names"),
    ({"global_budget": {"cap_usd": 10, "soften_from": 0.9, "slm_only_from": 0.5}}, "soften_from"),
    ({"models": {"bad name!": {"policy": "slm-only"}}}, "model name"),
    ({"on_llm_error": "retry"}, "server.on_llm_error"),
])
def test_server_section_errors_name_the_key(server, needle):
    with pytest.raises(ConfigError) as err:
        server_settings(parse_config({"server": server}))
    assert needle in str(err.value)


def test_serve_reports_config_errors_without_a_traceback(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[server]\nprot = 8000\n")
    out = subprocess.run([sys.executable, "-m", "shepherd.cli", "serve", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "server.prot: unknown key" in out.stderr and "Traceback" not in out.stderr


def test_unknown_policy_in_a_route_is_a_config_error():
    from shepherd.models.scripted import ScriptedBackend
    from shepherd.server import create_app

    cfg = parse_config({"server": {"models": {"x": {"policy": "no-such-policy"}}}})
    with pytest.raises(ConfigError, match="server.models.x"):
        create_app(cfg, {"slm": ScriptedBackend(), "llm": ScriptedBackend()})
