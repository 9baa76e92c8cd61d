"""The few places where Django offers no public API for what the scheduler needs.

Everything here touches an attribute of a database wrapper that Django does
not document. Each one is isolated in a function of its own, and
``tests/test_compat.py`` checks every one of them on every supported Django
version, so a Django release that changes one fails that test instead of a
worker in production.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper

__all__ = [
    "can_return_from_insert",
    "driver_connection",
    "immediate_transaction",
    "quote_name",
]


def quote_name(connection: BaseDatabaseWrapper, name: str) -> str:
    """``name`` quoted as an identifier in this database's SQL dialect."""
    return connection.ops.quote_name(name)


def can_return_from_insert(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``INSERT … RETURNING`` works here (PostgreSQL, SQLite 3.35+, MariaDB 10.5+).

    Where it does not (MySQL), the new id comes from the DB-API cursor's
    ``lastrowid``.
    """
    return bool(connection.features.can_return_columns_from_insert)


def driver_connection(connection: BaseDatabaseWrapper) -> Any:
    """The DB-API connection under Django's wrapper, connecting first if needed.

    Only the PostgreSQL NOTIFY listener needs it: waiting for notifications
    is a driver feature that no Django API exposes. It only reads.
    """
    connection.ensure_connection()
    return connection.connection


@contextlib.contextmanager
def immediate_transaction(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """``transaction.atomic`` that begins with ``BEGIN IMMEDIATE`` on SQLite.

    Django 5.1+ has the ``transaction_mode`` database option for this, which
    the system check ``convex_scheduler.W002`` recommends; a project that has
    not set it still gets correct claims, through switching the wrapper's
    ``transaction_mode`` for the one ``BEGIN`` this block issues.
    """
    # Connecting sets transaction_mode from the database's OPTIONS.
    connection.ensure_connection()
    previous = connection.transaction_mode  # type: ignore[attr-defined]  # SQLite wrapper only
    if str(previous).upper() == "IMMEDIATE":
        with transaction.atomic(using=connection.alias):
            yield
        return
    connection.transaction_mode = "IMMEDIATE"  # type: ignore[attr-defined]  # as above
    try:
        with transaction.atomic(using=connection.alias):
            connection.transaction_mode = previous  # type: ignore[attr-defined]  # as above
            yield
    finally:
        connection.transaction_mode = previous  # type: ignore[attr-defined]  # as above
