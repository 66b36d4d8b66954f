"""Policies by name, so config files and the CLI can pick one. Later policies register here too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Policy
from .simple import FixedHint, LLMOnly, SLMOnly

_FACTORIES: dict[str, Callable[..., Policy]] = {
    "slm-only": SLMOnly,
    "llm-only": LLMOnly,
    "fixed-hint": FixedHint,
}


def register_policy(name: str, factory: Callable[..., Policy]) -> None:
    _FACTORIES[name] = factory


def policy_names() -> list[str]:
    _load_optional()
    return sorted(_FACTORIES)


def _load_optional() -> None:
    """Import policies that live in heavier modules only when someone asks for a name."""
    import importlib

    for mod in ("shepherd.policies.shepherding", "shepherd.policies.baselines", "shepherd.policies.confidence",
                "shepherd.policies.rescue", "shepherd.policies.automix"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:  # an extra the module needs is not installed
            if exc.name and not exc.name.startswith("shepherd"):
                continue
            if exc.name and exc.name.startswith(mod):
                continue
            raise


def make_policy(name: str, **settings: Any) -> Policy:
    if name not in _FACTORIES:
        _load_optional()
    if name not in _FACTORIES:
        raise ValueError(f"unknown policy {name!r}; known: {', '.join(policy_names())}")
    try:
        return _FACTORIES[name](**settings)
    except TypeError as exc:
        raise ValueError(f"bad settings for policy {name!r}: {exc}") from exc
