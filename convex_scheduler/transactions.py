"""Transactions the scheduler opens itself, and the backoff between retries."""

from __future__ import annotations

import contextlib
import random
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


def full_jitter(attempt: int, initial: float, maximum: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): full-jitter exponential backoff.

    A uniform draw from ``[0, min(maximum, initial * 2 ** (attempt - 1))]``,
    which spreads colliding workers apart better than a fixed doubling.
    """
    ceiling = min(maximum, initial * (2 ** min(max(attempt - 1, 0), 60)))
    return random.uniform(0, ceiling)
