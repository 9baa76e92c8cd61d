"""Transient-error classification, fed with errors the real database raised."""

import sqlite3
from datetime import timedelta

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from convex_scheduler import scheduler
from convex_scheduler.exceptions import SchedulingError, Transience, classify_error
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.testing import run_due

from . import functions
from .models import Counter


def raised_by(statement):
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    except DatabaseError as exc:
        return exc
    raise AssertionError(f"{statement!r} did not fail")


@pytest.mark.django_db
def test_real_conflict_from_the_database_is_a_conflict():
    try:
        with transaction.atomic():
            functions.raise_real_conflict()
    except Exception as exc:  # the driver's own error, wrapped by Django
        assert classify_error(exc) is Transience.CONFLICT
    else:
        raise AssertionError("no conflict raised")


@pytest.mark.django_db
def test_syntax_and_integrity_errors_are_permanent():
    assert classify_error(raised_by("SELEKT 1")) is Transience.PERMANENT
    Counter.objects.create(name="a")
    with pytest.raises(IntegrityError) as info, transaction.atomic():
        Counter.objects.create(name="a")
    assert classify_error(info.value) is Transience.PERMANENT


def test_python_errors_are_permanent():
    assert classify_error(ValueError("x")) is Transience.PERMANENT
    assert classify_error(SchedulingError("x")) is Transience.PERMANENT


def test_a_wrapped_transient_error_is_still_transient():
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = 5
    try:
        try:
            raise busy
        except sqlite3.OperationalError as exc:
            raise RuntimeError("my function's own error") from exc
    except RuntimeError as wrapped:
        assert classify_error(wrapped) is Transience.CONFLICT


def test_sqlite_busy_from_sqlite_itself(tmp_path):
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as info:
        other.execute("BEGIN IMMEDIATE")
    holder.rollback()
    assert classify_error(info.value) is Transience.CONFLICT


@pytest.mark.django_db
@pytest.mark.skipif("connection.vendor != 'postgresql'")
@pytest.mark.parametrize(
    ("errcode", "expected"),
    [
        ("serialization_failure", Transience.CONFLICT),
        ("deadlock_detected", Transience.CONFLICT),
        ("lock_not_available", Transience.CONFLICT),
        ("admin_shutdown", Transience.UNAVAILABLE),
        ("too_many_connections", Transience.UNAVAILABLE),
        ("unique_violation", Transience.PERMANENT),
        ("division_by_zero", Transience.PERMANENT),
    ],
)
def test_postgresql_sqlstates(errcode, expected):
    exc = raised_by(f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{errcode}'; END $$;")
    assert classify_error(exc) is expected


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="SQLite has no connection to lose")
def test_lost_connection_moves_the_due_time_then_succeeds(clock):
    sid = scheduler.run_after(0, functions.terminate_own_connection_once, {"name": "lost"})
    run_due()
    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == State.PENDING
    assert row.attempts == 1
    assert row.next_run_time > row.scheduled_time
    assert row.next_run_time <= clock.now() + timedelta(seconds=0.05)
    clock.advance(seconds=1)
    run_due()
    row.refresh_from_db()
    assert (row.state, row.attempts) == (State.SUCCESS, 2)
    assert row.scheduled_time == row.creation_time
    assert Counter.objects.get(name="lost").value == 1
