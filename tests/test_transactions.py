"""The transactions the scheduler opens itself, on every database."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from convex_scheduler import scheduler
from convex_scheduler.testing import run_due
from convex_scheduler.transactions import commit_without_waiting_for_disk

from . import functions

pytestmark = pytest.mark.django_db(transaction=True)

RELAXED = "SET LOCAL synchronous_commit TO OFF"


def synchronous_commit():
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return cursor.fetchone()[0]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="a PostgreSQL setting")
def test_a_relaxed_commit_is_for_that_transaction_only():
    before = synchronous_commit()
    with transaction.atomic():
        commit_without_waiting_for_disk(connection.alias)
        assert synchronous_commit() == "off"
    assert synchronous_commit() == before == "on"


def test_it_is_harmless_inside_a_transaction_everywhere():
    # SQLite refuses to change its ``synchronous`` pragma inside a transaction:
    # the helper must not try.
    with transaction.atomic():
        commit_without_waiting_for_disk(connection.alias)
        scheduler.run_after(0, functions.increment, {"name": "a"})
    assert run_due().succeeded == 1


def test_only_a_mutation_lease_is_committed_without_waiting_for_disk():
    """An action's start is what makes it at-most-once: it must be durable."""
    scheduler.run_after(0, functions.increment, {"name": "a"})
    with CaptureQueriesContext(connection) as mutation:
        assert run_due().succeeded == 1
    scheduler.run_after(0, functions.record)
    with CaptureQueriesContext(connection) as action:
        assert run_due().succeeded == 1
    relaxed = connection.vendor == "postgresql"
    assert any(RELAXED in q["sql"] for q in mutation.captured_queries) is relaxed
    assert not any(RELAXED in q["sql"] for q in action.captured_queries)
