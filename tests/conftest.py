import os

import pytest
from django.db import connection

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
