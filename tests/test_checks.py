from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from convex_scheduler.checks import check_database, check_functions_reach_workers, check_settings
from convex_scheduler.registry import registry


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


@pytest.mark.parametrize(
    "key",
    [
        "POLL_INTERVAL",
        "STATUS_INTERVAL",
        "HEARTBEAT_INTERVAL",
        "WORKER_TIMEOUT",
        "CONFLICT_BACKOFF_INITIAL",
        "CONFLICT_BACKOFF_MAX",
        "UNAVAILABLE_BACKOFF_INITIAL",
        "UNAVAILABLE_BACKOFF_MAX",
        "UNKNOWN_FUNCTION_TIMEOUT",
    ],
)
def test_e003_every_seconds_setting(key):
    with override_settings(CONVEX_SCHEDULER={key: -1}):
        # E005 compares WORKER_TIMEOUT with HEARTBEAT_INTERVAL and may fire too.
        assert "convex_scheduler.E003" in ids(check_settings())


def test_e003_poll_interval_may_be_none():
    with override_settings(CONVEX_SCHEDULER={"POLL_INTERVAL": None}):
        assert check_settings() == []


@pytest.mark.parametrize("value", [-1, -0.001, float("inf"), float("nan"), "30", True, None])
def test_e008_grace_period_not_zero_or_more_seconds(value):
    with override_settings(CONVEX_SCHEDULER={"SHUTDOWN_GRACE_PERIOD": value}):
        (message,) = check_settings()
    assert message.id == "convex_scheduler.E008"
    assert "SHUTDOWN_GRACE_PERIOD" in message.msg
    assert message.hint


def test_e008_grace_period_may_be_zero():
    with override_settings(CONVEX_SCHEDULER={"SHUTDOWN_GRACE_PERIOD": 0}):
        assert check_settings() == []


@pytest.mark.parametrize("value", [7, timedelta(0), timedelta(days=-1), "7d"])
def test_e004_retention_is_a_positive_timedelta(value):
    with override_settings(CONVEX_SCHEDULER={"RETENTION": value}):
        assert ids(check_settings()) == ["convex_scheduler.E004"]


@override_settings(CONVEX_SCHEDULER={"HEARTBEAT_INTERVAL": 10, "WORKER_TIMEOUT": 20})
def test_e005_timeout_shorter_than_three_heartbeats():
    assert ids(check_settings()) == ["convex_scheduler.E005"]


@pytest.mark.parametrize("value", ["rest_framework.permissions.IsAdminUser", 3, {}])
def test_e006_permission_classes_not_a_list(value):
    with override_settings(CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": value}):
        (message,) = check_settings()
    assert message.id == "convex_scheduler.E006"
    assert message.hint


@pytest.mark.parametrize(
    "value",
    [["no.such.Class"], ("rest_framework.permissions.IsAdminUser", "rest_framework.NoSuchClass")],
)
def test_e009_permission_class_cannot_be_imported(value):
    with override_settings(CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": value}):
        (message,) = check_settings()
    assert message.id == "convex_scheduler.E009"
    assert "cannot be imported" in message.msg
    assert message.hint


def test_permission_classes_default_to_none_meaning_model_permissions():
    with override_settings(CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": None}):
        assert check_settings() == []


def test_permission_classes_may_be_classes_or_paths():
    from rest_framework.permissions import IsAuthenticated

    value = [IsAuthenticated, "rest_framework.permissions.IsAdminUser"]
    with override_settings(CONVEX_SCHEDULER={"API_PERMISSION_CLASSES": value}):
        assert check_settings() == []


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


# Django 6.1's JSONField check asks SQLite whether it supports JSON.
@pytest.mark.django_db
@override_settings(CONVEX_SCHEDULER={"CONCURRENCY": 0})
def test_check_command_fails_on_errors():
    with pytest.raises(SystemCheckError, match=r"convex_scheduler\.E002"):
        call_command("check")


def test_every_id_has_its_own_check_and_is_documented():
    """An id names one check: no id is reported from two places in checks.py."""
    import re
    from collections import Counter
    from pathlib import Path

    from convex_scheduler import checks

    source = Path(checks.__file__).read_text()
    used = Counter(re.findall(r'id="(convex_scheduler\.[EW]\d+)"', source))
    assert used, "no check ids found"
    assert [check_id for check_id, count in used.items() if count > 1] == []
    docs = (Path(__file__).resolve().parent.parent / "docs" / "checks.rst").read_text()
    documented = set(re.findall(r"^``(convex_scheduler\.[EW]\d+)``$", docs, re.MULTILINE))
    assert documented == set(used)


@pytest.mark.parametrize("value", [0, -1, True, "3"])
def test_e002_max_crashes(value):
    with override_settings(CONVEX_SCHEDULER={"MAX_CRASHES": value}):
        assert ids(check_settings()) == ["convex_scheduler.E002"]


@pytest.mark.parametrize("value", [1, "yes", None])
def test_e010_log_tracebacks_is_a_bool(value):
    with override_settings(CONVEX_SCHEDULER={"LOG_TRACEBACKS": value}):
        assert ids(check_settings()) == ["convex_scheduler.E010"]


def test_w003_names_functions_registered_after_start_up():
    assert check_functions_reach_workers() == []

    def registered_by_a_view(ctx):
        pass

    registry.register(registered_by_a_view, "mutation", internal=False, name="views:late")
    try:
        (message,) = check_functions_reach_workers()
    finally:
        registry.unregister("views:late")
    assert message.id == "convex_scheduler.W003"
    assert "'views:late'" in message.msg
    assert check_functions_reach_workers() == []


@pytest.mark.parametrize(
    "pools",
    [
        ["emails"],
        {"emails": 5},
        {"emails": {"max_parallelism": -1}},
        {"emails": {"max_parallelism": True}},
        {"emails": {"max_parallelism": 2, "typo": 1}},
        {"": {"max_parallelism": 1}},
    ],
)
def test_e014_pools(pools):
    with override_settings(CONVEX_SCHEDULER={"POOLS": pools}):
        assert ids(check_settings()) == ["convex_scheduler.E014"]


def test_e014_accepts_limits_and_a_paused_pool():
    pools = {"emails": {"max_parallelism": 5}, "paused": {"max_parallelism": 0}}
    with override_settings(CONVEX_SCHEDULER={"POOLS": pools}):
        assert check_settings() == []


@pytest.mark.parametrize("value", [0, -1, True])
def test_e002_max_result_bytes(value):
    with override_settings(CONVEX_SCHEDULER={"MAX_RESULT_BYTES": value}):
        assert ids(check_settings()) == ["convex_scheduler.E002"]
