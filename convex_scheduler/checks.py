"""System checks for ``CONVEX_SCHEDULER`` and the database it runs on.

Every id is listed in ``docs/checks.rst``.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Sequence
from datetime import timedelta
from numbers import Real
from typing import Any, cast

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
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
    "MAX_CRASHES",
    "MAX_RESULT_BYTES",
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
    "UNKNOWN_FUNCTION_TIMEOUT",
)


def _real(item: object) -> float | None:
    """``item`` if it is a real number (bools included, as for ``isinstance``), else None."""
    if isinstance(item, Real):
        # typeshed's numbers.Real declares no comparison operators, but every
        # Real compares with ints and floats; the value itself is unchanged.
        return cast(float, item)
    return None


@register(Tags.compatibility)
def check_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return [
            Error(
                f"{SETTING_NAME} must be a dict, not {type(value).__name__}.",
                hint="Set it to a dict of the settings you change, e.g. {'POLL_INTERVAL': 0.2}.",
                id="convex_scheduler.E001",
            )
        ]
    errors: list[CheckMessage] = []
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
        seconds = _real(item)
        if isinstance(item, bool) or seconds is None or not 0 < seconds < float("inf"):
            errors.append(
                Error(
                    f"{SETTING_NAME}[{key!r}] must be a positive number of seconds, not {item!r}.",
                    hint=f"The default is {DEFAULTS[key]!r}.",
                    id="convex_scheduler.E003",
                )
            )
    grace = value.get("SHUTDOWN_GRACE_PERIOD", DEFAULTS["SHUTDOWN_GRACE_PERIOD"])
    grace_seconds = _real(grace)
    if isinstance(grace, bool) or grace_seconds is None or not 0 <= grace_seconds < float("inf"):
        errors.append(
            Error(
                f"{SETTING_NAME}['SHUTDOWN_GRACE_PERIOD'] must be 0 or more seconds, "
                f"not {grace!r}.",
                hint="The default is 30.0; 0 means running functions are not waited for.",
                id="convex_scheduler.E008",
            )
        )
    log_tracebacks = value.get("LOG_TRACEBACKS", DEFAULTS["LOG_TRACEBACKS"])
    if not isinstance(log_tracebacks, bool):
        errors.append(
            Error(
                f"{SETTING_NAME}['LOG_TRACEBACKS'] must be True or False, not {log_tracebacks!r}.",
                hint="The default is True: a failed function's traceback is logged with it.",
                id="convex_scheduler.E010",
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
    heartbeat = _real(value.get("HEARTBEAT_INTERVAL", DEFAULTS["HEARTBEAT_INTERVAL"]))
    timeout = _real(value.get("WORKER_TIMEOUT", DEFAULTS["WORKER_TIMEOUT"]))
    if heartbeat is not None and timeout is not None and 0 < heartbeat and timeout < 3 * heartbeat:
        errors.append(
            Error(
                f"{SETTING_NAME}['WORKER_TIMEOUT'] ({timeout}s) must be at least three "
                f"heartbeats ({3 * heartbeat}s).",
                hint="Otherwise a live worker may be taken for dead and its actions failed.",
                id="convex_scheduler.E005",
            )
        )
    classes = value.get("API_PERMISSION_CLASSES", DEFAULTS["API_PERMISSION_CLASSES"])
    if classes is None:
        pass  # model permissions, the default
    elif not isinstance(classes, (list, tuple)):
        errors.append(
            Error(
                f"{SETTING_NAME}['API_PERMISSION_CLASSES'] must be a list of dotted paths.",
                hint="For example ['rest_framework.permissions.IsAdminUser'], or None (the "
                "default) for the admin's model permissions.",
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
    errors.extend(_check_pools(value.get("POOLS", DEFAULTS["POOLS"])))
    return errors


def _check_pools(pools: Any) -> list[CheckMessage]:
    problem = None
    if not isinstance(pools, dict):
        problem = f"must be a dict of pool names to options, not {type(pools).__name__}"
    else:
        for name, options in pools.items():
            limit = options.get("max_parallelism") if isinstance(options, dict) else None
            if not isinstance(name, str) or not name or len(name) > 100:
                problem = f"has the pool name {name!r}; names are 1 to 100 characters"
            elif not isinstance(options, dict) or set(options) - {"max_parallelism"}:
                problem = f"[{name!r}] must be a dict with the key 'max_parallelism' only"
            elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
                problem = (
                    f"[{name!r}]['max_parallelism'] must be a whole number, 0 or more, "
                    f"not {limit!r}"
                )
            if problem:
                break
    if problem is None:
        return []
    return [
        Error(
            f"{SETTING_NAME}['POOLS'] {problem}.",
            hint="For example {'emails': {'max_parallelism': 5}}; 0 pauses a pool.",
            id="convex_scheduler.E014",
        )
    ]


@register(Tags.compatibility)
def check_database(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    from .models import ScheduledFunction

    errors: list[CheckMessage] = []
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


@register()
def check_functions_reach_workers(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """Functions registered by code that workers do not import at start-up.

    ``runscheduler`` imports each installed app's ``functions`` module (and
    what those import), not the URLconf or views. A function registered
    only there can be scheduled by the web process, but no worker knows it.
    """
    from django.urls import get_resolver

    from .registry import registry

    # Import what the web process imports, so its registrations are seen.
    # Django's own URL checks report a broken URLconf.
    with contextlib.suppress(Exception):
        get_resolver().url_patterns  # noqa: B018
    late = [entry for entry in registry.all() if entry.name not in registry.startup_names]
    return [
        Warning(
            f"The function {entry.name!r} ({entry.func.__module__}) was registered after "
            "start-up, so workers will not know it.",
            hint=(
                "Define scheduled functions in an installed app's functions module (or a "
                "module it imports); runscheduler imports only those. Rows of an unknown "
                "function wait for a worker that knows it and fail after "
                "UNKNOWN_FUNCTION_TIMEOUT."
            ),
            obj=entry.name,
            id="convex_scheduler.W003",
        )
        for entry in late
    ]


def check_task_backend(alias: str, options: Any) -> list[CheckMessage]:
    """The ``OPTIONS`` of a ``TASKS`` backend that is ``convex_scheduler.tasks.SchedulerBackend``.

    Called by the backend's ``check()``, which Django's task checks run.
    """
    run_as = options.get("run_as", "action") if isinstance(options, dict) else options
    if run_as in ("action", "mutation"):
        return []
    return [
        Error(
            f"TASKS[{alias!r}]['OPTIONS'] must be a dict whose 'run_as' is 'action' or "
            f"'mutation', not {run_as!r}.",
            hint="'action' (the default) runs a task at most once, outside any transaction; "
            "'mutation' runs it exactly once, inside transaction.atomic.",
            id="convex_scheduler.E011",
        )
    ]


@register(Tags.compatibility)
def check_metrics_settings(
    app_configs: Sequence[AppConfig] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """``METRICS_PERMISSION`` and ``METRICS_ALLOWED_IPS`` (the metrics view)."""
    import ipaddress

    value = getattr(settings, SETTING_NAME, {})
    if not isinstance(value, dict):
        return []  # E001
    errors: list[CheckMessage] = []
    permission = value.get("METRICS_PERMISSION", DEFAULTS["METRICS_PERMISSION"])
    problem = None
    if isinstance(permission, str):
        try:
            permission = import_string(permission)
        except ImportError as exc:
            problem = f"cannot be imported: {exc}"
    if problem is None and not callable(permission):
        problem = f"is not callable: {permission!r}"
    if problem is not None:
        errors.append(
            Error(
                f"{SETTING_NAME}['METRICS_PERMISSION'] {problem}.",
                hint="Give a function taking the request and returning True to allow it, or "
                "its dotted path; the default is "
                "'convex_scheduler.metrics.staff_or_allowed_ip'.",
                id="convex_scheduler.E012",
            )
        )
    allowed = value.get("METRICS_ALLOWED_IPS", DEFAULTS["METRICS_ALLOWED_IPS"])
    entries = allowed if isinstance(allowed, (list, tuple)) else [allowed]
    bad = []
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except (TypeError, ValueError):
            bad.append(entry)
    if bad or not isinstance(allowed, (list, tuple)):
        errors.append(
            Error(
                f"{SETTING_NAME}['METRICS_ALLOWED_IPS'] must be a list of IP addresses or "
                f"networks, not {allowed!r}"
                + (f" ({', '.join(map(repr, bad))} not one)." if bad else "."),
                hint="For example ['127.0.0.1', '10.0.0.0/8']; the default [] admits no address.",
                id="convex_scheduler.E013",
            )
        )
    return errors
