"""The one backoff rule of the scheduler, and waits that shutdown can cut short.

Every wait in the worker and in a running function's context goes through
:func:`wait`, so a forced stop never sits out a backoff. The worker sets the
event that ends waits for the thread running a function with
:func:`stop_waits_on`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from .exceptions import Transience, classify_error

__all__ = ["full_jitter", "stop_waits_on", "until_the_database_answers", "wait"]

logger = logging.getLogger("convex_scheduler")
T = TypeVar("T")

_stop: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "convex_scheduler_stop", default=None
)


def full_jitter(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full-jitter exponential backoff.

    A uniform draw from ``[0, min(maximum, initial * 2 ** (attempt - 1))]``,
    which spreads colliding workers apart better than a fixed doubling.
    """
    ceiling = min(maximum, initial * (2 ** min(max(attempt - 1, 0), 60)))
    return random.uniform(0, ceiling)


def wait(seconds: float, stop: threading.Event | None = None) -> bool:
    """Wait ``seconds``; return True at once if the stop event is (or gets) set.

    ``stop`` defaults to the event installed by :func:`stop_waits_on` for
    this thread, if any.
    """
    event = stop if stop is not None else _stop.get()
    if event is None:
        event = threading.Event()
    return event.wait(max(0.0, seconds))


@contextlib.contextmanager
def stop_waits_on(event: threading.Event) -> Iterator[None]:
    """Make :func:`wait` in this thread end when ``event`` is set."""
    token = _stop.set(event)
    try:
        yield
    finally:
        _stop.reset(token)


def until_the_database_answers(
    operation: Callable[[], T],
    *,
    what: str,
    stop: threading.Event | None = None,
    initial: float | None = None,
    maximum: float = 30.0,
    on_transient: Callable[[Exception], None] | None = None,
) -> tuple[bool, T | None]:
    """Run ``operation`` until it stops failing with transient database errors.

    Between attempts, waits a full-jitter backoff from ``initial`` (default
    ``UNAVAILABLE_BACKOFF_INITIAL``) up to ``maximum`` seconds, after calling
    ``on_transient`` (e.g. to drop the broken connection). Returns
    ``(True, result)``, or ``(False, None)`` if ``stop`` was set while
    waiting. Any other error is raised.
    """
    if initial is None:
        from .conf import scheduler_settings

        initial = float(scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL)
    failures = 0
    while True:
        try:
            return True, operation()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            failures += 1
            if on_transient is not None:
                on_transient(exc)
            delay = full_jitter(failures, initial, maximum)
            logger.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
            if wait(delay, stop):
                return False, None
