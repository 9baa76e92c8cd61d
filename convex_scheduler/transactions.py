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


def commit_without_waiting_for_disk(using: str) -> None:
    """Let the current transaction's commit return before its WAL is on disk.

    Only for writes that are hints, never for an outcome: a mutation batch's
    lease (``owner``) is there so that a worker that dies running the batch
    is noticed. If the *server* crashes before flushing, the lease is lost
    together with everything the batch did after it (the batch's own commit
    waits for the disk, and the WAL is flushed in order), which is harmless.
    On PostgreSQL this is ``SET LOCAL synchronous_commit``, which saves the
    commit's fsync; other databases have no per-transaction switch (SQLite's
    ``synchronous`` cannot change inside a transaction, MariaDB's is global).
    """
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
