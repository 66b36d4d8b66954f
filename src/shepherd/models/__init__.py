"""Model backends: one interface (`Backend`), filled the same way by every runtime."""

from .base import (
    Backend,
    BackendError,
    BackendTimeout,
    Generation,
    GenerationRequest,
    PrefixNotSupported,
    StreamChunk,
    Usage,
)

__all__ = ["Backend", "BackendError", "BackendTimeout", "Generation", "GenerationRequest",
           "PrefixNotSupported", "StreamChunk", "Usage"]
