"""Each workaround in convex_scheduler.compat, checked on the Django running the suite.

These fail when a Django release changes what the workaround relies on, so
the matrix in noxfile.py runs them on every supported version.
"""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from convex_scheduler import compat
from convex_scheduler.models import ScheduledFunction

pytestmark = pytest.mark.django_db


def test_quote_name_quotes_in_the_dialect_of_the_database():
    quoted = compat.quote_name(connection, "next_run_time")
    expected = "`next_run_time`" if connection.vendor == "mysql" else '"next_run_time"'
    assert quoted == expected


def test_can_return_from_insert_matches_what_the_database_does():
    table = compat.quote_name(connection, ScheduledFunction._meta.db_table)
    returns = compat.can_return_from_insert(connection)
    assert isinstance(returns, bool)
    if connection.vendor in ("postgresql", "sqlite"):
        # Every SQLite that Django 5.2+ ships with on Python 3.11+ is 3.35 or later.
        assert returns
    if returns:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {table} WHERE 1 = 0")
            assert list(cursor.fetchall()) == []


def test_driver_connection_is_the_open_db_api_connection():
    raw = compat.driver_connection(connection)
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute("SELECT 1")
        assert cursor.fetchone()[0] == 1
    finally:
        cursor.close()
    if connection.vendor == "postgresql":
        assert hasattr(raw, "notifies")  # psycopg 3's notification generator


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite only")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("configured", ["IMMEDIATE", None])
def test_immediate_transaction_begins_immediate_on_sqlite(configured):
    connection.close()
    connection.ensure_connection()
    original = connection.transaction_mode
    connection.transaction_mode = configured
    try:
        with CaptureQueriesContext(connection) as queries, compat.immediate_transaction(connection):
            ScheduledFunction.objects.count()
        assert connection.transaction_mode == configured
        begins = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("BEGIN")]
        assert begins == ["BEGIN IMMEDIATE"]
        # The next transaction is back to what the project configured.
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            ScheduledFunction.objects.count()
        begins = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("BEGIN")]
        assert begins == [f"BEGIN {configured}" if configured else "BEGIN"]
    finally:
        connection.transaction_mode = original
