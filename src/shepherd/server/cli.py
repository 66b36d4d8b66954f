"""`shepherd serve`: the OpenAI-compatible server. Registered by `shepherd.cli` through `register(app)`;
the web stack is imported only when the command runs."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        config: Path | None = typer.Option(None, "--config", "-c", help="TOML config file ([server] section)."),
        host: str | None = typer.Option(None, "--host", help="Address to bind (default: server.host)."),
        port: int | None = typer.Option(None, "--port", min=0, max=65535,
                                           help="Port (default: server.port)."),
        log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    ) -> None:
        """Serve POST /v1/chat/completions (OpenAI-compatible), /v1/models, /health and /metrics."""
        from ..config import ConfigError, load_config
        from ..console import fail
        from ..models.base import BackendError
        from ..models.sources import ModelCorrupt, ModelNotFound
        from .ledger import LedgerError
        from .settings import server_settings

        try:
            cfg = load_config(config)
            settings = server_settings(cfg)
        except ConfigError as exc:
            fail(str(exc))
        try:
            import uvicorn

            from .app import create_app
        except ModuleNotFoundError as exc:
            fail(f"`shepherd serve` needs the server extra ({exc.name} is missing): "
                 "pip install 'llm-shepherd[server]'")
        try:
            application = create_app(cfg)
        except (ConfigError, LedgerError, ModelNotFound, ModelCorrupt, BackendError, ValueError) as exc:
            fail(str(exc))
        uvicorn.run(application, host=host or settings.host, port=settings.port if port is None else port,
                    log_level=log_level, access_log=log_level == "debug", timeout_graceful_shutdown=30)
