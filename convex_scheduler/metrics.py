"""Prometheus metrics: the database's view at scrape time, and each worker's own counters.

Needs ``prometheus-client`` (``pip install "django-convex-scheduler[metrics]"``);
this module imports without it, and says so when used.

* :func:`metrics` is a view serving gauges computed from the database when it
  is scraped: rows by state, the lag of the oldest due row, live workers
  (``SchedulerWorker.objects.alive()``), pending and running rows per pool.
  Any web process can serve it; it keeps no state. Who may read it is the
  ``METRICS_PERMISSION`` setting (by default staff users, or clients whose
  address is in ``METRICS_ALLOWED_IPS``).
* :class:`WorkerMetrics` counts what one worker process does, fed by the
  lifecycle signals of :mod:`convex_scheduler.signals`, and :func:`serve`
  exposes it over HTTP (``runscheduler --metrics-port``).
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.db import router
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.utils.module_loading import import_string

from .conf import scheduler_settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram
    from prometheus_client.metrics_core import Metric

    from .worker.stats import WorkerStats

__all__ = [
    "MetricsServer",
    "WorkerMetrics",
    "allowed_ip",
    "metrics",
    "serve",
    "staff_or_allowed_ip",
]

MISSING = (
    "prometheus-client is not installed: "
    'pip install "django-convex-scheduler[metrics]" to serve metrics.'
)

#: Buckets of run durations (seconds): from a quick mutation to a long action.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
#: Buckets of claim sizes (rows per claim, up to ``BATCH_SIZE``).
CLAIM_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError(MISSING) from exc
    return prometheus_client


# Who may read the view ---------------------------------------------------------


def allowed_ip(request: HttpRequest) -> bool:
    """Whether the client's ``REMOTE_ADDR`` is in ``METRICS_ALLOWED_IPS``.

    Entries are addresses or networks (``"10.0.0.0/8"``). Proxy headers such
    as ``X-Forwarded-For`` are not read: behind a proxy, ``REMOTE_ADDR`` is
    the proxy's address unless your middleware sets it.
    """
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return any(
        address in ipaddress.ip_network(entry, strict=False)
        for entry in scheduler_settings.METRICS_ALLOWED_IPS
    )


def staff_or_allowed_ip(request: HttpRequest) -> bool:
    """The default ``METRICS_PERMISSION``: an active staff user, or an allowed address."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return True
    return allowed_ip(request)


def _permission() -> Callable[[HttpRequest], bool]:
    value = scheduler_settings.METRICS_PERMISSION
    check: Callable[[HttpRequest], bool] = import_string(value) if isinstance(value, str) else value
    return check


# The view -------------------------------------------------------------------


class DatabaseCollector:
    """Gauges read from the scheduler's database each time the registry is collected."""

    def __init__(self, using: str | None = None) -> None:
        self.using = using

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from .management.commands.schedulerhealth import measure
        from .models import ScheduledFunction, State

        using = self.using or router.db_for_read(ScheduledFunction)
        rows = ScheduledFunction.objects.using(using)
        by_state = dict(
            rows.order_by()
            .values_list("state")
            .annotate(count=Count("pk"))
            .values_list("state", "count")
        )
        functions = GaugeMetricFamily(
            "convex_scheduler_functions",
            "Scheduled functions in the table, by state.",
            labels=["state"],
        )
        for state in State.values:
            functions.add_metric([state], by_state.get(state, 0))
        yield functions

        health = measure(using)
        yield GaugeMetricFamily(
            "convex_scheduler_oldest_due_lag_seconds",
            "How long the oldest due pending function has waited past its due time "
            "(0 when none is due), in the database's clock.",
            value=health.lag,
        )
        yield GaugeMetricFamily(
            "convex_scheduler_live_workers",
            "Workers whose heartbeat is within WORKER_TIMEOUT.",
            value=health.live_workers,
        )
        per_pool = GaugeMetricFamily(
            "convex_scheduler_pool_functions",
            "Pending and running (inProgress) functions per pool ('default' is the default pool).",
            labels=["pool", "state"],
        )
        counts = (
            rows.filter(state__in=(State.PENDING, State.IN_PROGRESS))
            .order_by()
            .values_list("pool", "state")
            .annotate(count=Count("pk"))
            .values_list("pool", "state", "count")
        )
        seen = {(pool or "default", state): count for pool, state, count in counts}
        for pool in sorted({"default"} | {pool for pool, _ in seen}):
            for state in (State.PENDING, State.IN_PROGRESS):
                per_pool.add_metric([pool, state], seen.get((pool, state), 0))
        yield per_pool


def metrics(request: HttpRequest) -> HttpResponse:
    """Serve the database-wide gauges in Prometheus' text format.

    403 unless ``METRICS_PERMISSION`` admits the request; 501 when
    prometheus-client is not installed.
    """
    if not _permission()(request):
        return HttpResponse(
            "Forbidden: see the METRICS_PERMISSION setting.\n",
            status=403,
            content_type="text/plain; charset=utf-8",
        )
    try:
        prometheus = _prometheus()
    except ImportError:
        return HttpResponse(MISSING + "\n", status=501, content_type="text/plain; charset=utf-8")
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return HttpResponse(
        prometheus.generate_latest(registry), content_type=prometheus.CONTENT_TYPE_LATEST
    )


# A worker's own metrics ---------------------------------------------------------


class WorkerMetrics:
    """Counters and histograms of one worker process, fed by the lifecycle signals.

    Call :meth:`connect` when the worker starts and :meth:`disconnect` when it
    stops; while connected, every ``function_started``, ``function_finished``,
    ``function_retried`` and ``actions_orphaned`` sent in this process is
    counted. Give the worker's :class:`~convex_scheduler.worker.stats.WorkerStats`
    as ``stats`` for the crash detections it counts, and call
    :meth:`observe_claim` with the size of each claim.
    """

    def __init__(
        self, *, stats: WorkerStats | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        prometheus = _prometheus()
        self.registry: CollectorRegistry = registry or prometheus.CollectorRegistry()
        self.stats = stats
        self._uid = f"convex_scheduler.metrics.{id(self)}"
        self.started: Counter = prometheus.Counter(
            "convex_scheduler_functions_started_total",
            "Functions this worker started, by function name and kind.",
            ["name", "kind"],
            registry=self.registry,
        )
        self.finished: Counter = prometheus.Counter(
            "convex_scheduler_functions_finished_total",
            "Functions this worker finished, by name, kind and outcome (the final state).",
            ["name", "kind", "outcome"],
            registry=self.registry,
        )
        self.duration: Histogram = prometheus.Histogram(
            "convex_scheduler_function_duration_seconds",
            "How long functions ran on this worker, by name and kind.",
            ["name", "kind"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.retries: Counter = prometheus.Counter(
            "convex_scheduler_function_retries_total",
            "Mutation retries after a transient database error, by name and whether the "
            "retry was in place (a conflict) or moved the due time.",
            ["name", "in_place"],
            registry=self.registry,
        )
        self.claims: Histogram = prometheus.Histogram(
            "convex_scheduler_claim_batch_size",
            "Rows claimed at once by this worker.",
            buckets=CLAIM_BUCKETS,
            registry=self.registry,
        )
        self.orphaned: Counter = prometheus.Counter(
            "convex_scheduler_actions_orphaned_total",
            "Actions this worker found running on a worker that is gone, and failed.",
            registry=self.registry,
        )
        self.registry.register(_StatsCollector(self))

    def connect(self) -> None:
        """Start counting the lifecycle signals sent in this process."""
        from . import signals

        for signal, receiver in self._receivers(signals):
            signal.connect(receiver, weak=False, dispatch_uid=f"{self._uid}.{receiver.__name__}")

    def disconnect(self) -> None:
        from . import signals

        for signal, receiver in self._receivers(signals):
            signal.disconnect(dispatch_uid=f"{self._uid}.{receiver.__name__}")

    def _receivers(self, signals: Any) -> list[tuple[Any, Callable[..., None]]]:
        return [
            (signals.function_started, self._on_started),
            (signals.function_finished, self._on_finished),
            (signals.function_retried, self._on_retried),
            (signals.actions_orphaned, self._on_orphaned),
        ]

    def observe_claim(self, size: int) -> None:
        """Record one claim of ``size`` rows (called by the worker)."""
        self.claims.observe(size)

    def _on_started(self, *, name: str, kind: str, **kwargs: Any) -> None:
        self.started.labels(name=name, kind=kind).inc()

    def _on_finished(
        self, *, name: str, kind: str, state: str, duration: float, **kwargs: Any
    ) -> None:
        self.finished.labels(name=name, kind=kind, outcome=state).inc()
        self.duration.labels(name=name, kind=kind).observe(duration)

    def _on_retried(self, *, name: str, in_place: bool, **kwargs: Any) -> None:
        self.retries.labels(name=name, in_place="true" if in_place else "false").inc()

    def _on_orphaned(self, *, count: int, **kwargs: Any) -> None:
        self.orphaned.inc(count)


class _StatsCollector:
    """Counters the worker keeps in its ``WorkerStats``, read at scrape time."""

    def __init__(self, owner: WorkerMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        stats = self.owner.stats
        yield CounterMetricFamily(
            "convex_scheduler_crash_detections",
            "Dead workers this worker found with mutations running, each counted as a crash "
            "of those mutations (poison isolation).",
            value=0 if stats is None else stats.crashes_detected,
        )


class MetricsServer:
    """The HTTP server :func:`serve` started; :meth:`shutdown` stops it."""

    def __init__(self, server: Any, thread: threading.Thread | None) -> None:
        self.server = server
        self.thread = thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def shutdown(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)


def serve(port: int, metrics: WorkerMetrics, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``metrics`` on ``http://addr:port/`` from a daemon thread (prometheus-client's server).

    Port 0 picks a free port (see :attr:`MetricsServer.port`).
    """
    prometheus = _prometheus()
    started = prometheus.start_http_server(port, addr=addr, registry=metrics.registry)
    if isinstance(started, tuple):
        return MetricsServer(*started)
    raise RuntimeError("prometheus-client 0.20 or later is needed to stop the metrics server.")
