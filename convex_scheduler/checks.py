"""System checks for ``CONVEX_SCHEDULER`` and the database it runs on.

Every id is listed in ``docs/checks.rst``.
"""

from __future__ import annotations

import difflib
from datetime import timedelta
from numbers import Real
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connections, router
from django.utils.module_loading import import_string

from .conf import DEFAULTS, SETTING_NAME

_POSITIVE_INTS = (
    "MAX_SCHEDULED_PER_FUNCTION",
    "MAX_SCHEDULED_ARGS_BYTES",
    "MAX_ARGS_BYTES",
    "CLEANUP_BATCH_SIZE",
    "CONCURRENCY",
    "BATCH_SIZE",
)
_POSITIVE_SECONDS = (
    "POLL_INTERVAL",
    "STATUS_INTERVAL",
    "HEARTBEAT_INTERVAL",
    "WORKER_TIMEOUT",
    "CONFLICT_BACKOFF_INITIAL",
    "CONFLICT_BACKOFF_MAX",
    "UNAVAILABLE_BACKOFF_INITIAL",
    "UNAVAILABLE_BACKOFF_MAX",
)


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list:
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [
            Error(
                f"{SETTING_NAME} must be a dict, not {type(value).__name__}.",
                hint="Set it to a dict of the settings you change, e.g. {'POLL_INTERVAL': 0.2}.",
                id="convex_scheduler.E001",
            )
        ]
    errors: list = []
    for key in value:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), DEFAULTS, n=1)
            errors.append(
                Warning(
                    f"{SETTING_NAME}[{key!r}] is not a known setting and is ignored.",
                    hint=(f"Did you mean {close[0]!r}? " if close else "")
                    + "See the settings reference for the keys.",
                    id="convex_scheduler.W001",
                )
            )
    for key in _POSITIVE_INTS:
        item = value.get(key, DEFAULTS[key])
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be a positive integer, not {item!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="convex_scheduler.E002",
                )
            )
    for key in _POSITIVE_SECONDS:
        item = value.get(key, DEFAULTS[key])
        if item is None and DEFAULTS[key] is None:
            continue
        if isinstance(item, bool) or not isinstance(item, Real) or not 0 < item < float("inf"):
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be a positive number of seconds, not {item!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="convex_scheduler.E003",
                )
            )
    grace = value.get("SHUTDOWN_GRACE_PERIOD", DEFAULTS["SHUTDOWN_GRACE_PERIOD"])
    if isinstance(grace, bool) or not isinstance(grace, Real) or not 0 <= grace < float("inf"):
        errors.append(
            Error(
                f"{SETTING_NAME}['SHUTDOWN_GRACE_PERIOD'] must be 0 or more seconds, "
                f"not {grace!r}.",
                hint="The default is 30.0; 0 means running functions are not waited for.",
                id="convex_scheduler.E008",
            )
        )
    retention = value.get("RETENTION", DEFAULTS["RETENTION"])
    if not isinstance(retention, timedelta) or retention <= timedelta(0):
        errors.append(
            Error(
                f"{SETTING_NAME}['RETENTION'] must be a positive timedelta, not {retention!r}.",
                hint="For example timedelta(days=7), the default.",
                id="convex_scheduler.E004",
            )
        )
    heartbeat = value.get("HEARTBEAT_INTERVAL", DEFAULTS["HEARTBEAT_INTERVAL"])
    timeout = value.get("WORKER_TIMEOUT", DEFAULTS["WORKER_TIMEOUT"])
    if (
        isinstance(heartbeat, Real)
        and isinstance(timeout, Real)
        and 0 < heartbeat
        and timeout < 3 * heartbeat
    ):
        errors.append(
            Error(
                f"{SETTING_NAME}['WORKER_TIMEOUT'] ({timeout}s) must be at least three "
                f"heartbeats ({3 * heartbeat}s).",
                hint="Otherwise a live worker may be taken for dead and its actions failed.",
                id="convex_scheduler.E005",
            )
        )
    classes = value.get("API_PERMISSION_CLASSES", DEFAULTS["API_PERMISSION_CLASSES"])
    if not isinstance(classes, (list, tuple)):
        errors.append(
            Error(
                f"{SETTING_NAME}['API_PERMISSION_CLASSES'] must be a list of dotted paths.",
                hint="The default is ['rest_framework.permissions.IsAdminUser'].",
                id="convex_scheduler.E006",
            )
        )
    else:
        for path in classes:
            if isinstance(path, str):
                try:
                    import_string(path)
                except ImportError as exc:
                    errors.append(
                        Error(
                            f"{SETTING_NAME}['API_PERMISSION_CLASSES'] names {path!r}, "
                            f"which cannot be imported: {exc}.",
                            hint="Use dotted paths of DRF permission classes.",
                            id="convex_scheduler.E009",
                        )
                    )
    return errors


@register(Tags.compatibility)
def check_database(app_configs: Any = None, **kwargs: Any) -> list:
    from .models import ScheduledFunction

    errors: list = []
    if not settings.USE_TZ:
        errors.append(
            Error(
                "convex_scheduler needs USE_TZ = True.",
                hint="Scheduled times are compared across processes and machines in UTC.",
                id="convex_scheduler.E007",
            )
        )
    alias = router.db_for_write(ScheduledFunction)
    connection = connections[alias]
    if connection.vendor == "sqlite":
        options = connection.settings_dict.get("OPTIONS", {})
        if str(options.get("transaction_mode", "")).upper() != "IMMEDIATE":
            errors.append(
                Warning(
                    f"DATABASES[{alias!r}] is SQLite without transaction_mode 'IMMEDIATE'.",
                    hint=(
                        "Code that schedules inside transaction.atomic() may fail with "
                        "'database is locked' while a worker writes. Set "
                        "OPTIONS = {'transaction_mode': 'IMMEDIATE', 'init_command': "
                        "'PRAGMA journal_mode=WAL;'}."
                    ),
                    id="convex_scheduler.W002",
                )
            )
    return errors
