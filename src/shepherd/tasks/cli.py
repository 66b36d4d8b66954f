"""`shepherd tasks ...`: list the benchmarks, say which items a loader leaves out, grade a file of responses.

Mounted into the main CLI by `register(app)` (or `app.add_typer(tasks_app, name="tasks")`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from ..console import console as err
from ..console import out
from .base import Task
from .parallel import grade_many
from .registry import get_task, list_tasks, task_class

tasks_app = typer.Typer(help="Benchmarks: list them, audit what they load, grade responses.",
                        no_args_is_help=True)
DataOption = typer.Option(None, "--data",
                          help="Data file or folder (default: $SHEPHERD_DATA_DIR, else the files "
                          "shipped with the package, then the hub).")


def register(app: typer.Typer) -> None:
    """Hook for the main CLI."""
    app.add_typer(tasks_app, name="tasks")


def _task(name: str, data: Path | None) -> Task:
    try:
        return get_task(name, data)
    except KeyError as exc:
        err.print(f"[bold red]error:[/] {exc.args[0]}")
        raise typer.Exit(2) from None


@tasks_app.command("list")
def list_command(
    counts: bool = typer.Option(False, "--counts", help="Load each task to count its items."),
) -> None:
    """The known tasks, their splits and the paper's item counts."""
    table = Table(title="tasks")
    for column in ("name", "kind", "splits", "paper items", "max tokens", "description"):
        table.add_column(column)
    if counts:
        table.add_column("items (default split)")
    for name in list_tasks():
        cls = task_class(name)
        row = [name, cls.kind, ", ".join(cls.splits), str(cls.paper_size or "-"), str(cls.max_tokens),
               cls.description]
        if counts:
            try:
                row.append(str(len(cls().load())))
            except Exception as exc:  # noqa: BLE001 - a table cell, not a crash
                row.append(f"[red]{type(exc).__name__}[/]")
        table.add_row(*row)
    out.print(table)


@tasks_app.command("audit")
def audit_command(name: str = typer.Argument(..., help="Task name."), split: str | None = None,
                  data: Path | None = DataOption) -> None:
    """Which upstream rows a task keeps and which it leaves out, with the reason for each."""
    task = _task(name, data)
    items = task.load(split)
    kept: dict[str, int] = {}
    for item in items:
        reason = str(item.metadata.get("kept") or "kept")
        kept[reason] = kept.get(reason, 0) + 1
    table = Table(title=f"{task.name}: {len(items)} kept, {len(task.dropped)} left out")
    table.add_column("items")
    table.add_column("why")
    for reason, n in sorted(kept.items(), key=lambda kv: -kv[1]):
        table.add_row(str(n), f"kept: {reason}")
    for dropped in task.dropped:
        table.add_row(dropped.id, f"[yellow]left out:[/] {dropped.reason}")
    out.print(table)


@tasks_app.command("grade")
def grade_command(
    task_name: str = typer.Option(..., "--task", help="Task name (see `shepherd tasks list`)."),
    responses: Path = typer.Option(..., "--responses", exists=True, dir_okay=False,
                                   help="JSONL: one {\"item_id\", \"response\"} a line."),
    output: Path | None = typer.Option(None, "--out", help="Per-item grades (JSONL); default: "
                                          "<responses>.grades.jsonl beside the input."),
    split: str | None = typer.Option(None, help="Split the item ids come from (default: the task's)."),
    workers: int | None = typer.Option(None, help="Parallel graders (default: CPU count)."),
    data: Path | None = DataOption,
) -> None:
    """Grade a file of responses and print the accuracy."""
    task = _task(task_name, data)
    rows = []
    with open(responses, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append((str(row["item_id"]), str(row["response"])))
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                err.print(f"[bold red]error:[/] {responses}:{n}: need a JSON object with item_id and "
                          f"response ({type(exc).__name__})")
                raise typer.Exit(2) from None
    by_id = {item.id: item for item in task.load(split)}
    unknown = [item_id for item_id, _ in rows if item_id not in by_id]
    if unknown:
        err.print(f"[bold red]error:[/] {len(unknown)} item ids not in {task.name} "
                  f"({split or task.default_split}): {', '.join(unknown[:5])}")
        raise typer.Exit(2)
    items = [by_id[item_id] for item_id, _ in rows]
    t0 = time.monotonic()
    with Progress("grading", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as progress:
        bar = progress.add_task("grade", total=len(items))
        grades = grade_many(task, items, [r for _, r in rows], workers=workers,
                            on_done=lambda i, g: progress.advance(bar))
    elapsed = time.monotonic() - t0
    output = output or responses.with_suffix(".grades.jsonl")
    with open(output, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"item_id": item.id, "correct": grade.correct, "extracted": grade.extracted,
                                 "reason": grade.reason}) + "\n" for item, grade in zip(items, grades))
    correct = sum(g.correct for g in grades)
    table = Table(title=f"{task.name}: {responses.name}")
    for column in ("items", "correct", "accuracy", "seconds"):
        table.add_column(column, justify="right")
    accuracy = correct / len(grades) if grades else 0.0
    table.add_row(str(len(grades)), str(correct), f"{accuracy:.1%}", f"{elapsed:.1f}")
    out.print(table)
    err.print(f"per-item grades: {output}")
