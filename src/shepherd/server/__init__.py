"""The OpenAI-compatible server: `create_app(config, backends=None)` and `shepherd serve`.

Importing this package is light; fastapi, uvicorn and prometheus-client load only when the app is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app
    from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerSettings":
        from .settings import ServerSettings

        return ServerSettings
    raise AttributeError(f"module 'shepherd.server' has no attribute {name!r}")
