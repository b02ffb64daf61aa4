"""Backends that other packages install, found by the scheme of a store URL.

A package registers a backend under the entry-point group
``wa_session_store.backends``: the entry point's name is the URL scheme, its
value a factory that :func:`~wa_session_store.open_store` calls with the
whole URL and the store options, ``factory(url, **options)``, and that
returns a :class:`~wa_session_store.store.base.BaseStore`, not yet opened::

    [project.entry-points."wa_session_store.backends"]
    myscheme = "my_package:open_my_store"

The built-in schemes always mean the built-in backends: ``open_store``
handles them before it looks at any entry point, so an installed package
cannot take over ``postgresql://`` (and the credentials in such a URL). An
entry point named like a built-in scheme is never loaded; the error for an
unknown scheme lists it as ignored. Entry points are read at each lookup,
so a package installed while the process runs is found.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from ..errors import InvalidInputError, StoreConfigurationError, describe_error
from ..store.base import BaseStore

__all__ = ["BACKENDS_GROUP", "BUILT_IN_SCHEMES", "installed_backend"]

#: The entry-point group that packages register their backends under.
BACKENDS_GROUP = "wa_session_store.backends"

#: The schemes ``open_store`` handles itself, whatever is installed.
BUILT_IN_SCHEMES = ("memory", "sqlite", "postgresql", "postgres")

#: What an entry point of the group names: ``factory(url, **options)``.
BackendFactory = Callable[..., BaseStore]


def _registered() -> dict[str, list[EntryPoint]]:
    """The group's entry points by scheme (lower case), in the order installed."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=BACKENDS_GROUP):
        found.setdefault(entry.name.lower(), []).append(entry)
    return found


def _origin(entry: EntryPoint) -> str:
    """``value`` (from distribution ``name``): where an entry point comes from."""
    dist = getattr(entry, "dist", None)
    return f"{entry.value} (from {dist.name})" if dist is not None else entry.value


def _unknown(scheme: str, registered: dict[str, list[EntryPoint]]) -> InvalidInputError:
    installed = sorted(s for s in registered if s not in BUILT_IN_SCHEMES)
    ignored = sorted(_origin(entry) for s in BUILT_IN_SCHEMES for entry in registered.get(s, ()))
    message = (
        f"unknown store URL scheme {scheme[:20]!r}: expected a built-in one (memory://, "
        "sqlite:///path, postgresql://… or postgres://…) or "
        + (
            f"an installed backend's ({', '.join(f'{s}://' for s in installed)}; "
            if installed
            else "an installed backend's (none is installed; "
        )
        + f"entry-point group {BACKENDS_GROUP!r})"
    )
    if ignored:
        message += f"; ignored, as they name built-in schemes: {', '.join(ignored)}"
    return InvalidInputError(message)


def installed_backend(scheme: str, url: str, options: dict[str, Any]) -> BaseStore:
    """The store an installed package's factory builds for ``url`` (``scheme`` in lower case).

    Called by ``open_store`` for a scheme that is not built in. What the
    factory raises for a URL it refuses (it should be an
    :class:`~wa_session_store.InvalidInputError`) is raised as it is.

    Raises:
        InvalidInputError: no installed package registers ``scheme``; the
            message lists the built-in and the installed schemes.
        StoreConfigurationError: two packages register ``scheme`` (neither is
            chosen), or its entry point cannot be loaded, is not callable, or
            its factory returns something that is not a ``BaseStore``.
    """
    registered = _registered()
    entries = [] if scheme in BUILT_IN_SCHEMES else registered.get(scheme, [])
    if not entries:
        raise _unknown(scheme, registered)
    if len(entries) > 1:
        raise StoreConfigurationError(
            f"several installed packages register the store URL scheme {scheme!r}: "
            f"{', '.join(map(_origin, entries))}; uninstall all but one"
        )
    (entry,) = entries
    try:
        factory = entry.load()
    except Exception as exc:
        raise StoreConfigurationError(
            f"the backend of {scheme}:// URLs, {_origin(entry)}, cannot be loaded: "
            f"{describe_error(exc)}"
        ) from exc
    if not callable(factory):
        raise StoreConfigurationError(
            f"the backend of {scheme}:// URLs, {_origin(entry)}, is a "
            f"{type(factory).__name__}, not a factory: it must name a callable "
            "factory(url, **options) that returns a BaseStore"
        )
    store = factory(url, **options)
    if not isinstance(store, BaseStore):
        raise StoreConfigurationError(
            f"the backend of {scheme}:// URLs, {_origin(entry)}, returned a "
            f"{type(store).__name__}, not a wa_session_store.store.base.BaseStore"
        )
    return store
