"""The one exception of the developer sandbox."""

from __future__ import annotations

__all__ = ["SandboxError"]


class SandboxError(RuntimeError):
    """The sandbox could not be built, started or loaded; the message says why."""
