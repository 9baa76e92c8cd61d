"""The worker's side of wake-ups: a NOTIFY listener on PostgreSQL, a doorbell elsewhere.

The sending side is :mod:`convex_scheduler.wakeup`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from django.db import connections

from .. import retry
from ..compat import driver_connection
from ..wakeup import CHANNEL, check_private_dir

logger = logging.getLogger("convex_scheduler")


class Listener(threading.Thread):
    """Calls ``wake()`` whenever a NOTIFY arrives; reconnects with backoff."""

    def __init__(self, using: str, wake: Callable[[], None], stopped: threading.Event) -> None:
        super().__init__(name="convex-scheduler-listener", daemon=True)
        self.using = using
        self.wake = wake
        self.stopped = stopped

    def run(self) -> None:
        try:
            retry.until_the_database_answers(
                self._listen,
                what="listening for NOTIFY",
                stop=self.stopped,
                initial=0.5,
                maximum=10.0,
                on_transient=lambda exc: self._close(),
            )
        except Exception:
            logger.exception("the NOTIFY listener failed; polling only")
        finally:
            self._close()

    def _listen(self) -> None:
        connection = connections[self.using]
        with connection.cursor() as cursor:
            cursor.execute(f"LISTEN {CHANNEL}")
        # Anything that became due while we were not listening.
        self.wake()
        raw = driver_connection(connection)
        while not self.stopped.is_set():
            for _ in raw.notifies(timeout=0.5, stop_after=1):
                self.wake()

    def _close(self) -> None:
        try:
            connections[self.using].close()
        except Exception:
            logger.debug("closing the listener connection failed", exc_info=True)


class Doorbell(threading.Thread):
    """Calls ``wake()`` whenever a scheduler on this machine rings this worker."""

    def __init__(
        self, directory: Path, name: str, wake: Callable[[], None], stopped: threading.Event
    ) -> None:
        super().__init__(name="convex-scheduler-doorbell", daemon=True)
        self.path = directory / f"{name}.sock"
        self.wake = wake
        self.stopped = stopped
        directory.mkdir(mode=0o700, exist_ok=True)
        check_private_dir(directory)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.5)

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                try:
                    self.sock.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.wake()
        finally:
            self.sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
