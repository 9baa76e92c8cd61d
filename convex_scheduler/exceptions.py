"""Errors raised by the scheduler and the classification of database errors.

Whether a failed mutation is retried depends on one question only: was the
failure a transient database condition, or an error in the function? The
answer is decided here, from each driver's SQLSTATE or error code, never from
the exception class alone (``OperationalError`` covers both a deadlock and a
syntax error on some backends).
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Iterator
from typing import Any

__all__ = ["SchedulingError", "Transience", "classify_error"]


class SchedulingError(ValueError):
    """A call to the scheduler was given something it cannot accept.

    The message says what was wrong and what is allowed. Nothing is written
    when this is raised.

    ``field`` names the input at fault when there is one: ``"function"``,
    ``"args"``, ``"delay_ms"``, ``"run_at"`` or ``"id"``; ``None`` when the
    error is about the combination (for example both a delay and a time), or
    about the running function's limits. The REST API and the admin form use
    it to attach the message to the right input.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep ``field`` across pickling (the default only passes ``args``).
        return (_rebuild_scheduling_error, (str(self), self.field))


def _rebuild_scheduling_error(message: str, field: str | None) -> SchedulingError:
    return SchedulingError(message, field=field)


class Transience(enum.Enum):
    """How a failure should be handled by the worker."""

    #: Not a transient database error: the function failed for good.
    PERMANENT = "permanent"
    #: Two transactions collided (serialization failure, deadlock, lock
    #: timeout, SQLite busy): retry in place after a short backoff.
    CONFLICT = "conflict"
    #: The database went away or refused work (lost connection, shutdown,
    #: too many connections): retry later by moving the due time.
    UNAVAILABLE = "unavailable"


# PostgreSQL SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_CONFLICT = {"40001", "40P01", "55P03"}
_PG_UNAVAILABLE_CLASSES = {"08"}  # connection exceptions
_PG_UNAVAILABLE = {"57P01", "57P02", "57P03", "53300", "53000", "58000", "58030"}

# MySQL / MariaDB error numbers.
_MYSQL_CONFLICT = {1205, 1213, 1020, 3572}  # lock wait timeout, deadlock, record changed, NOWAIT
_MYSQL_UNAVAILABLE = {
    1040,  # too many connections
    1053,  # server shutdown in progress
    1927,  # connection was killed
    2002,  # can't connect through socket
    2003,  # can't connect to server
    2006,  # server has gone away
    2013,  # lost connection during query
    2055,  # lost connection at handshake
    4031,  # disconnected by the server for inactivity
}

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _classify_one(exc: BaseException) -> Transience | None:
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        if sqlstate in _PG_CONFLICT:
            return Transience.CONFLICT
        if sqlstate[:2] in _PG_UNAVAILABLE_CLASSES or sqlstate in _PG_UNAVAILABLE:
            return Transience.UNAVAILABLE
        return None

    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
            return Transience.CONFLICT
        if code is None and "database is locked" in str(exc):
            return Transience.CONFLICT
        return None

    module = type(exc).__module__ or ""
    if module.startswith(("MySQLdb", "pymysql")) and exc.args and isinstance(exc.args[0], int):
        if exc.args[0] in _MYSQL_CONFLICT:
            return Transience.CONFLICT
        if exc.args[0] in _MYSQL_UNAVAILABLE:
            return Transience.UNAVAILABLE
        return None

    if module.startswith("psycopg") and type(exc).__name__ in (
        "OperationalError",
        "InterfaceError",
    ):
        # psycopg raises these without a SQLSTATE when the socket is gone.
        return Transience.UNAVAILABLE
    return None


def classify_error(exc: BaseException) -> Transience:
    """Decide whether ``exc`` (or a database error it was raised from) is transient.

    The whole ``__cause__``/``__context__`` chain is inspected, so a
    function that wraps a deadlock in its own exception is still retried.
    Django's ``InterfaceError`` for a connection it has already closed counts
    as the database being unavailable.
    """
    from django.db import InterfaceError

    for link in _chain(exc):
        verdict = _classify_one(link)
        if verdict is not None:
            return verdict
        if isinstance(link, InterfaceError) and "closed" in str(link):
            return Transience.UNAVAILABLE
    return Transience.PERMANENT
