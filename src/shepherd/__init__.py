"""llm-shepherd: a small model answers; when it needs help it buys a short hint from a large model.

Importing this package is light: no model, network, API key or heavy runtime is touched until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "Shepherd": ("shepherd.api", "Shepherd"),
    "Answer": ("shepherd.answer", "Answer"),
    "Price": ("shepherd.costs", "Price"),
    "load_config": ("shepherd.config", "load_config"),
    "ShepherdConfig": ("shepherd.config", "ShepherdConfig"),
    "RunSettings": ("shepherd.runner", "RunSettings"),
    "Runner": ("shepherd.runner", "Runner"),
}

if TYPE_CHECKING:  # pragma: no cover
    from .answer import Answer
    from .api import Shepherd
    from .config import ShepherdConfig, load_config
    from .costs import Price
    from .runner import Runner, RunSettings


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'shepherd' has no attribute {name!r}")


__all__ = ["Answer", "Price", "RunSettings", "Runner", "Shepherd", "ShepherdConfig", "__version__",
           "load_config"]
