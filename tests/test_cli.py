"""The `shepherd` command, run as a user would (a subprocess)."""

import json
import subprocess
import sys

import pytest

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def shepherd(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "shepherd.cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.slow
def test_ask_json_with_hint_on_the_local_pair():
    res = shepherd("ask", "--hint-tokens", "12", "--max-tokens", "96", "--json", QUESTION)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["hint_tokens"] == 12
    assert data["decision"] == "hint(12)"
    assert data["answer"].startswith(data["hint_text"]) and data["hint_text"]
    assert data["usage"]["llm"]["completion_tokens"] == 12
    assert 0 < data["cost_usd"] < data["llm_only_cost_usd"]
    for key in ("answer", "decision", "hint_tokens", "cost_usd", "llm_only_cost_usd", "usage"):
        assert key in data


def test_empty_question_is_refused():
    res = shepherd("ask", "   ")
    assert res.returncode == 2
    assert "empty question" in res.stderr


def test_malformed_config_names_the_key(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[llm]\nmodel = 'x'\ntemprature = 3\n")
    res = shepherd("ask", "--config", str(cfg), "hi")
    assert res.returncode == 2
    assert "llm.temprature: unknown key" in res.stderr


def test_unknown_model_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[slm]\nmodel = 'no-such-model'\n")
    res = shepherd("ask", "--config", str(cfg), "hi")
    assert res.returncode == 2
    assert "unknown model 'no-such-model'" in res.stderr


def test_models_list_json():
    res = shepherd("models", "list", "--json")
    assert res.returncode == 0, res.stderr
    names = [r["name"] for r in json.loads(res.stdout)]
    assert "qwen2.5-coder-0.5b-instruct-q4_k_m" in names


def test_import_is_light():
    code = ("import sys, shepherd; shepherd.__version__; "
            "heavy = [m for m in ('llama_cpp', 'torch', 'fastapi', 'numpy', 'httpx', 'sklearn') if m in sys.modules]; "
            "print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": "/usr/bin"},
                         check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
