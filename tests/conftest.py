import asyncio
import os

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from convex_scheduler.testing import FakeClock


def pytest_report_header(config):
    from django.conf import settings

    return f"database: {settings.DATABASES['default']['ENGINE']}"


@pytest.fixture(scope="session", autouse=True)
def _expected_vendor(django_db_setup, django_db_blocker):
    """Fail the run (rather than pass on SQLite) when CI asked for another database."""
    expected = os.environ.get("CONVEX_EXPECT_VENDOR")
    if expected and connection.vendor != expected:
        pytest.exit(f"expected the {expected} database, got {connection.vendor}", returncode=3)


@pytest.fixture
def clock():
    with FakeClock() as fake:
        yield fake


@pytest.fixture
def close_thread_sensitive_connections():
    """Close what ``sync_to_async`` code (``arun_mutation``, ``arun_after``) left open.

    Outside any ``async_to_sync``, asgiref runs it on one long-lived thread
    whose connections would outlive the test and keep its database in use.
    """
    yield
    asyncio.run(sync_to_async(connections.close_all)())
