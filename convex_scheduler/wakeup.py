"""How an idle worker learns that a function became due.

On PostgreSQL, scheduling something that is due soon sends ``NOTIFY`` on the
scheduling connection after its transaction commits (once per transaction),
and each worker keeps one connection ``LISTEN``-ing, so a worker wakes within
milliseconds instead of waiting for its next poll. A rolled-back transaction
notifies nobody. Other databases have no such channel: their workers poll
with a short interval, one indexed query per poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from django.db import connections

from .exceptions import Transience, classify_error
from .transactions import full_jitter

logger = logging.getLogger("convex_scheduler")

CHANNEL = "convex_scheduler"


def supports_notify(using: str) -> bool:
    return connections[using].vendor == "postgresql"


class _Notify:
    """An on-commit callback; its type marks "this transaction already notifies"."""

    __slots__ = ("using",)

    def __init__(self, using: str) -> None:
        self.using = using

    def __call__(self) -> None:
        try:
            with connections[self.using].cursor() as cursor:
                cursor.execute(f"NOTIFY {CHANNEL}")
        except Exception as exc:
            # A missed wake-up only costs latency: the workers still poll.
            logger.debug("NOTIFY failed: %s", exc)


def notify_due(using: str) -> None:
    """Wake idle workers once the current transaction (if any) commits."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    if connection.in_atomic_block:
        for entry in connection.run_on_commit:
            callback = entry[1]
            if isinstance(callback, _Notify) and callback.using == using:
                return
    connection.on_commit(_Notify(using))


class Listener(threading.Thread):
    """Calls ``wake()`` whenever a NOTIFY arrives; reconnects with backoff."""

    def __init__(self, using: str, wake: Callable[[], None], stopped: threading.Event) -> None:
        super().__init__(name="convex-scheduler-listener", daemon=True)
        self.using = using
        self.wake = wake
        self.stopped = stopped

    def run(self) -> None:
        failures = 0
        try:
            while not self.stopped.is_set():
                try:
                    self._listen()
                except Exception as exc:
                    if classify_error(exc) is Transience.PERMANENT:
                        logger.exception("the NOTIFY listener failed; polling only")
                        return
                    failures += 1
                    logger.warning("NOTIFY listener lost its connection: %s", exc)
                    self._close()
                    self.stopped.wait(full_jitter(failures, 0.5, 10.0))
                    continue
        finally:
            self._close()

    def _listen(self) -> None:
        connection = connections[self.using]
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        # Anything that became due while we were not listening.
        self.wake()
        raw = connection.connection
        while not self.stopped.is_set():
            for _ in raw.notifies(timeout=0.5, stop_after=1):
                self.wake()

    def _close(self) -> None:
        try:
            connections[self.using].close()
        except Exception:
            logger.debug("closing the listener connection failed", exc_info=True)
