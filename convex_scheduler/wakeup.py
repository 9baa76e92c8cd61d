"""How scheduling tells idle workers that a function became due (the sending side).

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

The worker's receiving side (the NOTIFY listener and the doorbell socket)
lives in :mod:`convex_scheduler.worker.listeners`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import stat
import tempfile
import threading
from pathlib import Path

from django.db import connections, transaction

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


class UnsafeDoorbellDir(OSError):
    """The doorbell folder is not a private folder of this user."""


def check_private_dir(directory: Path) -> None:
    """Refuse a doorbell folder that someone else could plant sockets or links in.

    It must be a real folder (not a symlink), owned by this process's user,
    with no access for group or others. Raises :class:`UnsafeDoorbellDir`.
    """
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeDoorbellDir(f"{directory} is not a folder (a symlink or a file is refused)")
    if info.st_uid != os.geteuid():
        raise UnsafeDoorbellDir(
            f"{directory} belongs to user id {info.st_uid}, not to this process's "
            f"({os.geteuid()}); remove it or run workers and web processes as one user"
        )
    if info.st_mode & 0o077:
        raise UnsafeDoorbellDir(
            f"{directory} has mode {stat.S_IMODE(info.st_mode):o}; only its owner may use it "
            "(mode 700)"
        )


_sender: socket.socket | None = None
_sender_lock = threading.Lock()


def ring_doorbells(directory: Path) -> None:
    """Send one datagram to every worker listening in ``directory``.

    Only sockets directly in a private folder of this user are rung; symlinks
    are never followed.
    """
    global _sender
    try:
        check_private_dir(directory)
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return  # no worker on this machine
    except OSError as exc:
        logger.warning("not ringing local workers: %s", exc)
        return
    if _sender is None:
        with _sender_lock:
            if _sender is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                _sender = sender
    for entry in entries:
        if not entry.name.endswith(".sock") or not _is_socket(entry):
            continue
        try:
            _sender.sendto(b"!", entry.path)
        except (ConnectionRefusedError, FileNotFoundError):
            # The worker died without removing its socket.
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
        except OSError:
            pass  # buffer full: that worker has wake-ups queued already


def _is_socket(entry: os.DirEntry[str]) -> bool:
    try:
        return stat.S_ISSOCK(entry.stat(follow_symlinks=False).st_mode)
    except OSError:
        return False


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
