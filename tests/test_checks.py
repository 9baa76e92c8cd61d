from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from convex_scheduler.checks import check_database, check_settings


def ids(messages):
    return [message.id for message in messages]


def test_defaults_pass():
    assert check_settings() == []


@override_settings(CONVEX_SCHEDULER=["POLL_INTERVAL"])
def test_e001_not_a_dict():
    assert ids(check_settings()) == ["convex_scheduler.E001"]


@override_settings(CONVEX_SCHEDULER={"POLL_INTERVALL": 1})
def test_w001_unknown_key_suggests_the_close_one():
    (message,) = check_settings()
    assert message.id == "convex_scheduler.W001"
    assert "Did you mean 'POLL_INTERVAL'?" in message.hint


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, None])
def test_e002_positive_integers(value):
    with override_settings(CONVEX_SCHEDULER={"MAX_SCHEDULED_PER_FUNCTION": value}):
        assert ids(check_settings()) == ["convex_scheduler.E002"]


@pytest.mark.parametrize("value", [0, -0.5, float("inf"), float("nan"), "1", False])
def test_e003_positive_seconds(value):
    with override_settings(CONVEX_SCHEDULER={"POLL_INTERVAL": value}):
        assert ids(check_settings()) == ["convex_scheduler.E003"]


def test_e003_grace_period_may_be_zero_but_not_negative():
    with override_settings(CONVEX_SCHEDULER={"SHUTDOWN_GRACE_PERIOD": 0}):
        assert check_settings() == []
    with override_settings(CONVEX_SCHEDULER={"SHUTDOWN_GRACE_PERIOD": -1}):
        assert ids(check_settings()) == ["convex_scheduler.E003"]


@pytest.mark.parametrize("value", [7, timedelta(0), timedelta(days=-1), "7d"])
def test_e004_retention_is_a_positive_timedelta(value):
    with override_settings(CONVEX_SCHEDULER={"RETENTION": value}):
        assert ids(check_settings()) == ["convex_scheduler.E004"]


@override_settings(CONVEX_SCHEDULER={"HEARTBEAT_INTERVAL": 10, "WORKER_TIMEOUT": 20})
def test_e005_timeout_shorter_than_three_heartbeats():
    assert ids(check_settings()) == ["convex_scheduler.E005"]


@pytest.mark.parametrize("value", ["rest_framework.permissions.IsAdminUser", ["no.such.Class"]])
def test_e006_permission_classes(value):
    with override_settings(CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": value}):
        assert ids(check_settings()) == ["convex_scheduler.E006"]


@override_settings(USE_TZ=False)
def test_e007_use_tz():
    assert "convex_scheduler.E007" in ids(check_database())


def test_w002_sqlite_without_immediate_transactions(settings):
    from django.db import connections

    connection = connections["default"]
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    options = connection.settings_dict["OPTIONS"]
    original = options.pop("transaction_mode")
    try:
        assert ids(check_database()) == ["convex_scheduler.W002"]
    finally:
        options["transaction_mode"] = original
    assert check_database() == []


@override_settings(CONVEX_SCHEDULER={"CONCURRENCY": 0})
def test_check_command_fails_on_errors():
    with pytest.raises(SystemCheckError, match=r"convex_scheduler\.E002"):
        call_command("check")
