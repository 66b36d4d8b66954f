"""`shepherd models check`: one real generation in a child process, so that a native build that crashes on
this CPU is reported (with its fix) instead of killing the caller."""

import signal

import pytest
from typer.testing import CliRunner

from shepherd.cli import app
from shepherd.models.llamacpp import REBUILD_WITHOUT_AMX, check_runtime, explain_exit


def test_a_signal_is_a_native_crash_with_the_rebuild_that_fixes_it():
    res = explain_exit(-int(signal.SIGSEGV), "", "/m/qwen.gguf")
    assert not res.ok and res.returncode == -int(signal.SIGSEGV)
    assert "SIGSEGV" in res.message and "qwen.gguf" in res.message
    assert REBUILD_WITHOUT_AMX in res.message
    assert "SIGILL" in explain_exit(-int(signal.SIGILL), "", "m.gguf").message


def test_an_ordinary_failure_quotes_the_childs_last_words_and_a_timeout_says_so():
    res = explain_exit(1, "Traceback (most recent call last):\n  ...\nValueError: Failed to load model", "m.gguf")
    assert not res.ok and "exit 1" in res.message and "Failed to load model" in res.message
    assert REBUILD_WITHOUT_AMX not in res.message
    late = explain_exit(None, "", "m.gguf")
    assert not late.ok and "in time" in late.message
    assert explain_exit(0, "", "m.gguf").ok


def test_a_missing_file_is_refused_without_starting_a_child(tmp_path):
    res = check_runtime(tmp_path / "nope.gguf")
    assert not res.ok and "not found" in res.message


def test_cli_refuses_a_file_that_is_not_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    result = CliRunner().invoke(app, ["models", "check", str(bad)])
    assert result.exit_code != 0
    assert "bad.gguf" in result.output


@pytest.mark.slow
def test_the_real_slm_generates_in_a_child(slm_path):
    res = check_runtime(slm_path)
    assert res.ok, res.message
    assert res.returncode == 0


@pytest.mark.slow
def test_cli_check_on_the_real_slm():
    result = CliRunner().invoke(app, ["models", "check", "qwen2.5-coder-0.5b-instruct-q4_k_m"])
    assert result.exit_code == 0, result.output
    assert "generates" in result.output
