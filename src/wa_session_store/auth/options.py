"""The per-session options of :func:`~wa_session_store.use_auth_state`, checked once.

:class:`SessionOptions` carries them, checked when it is built, before any
I/O; :class:`AuthStateOptions` is their keyword form, for ``**options``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any, TypedDict

from typing_extensions import Unpack

from ..backends.lease import Lease
from ..errors import InvalidInputError, InvalidTypeError, shown
from ..store.ids import check_category
from .auth_state import AuthState
from .creds_saver import UrgentPredicate, check_urgent, prekey_counters_changed
from .keys import DEFAULT_KEY_CACHE_BYTES, DEFAULT_PRELOAD, KeyWrites, check_key_options
from .runner import check_seconds

__all__ = ["AuthStateOptions", "SessionOptions"]


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """The per-session options of :func:`use_auth_state`, validated once, frozen.

    The one carrier of them that the library passes around:
    ``use_auth_state`` and ``restore_all`` build one from their keyword
    arguments (the public form), the pyaileys integration replaces its own
    defaults in one (:meth:`replace`), and :class:`AuthState` is built from
    it. The defaults are ``use_auth_state``'s; see it for what each option
    does. (``tests/test_layout.py`` keeps these fields, the keys of
    :class:`AuthStateOptions`, ``use_auth_state``'s keyword arguments and
    ``AuthState``'s equal, defaults included.)

    Every option is checked here, when it is built, so that a caller that
    builds one first (``use_auth_state``, ``restore_all``, the pyaileys
    integration) refuses bad options before any I/O: before a read, and
    before ``restore_all`` leases anything. An iterable ``preload`` is kept
    as a tuple (so a generator is read once).

    Raises:
        InvalidInputError: a number out of range: ``throttle``,
            ``initial_delay`` or ``backup_jitter`` below 0 or not finite,
            ``backup_interval`` below 0 or not finite (None or 0: no
            backups), ``backup_jitter`` not below a non-zero
            ``backup_interval``, ``key_cache_bytes`` below 0; ``key_writes``
            neither ``"write-through"`` nor ``"barrier"``; a ``preload``
            category that is not a valid category name.
        InvalidTypeError: a number that is not an int or float (bool
            included); ``urgent`` or ``on_lost`` neither callable nor None;
            ``lease`` not a :class:`~wa_session_store.Lease` or None;
            ``preload`` not True, False or an iterable of categories.
    """

    throttle: float = 30.0
    backup_interval: float | None = 300.0
    initial_delay: float = 10.0
    backup_jitter: float = 0.0
    urgent: UrgentPredicate | None = prekey_counters_changed
    lease: Lease | None = None
    on_lost: Callable[[AuthState], None] | None = None
    key_writes: KeyWrites = "write-through"
    preload: bool | Iterable[str] = False
    key_cache_bytes: int = DEFAULT_KEY_CACHE_BYTES

    def __post_init__(self) -> None:
        check_seconds("throttle", self.throttle, allow_zero=True)
        if self.backup_interval is not None:
            check_seconds(
                "backup_interval (None or 0: no backups)", self.backup_interval, allow_zero=True
            )
        check_seconds("initial_delay", self.initial_delay, allow_zero=True)
        check_seconds("backup_jitter", self.backup_jitter, allow_zero=True)
        if self.backup_interval and self.backup_jitter >= self.backup_interval:
            raise InvalidInputError(
                f"backup_jitter must be less than backup_interval ({self.backup_interval!r}), "
                f"not {shown(self.backup_jitter)}"
            )
        check_urgent(self.urgent)
        if self.lease is not None and not isinstance(self.lease, Lease):
            raise InvalidTypeError(
                f"lease must be a Lease (from acquire_lease) or None, "
                f"not {type(self.lease).__name__}"
            )
        if self.on_lost is not None and not callable(self.on_lost):
            raise InvalidTypeError(
                f"on_lost must be a callable or None, not {type(self.on_lost).__name__}"
            )
        check_key_options(self.key_writes, self.key_cache_bytes)
        if not isinstance(self.preload, bool):
            categories = tuple(check_category(c) for c in _preload_categories(self.preload))
            object.__setattr__(self, "preload", categories)  # frozen: set once, here

    def replace(self, **changes: Unpack[AuthStateOptions]) -> SessionOptions:
        """A copy with ``changes`` made, validated again (TypeError for an unknown option)."""
        return replace(self, **changes)

    def state_options(self) -> dict[str, Any]:
        """The keyword arguments of :class:`AuthState`: every option but ``preload``."""
        return {name: getattr(self, name) for name in _STATE_OPTIONS}

    def categories(self) -> list[str]:
        """The key categories to preload (raises InvalidTypeError for a bad ``preload``)."""
        return _preload_categories(self.preload)


#: The options :class:`AuthState` takes: every field of SessionOptions but ``preload``.
_STATE_OPTIONS = tuple(f.name for f in fields(SessionOptions) if f.name != "preload")


def _preload_categories(preload: object) -> list[str]:
    if preload is True:
        return list(DEFAULT_PRELOAD)
    if preload is False or preload is None:
        return []
    if isinstance(preload, (str, bytes)) or not isinstance(preload, Iterable):
        raise InvalidTypeError(
            f"preload must be True, False or an iterable of key categories, "
            f"not {type(preload).__name__}"
        )
    return list(preload)


class AuthStateOptions(TypedDict, total=False):
    """The per-session options of :func:`use_auth_state`, as keyword arguments.

    The type of ``**options`` in the functions that take them on
    (``restore_all``, ``use_pyaileys_auth_state``, ``restore_all_sync``):
    the keyword form of :class:`SessionOptions`, with the same keys.
    """

    throttle: float
    backup_interval: float | None
    initial_delay: float
    backup_jitter: float
    urgent: UrgentPredicate | None
    lease: Lease | None
    on_lost: Callable[[AuthState], None] | None
    key_writes: KeyWrites
    preload: bool | Iterable[str]
    key_cache_bytes: int
