"""The time source of the scheduler.

Every "now" the app uses comes from :func:`now`, so tests and
:mod:`convex_scheduler.testing` can replace the clock without patching
``django.utils.timezone``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

_source: Callable[[], datetime] | None = None


def now() -> datetime:
    """The current time as an aware UTC datetime."""
    if _source is not None:
        return _source()
    return datetime.now(UTC)


def set_source(source: Callable[[], datetime] | None) -> Callable[[], datetime] | None:
    """Install ``source`` as the clock (``None`` restores the real one); return the old one."""
    global _source
    previous, _source = _source, source
    return previous
