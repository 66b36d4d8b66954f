"""`shepherd tasks list | audit | grade` through typer's test runner."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from shepherd.tasks.cli import register, tasks_app

runner = CliRunner()


def test_list_shows_every_task():
    result = runner.invoke(tasks_app, ["list"])
    assert result.exit_code == 0, result.output
    for name in ("gsm8k", "cnk12", "humaneval", "mbpp"):
        assert name in result.output


def test_audit_names_left_out_items(data_dir):
    result = runner.invoke(tasks_app, ["audit", "cnk12", "--data", str(data_dir)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "213 kept, 33 left out" in result.output and "ed277eece7b7d882" in result.output


def test_grade_a_file_of_responses(tmp_path, data_dir):
    responses = tmp_path / "answers.jsonl"
    rows = [
        {"item_id": "HumanEval/23", "response": "```python\ndef strlen(string):\n    return len(string)\n```"},
        {"item_id": "HumanEval/23", "response": "```python\ndef strlen(string):\n    return 0\n```"},
    ]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(tasks_app, ["grade", "--task", "humaneval", "--responses", str(responses),
                                       "--data", str(data_dir), "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "50.0%" in result.output
    grades = [json.loads(line) for line in (tmp_path / "answers.grades.jsonl").read_text().splitlines()]
    assert [g["correct"] for g in grades] == [True, False]
    assert grades[1]["item_id"] == "HumanEval/23" and "AssertionError" in grades[1]["reason"]


def test_grade_math_writes_to_the_named_file(tmp_path, data_dir):
    responses = tmp_path / "gsm.jsonl"
    responses.write_text(json.dumps({"item_id": "gsm8k/test/0", "response": "The answer is 18."}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(tasks_app, ["grade", "--task", "gsm8k", "--responses", str(responses),
                                       "--data", str(data_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["correct"] is True


def test_unknown_ids_and_tasks_are_errors(tmp_path, data_dir):
    responses = tmp_path / "bad.jsonl"
    responses.write_text(json.dumps({"item_id": "gsm8k/test/99999", "response": "1"}) + "\n")
    result = runner.invoke(tasks_app, ["grade", "--task", "gsm8k", "--responses", str(responses),
                                       "--data", str(data_dir)])
    assert result.exit_code == 2 and "not in gsm8k" in result.output
    assert runner.invoke(tasks_app, ["grade", "--task", "nope", "--responses", str(responses)]).exit_code == 2


def test_register_mounts_the_sub_app():
    app = typer.Typer()

    @app.command()
    def other() -> None:  # a second command so typer keeps sub-command names
        pass

    register(app)
    result = runner.invoke(app, ["tasks", "list"])
    assert result.exit_code == 0 and "humaneval" in result.output
