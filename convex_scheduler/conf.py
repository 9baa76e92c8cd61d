"""The one settings object: ``scheduler_settings``.

Projects configure the app through a single dict in their settings::

    CONVEX_SCHEDULER = {"RETENTION": timedelta(days=3), "POLL_INTERVAL": 0.2}

Values are read lazily on attribute access and cached until Django's
``setting_changed`` signal reports that ``CONVEX_SCHEDULER`` changed, so
``override_settings`` works in tests. Dotted paths are imported on access.
Validation happens in :mod:`convex_scheduler.checks`, not here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

SETTING_NAME = "CONVEX_SCHEDULER"

DEFAULTS: dict[str, Any] = {
    # Limits (SPEC §3 "Limits").
    "MAX_SCHEDULED_PER_FUNCTION": 1000,
    "MAX_SCHEDULED_ARGS_BYTES": 16 * 1024 * 1024,
    "MAX_ARGS_BYTES": 4 * 1024 * 1024,
    # Retention of finished rows.
    "RETENTION": timedelta(days=7),
    "CLEANUP_BATCH_SIZE": 1000,
    # Worker.
    "CONCURRENCY": 1,
    "BATCH_SIZE": 50,
    # None: 1 s on PostgreSQL, where NOTIFY wakes idle workers at once, and
    # 0.05 s elsewhere, where polling (one indexed query) is the wake-up.
    "POLL_INTERVAL": None,
    "HEARTBEAT_INTERVAL": 5.0,
    "WORKER_TIMEOUT": 30.0,
    "SHUTDOWN_GRACE_PERIOD": 30.0,
    "STATUS_INTERVAL": 60.0,
    # Poison isolation: a mutation whose run killed its worker process this
    # many times is failed instead of run again.
    "MAX_CRASHES": 3,
    # A due row whose function no live worker has registered for this long
    # (seconds) is failed; until then it waits for a worker that knows it.
    "UNKNOWN_FUNCTION_TIMEOUT": 3600.0,
    # Log a failed function's traceback with its WARNING line.
    "LOG_TRACEBACKS": True,
    # The largest JSON a function's return value may be stored as (bytes).
    "MAX_RESULT_BYTES": 1024 * 1024,
    # Pools with a parallelism limit: {"emails": {"max_parallelism": 5}}. An
    # action of a pool runs only while fewer of the pool's actions run, across
    # all workers; 0 pauses the pool. Pools not listed are unbounded.
    "POOLS": {},
    # Backoff for transient errors (seconds): conflicts retry in place, other
    # transient errors move the due time.
    "CONFLICT_BACKOFF_INITIAL": 0.1,
    "CONFLICT_BACKOFF_MAX": 60.0,
    "UNAVAILABLE_BACKOFF_INITIAL": 0.5,
    "UNAVAILABLE_BACKOFF_MAX": 2 * 60 * 60.0,
    # Web face.
    # None: Django model permissions of each endpoint's model, as in the admin
    # (view to read, add to schedule, change to cancel or pause).
    "API_PERMISSION_CLASSES": None,
    # Metrics view: who may read it (a callable taking the request, or its
    # dotted path), and client addresses or networks it admits by default.
    "METRICS_PERMISSION": "convex_scheduler.metrics.staff_or_allowed_ip",
    "METRICS_ALLOWED_IPS": [],
}

IMPORT_STRINGS = {"API_PERMISSION_CLASSES"}


class SchedulerSettings:
    """Attribute access to ``settings.CONVEX_SCHEDULER`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        from django.conf import settings

        value = getattr(settings, SETTING_NAME, {})
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"Unknown convex_scheduler setting {name!r}")
        try:
            return self._cache[name]
        except KeyError:
            pass
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and value is not None:
            value = [import_string(item) if isinstance(item, str) else item for item in value]
        self._cache[name] = value
        return value

    def reload(self) -> None:
        self._cache.clear()


scheduler_settings = SchedulerSettings()


def poll_interval_for(vendor: str) -> float:
    """The poll interval in force for a database vendor."""
    configured = scheduler_settings.POLL_INTERVAL
    if configured is not None:
        return float(configured)
    return 1.0 if vendor == "postgresql" else 0.05


@receiver(setting_changed)
def _reload_scheduler_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING_NAME:
        scheduler_settings.reload()
