"""What every `shepherd` command prints through: one console for messages (stderr), one for results
(stdout), and `fail`, the one way a command stops with an error. Below every command module, so the
top-level command imports its sub-commands and none of them imports it back."""

from __future__ import annotations

import typer
from rich.console import Console

#: messages, progress and errors
console = Console(stderr=True)
#: results a script may read
out = Console()


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
