"""Helpers for testing code that schedules functions.

Run what is due in the test's own thread and transaction, and move a fake
clock forward instead of sleeping::

    from convex_scheduler.testing import FakeClock, run_due

    def test_message_self_destructs(db):
        with FakeClock() as clock:
            message = send_message("hi")        # schedules a delete in 5 s
            run_due()
            assert Message.objects.filter(pk=message.pk).exists()
            clock.advance(seconds=5)
            run_due()
            assert not Message.objects.filter(pk=message.pk).exists()
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from . import clock as _clock
from .worker import Worker, WorkerStats

__all__ = ["FakeClock", "run_due"]


class FakeClock:
    """A clock that only moves when told to; a context manager that installs it.

    Everything in the app reads time from it while installed: scheduling,
    what counts as due, and the timestamps written on rows.
    """

    def __init__(self, start: datetime | None = None) -> None:
        if start is None:
            start = datetime.now(UTC)
        elif start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime.")
        self.current = start
        self._previous: Callable[[], datetime] | None = None
        self._installed = False

    def now(self) -> datetime:
        return self.current

    def advance(
        self,
        delta: timedelta | None = None,
        *,
        milliseconds: float = 0,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
    ) -> datetime:
        """Move the clock forward and return the new time."""
        step = (delta or timedelta()) + timedelta(
            milliseconds=milliseconds, seconds=seconds, minutes=minutes, hours=hours, days=days
        )
        if step < timedelta(0):
            raise ValueError("A clock only moves forward.")
        self.current += step
        return self.current

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime.")
        self.current = when

    def install(self) -> FakeClock:
        self._previous = _clock.set_source(self.now)
        self._installed = True
        return self

    def uninstall(self) -> None:
        if self._installed:
            _clock.set_source(self._previous)
            self._installed = False

    def __enter__(self) -> FakeClock:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()


def run_due(*, using: str | None = None, max_functions: int | None = None) -> WorkerStats:
    """Run every function due now in this thread, then return what happened.

    Includes what those functions schedule for now (delay 0). Mutations run
    in savepoints of the test's transaction, so this works with pytest-django's
    ``db`` fixture and Django's ``TestCase``. Actions run in the same thread.
    """
    worker = Worker(
        burst=True, concurrency=1, heartbeat=False, using=using, max_functions=max_functions
    )
    return worker.run()
