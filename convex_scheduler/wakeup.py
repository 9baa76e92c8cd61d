"""How an idle worker learns that a function became due.

Scheduling something that is due within one poll wakes workers once the
transaction commits (a rolled-back transaction wakes nobody):

* On PostgreSQL the insert itself calls ``pg_notify``, which the server
  delivers on commit and folds to one per transaction. Each worker keeps one
  connection ``LISTEN``-ing, so workers on every machine wake within
  milliseconds.
* On SQLite and MySQL/MariaDB, which have no such channel, scheduling rings a
  *doorbell* after commit (once per transaction): one datagram to each worker
  on the same machine, through Unix sockets in a folder named after the
  database. Workers on other machines find the function at their next poll
  (one indexed query).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from django.db import connections, transaction

from .compat import driver_connection
from .exceptions import Transience, classify_error
from .retry import full_jitter

logger = logging.getLogger("convex_scheduler")

CHANNEL = "convex_scheduler"


def supports_notify(using: str) -> bool:
    return connections[using].vendor == "postgresql"


_doorbell_dirs: dict[tuple[str, str], Path] = {}


def doorbell_dir(using: str) -> Path:
    """The folder of this database's worker doorbells on this machine."""
    settings = connections[using].settings_dict
    key = (using, str(settings.get("NAME")))
    directory = _doorbell_dirs.get(key)
    if directory is None:
        identity = "|".join(
            str(settings.get(name) or "") for name in ("ENGINE", "HOST", "PORT", "NAME")
        )
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        directory = Path(tempfile.gettempdir()) / f"convex-scheduler-{digest}"
        _doorbell_dirs[key] = directory
    return directory


_sender: socket.socket | None = None
_sender_lock = threading.Lock()


def ring_doorbells(directory: Path) -> None:
    """Send one datagram to every worker listening in ``directory``."""
    global _sender
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # no worker on this machine
    if _sender is None:
        with _sender_lock:
            if _sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                _sender = sender
    for entry in entries:
        if not entry.name.endswith(".sock"):
            continue
        try:
            _sender.sendto(b"!", entry.path)
        except (ConnectionRefusedError, FileNotFoundError):
            # The worker died without removing its socket.
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        except OSError:
            pass  # buffer full: that worker has wake-ups queued already


class _Ring:
    """An on-commit callback that rings once for all the schedules of one commit.

    Every schedule registers its own callback (Django offers no public way to
    ask whether the transaction already has one), and the callbacks of one
    transaction share a token: the first to run at commit rings, the others
    see the token spent. A rolled-back transaction never spends its token,
    so the next transaction on this thread simply reuses it.
    """

    __slots__ = ("token", "using")

    def __init__(self, using: str, token: list[bool]) -> None:
        self.using = using
        self.token = token

    def __call__(self) -> None:
        if self.token[0]:
            return
        self.token[0] = True
        ring_doorbells(doorbell_dir(self.using))


_ring_tokens = threading.local()


def ring_local_workers(using: str) -> None:
    """Ring this machine's workers once the current transaction (if any) commits.

    PostgreSQL needs no doorbell: the insert itself sent ``pg_notify``.
    """
    if connections[using].vendor == "postgresql":
        return
    tokens: dict[str, list[bool]] = getattr(_ring_tokens, "by_alias", None) or {}
    _ring_tokens.by_alias = tokens
    token = tokens.get(using)
    if token is None or token[0]:
        token = tokens[using] = [False]
    transaction.on_commit(_Ring(using, token), using=using)


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
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        directory.mkdir(mode=0o700, exist_ok=True)
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
