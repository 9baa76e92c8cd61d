"""Transactions the scheduler opens itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connections, transaction

from .compat import immediate_transaction


@contextlib.contextmanager
def write_transaction(using: str) -> Iterator[None]:
    """``transaction.atomic`` that takes the write lock up front on SQLite.

    SQLite ignores ``SELECT … FOR UPDATE``; a deferred transaction that reads
    and then writes fails with "database is locked" when another writer got
    there first, without waiting. ``BEGIN IMMEDIATE`` waits for the lock (up to
    the busy timeout) before reading, so two workers on one file serialise
    their claims instead. Other backends use row locks and need nothing extra.
    """
    connection = connections[using]
    if connection.vendor == "sqlite":
        with immediate_transaction(connection):
            yield
    else:
        with transaction.atomic(using=using):
            yield
