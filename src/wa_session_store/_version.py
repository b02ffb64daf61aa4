"""The installed distribution's version, for ``__version__`` and the exporters' meter."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("wa-session-store")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"
