"""Prometheus metrics: the database view and a worker's counters, parsed as Prometheus would."""

import sys
import urllib.request
from datetime import timedelta

import pytest
from django.test import override_settings
from django.urls import path
from django.utils import timezone
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from convex_scheduler import scheduler
from convex_scheduler.checks import check_metrics_settings
from convex_scheduler.metrics import WorkerMetrics, metrics, serve
from convex_scheduler.models import ScheduledFunction, SchedulerWorker, State
from convex_scheduler.signals import actions_orphaned, function_retried
from convex_scheduler.testing import run_due
from convex_scheduler.worker.stats import WorkerStats

from . import functions

# The app's URLconf is not edited here; this module is the URLconf of the view tests.
urlpatterns = [path("metrics/", metrics, name="metrics")]


def samples(text):
    """``{(sample name, frozenset(labels.items())): value}`` of an exposition."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def families(text):
    """Family name → type, without the ``*_created`` timestamps prometheus-client adds."""
    return {
        family.name: family.type
        for family in text_string_to_metric_families(text)
        if not family.name.endswith("_created")
    }


def labels(**kwargs):
    return frozenset(kwargs.items())


@pytest.fixture
def urls():
    with override_settings(ROOT_URLCONF=__name__):
        yield


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("ops", is_staff=True))
    return client


# The view ----------------------------------------------------------------------


@pytest.mark.django_db
def test_gauges_from_the_database(urls, staff_client):
    now = timezone.now()
    SchedulerWorker.objects.create(
        id="live", hostname="h", pid=1, started_time=now, last_heartbeat=now
    )
    SchedulerWorker.objects.create(
        id="dead", hostname="h", pid=2, started_time=now, last_heartbeat=now - timedelta(hours=1)
    )
    old = scheduler.run_at(now - timedelta(seconds=120), functions.increment, {"name": "a"})
    scheduler.run_at(now - timedelta(seconds=5), functions.increment, {"name": "b"})
    scheduler.run_after(3_600_000, functions.increment, {"name": "later"})
    emails = scheduler.run_after(3_600_000, functions.record, {})
    ScheduledFunction.objects.filter(pk=emails).update(pool="emails")
    canceled = scheduler.run_after(0, functions.increment, {"name": "c"})
    scheduler.cancel(canceled)
    running = scheduler.run_after(0, functions.record, {})
    ScheduledFunction.objects.filter(pk=running).update(
        state=State.IN_PROGRESS, next_run_time=None, pool="emails"
    )

    response = staff_client.get("/metrics/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    assert families(text) == {
        "convex_scheduler_functions": "gauge",
        "convex_scheduler_oldest_due_lag_seconds": "gauge",
        "convex_scheduler_live_workers": "gauge",
        "convex_scheduler_pool_functions": "gauge",
    }
    values = samples(text)
    by_state = {
        state: values[("convex_scheduler_functions", labels(state=state))] for state in State.values
    }
    assert by_state == {"pending": 4, "inProgress": 1, "success": 0, "failed": 0, "canceled": 1}
    lag = values[("convex_scheduler_oldest_due_lag_seconds", frozenset())]
    assert 119 <= lag < 180, lag
    assert values[("convex_scheduler_live_workers", frozenset())] == 1
    pools = {
        (dict(key[1])["pool"], dict(key[1])["state"]): value
        for key, value in values.items()
        if key[0] == "convex_scheduler_pool_functions"
    }
    assert pools == {
        ("default", "pending"): 3,
        ("default", "inProgress"): 0,
        ("emails", "pending"): 1,
        ("emails", "inProgress"): 1,
    }
    ScheduledFunction.objects.filter(pk=old).delete()
    lag = samples(staff_client.get("/metrics/").content.decode())[
        ("convex_scheduler_oldest_due_lag_seconds", frozenset())
    ]
    assert 4 <= lag < 60, lag


@pytest.mark.django_db
def test_an_empty_table_reads_zero(urls, staff_client):
    values = samples(staff_client.get("/metrics/").content.decode())
    assert values[("convex_scheduler_oldest_due_lag_seconds", frozenset())] == 0
    assert values[("convex_scheduler_live_workers", frozenset())] == 0
    assert values[("convex_scheduler_functions", labels(state="pending"))] == 0
    assert values[("convex_scheduler_pool_functions", labels(pool="default", state="pending"))] == 0


@pytest.mark.django_db
def test_anonymous_and_non_staff_users_are_refused(urls, client, django_user_model):
    assert client.get("/metrics/").status_code == 403
    client.force_login(django_user_model.objects.create_user("plain"))
    response = client.get("/metrics/")
    assert response.status_code == 403
    assert b"METRICS_PERMISSION" in response.content
    inactive = django_user_model.objects.create_user("gone", is_staff=True, is_active=False)
    client.force_login(inactive)
    assert client.get("/metrics/").status_code == 403


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("allowed", "remote", "status"),
    [
        (["127.0.0.1"], "127.0.0.1", 200),
        (["10.0.0.0/8"], "10.1.2.3", 200),
        (["10.0.0.0/8"], "192.168.1.1", 403),
        (["::1"], "::1", 200),
        ([], "127.0.0.1", 403),
        (["127.0.0.1"], "not an address", 403),
    ],
)
def test_allowed_addresses_need_no_login(urls, client, allowed, remote, status):
    with override_settings(CONVEX_SCHEDULER={"METRICS_ALLOWED_IPS": allowed}):
        assert client.get("/metrics/", REMOTE_ADDR=remote).status_code == status


def allow_header(request):
    return request.headers.get("X-Scrape-Token") == "secret"


@pytest.mark.django_db
@pytest.mark.parametrize("permission", [f"{__name__}.allow_header", allow_header])
def test_a_custom_permission(urls, client, permission):
    with override_settings(CONVEX_SCHEDULER={"METRICS_PERMISSION": permission}):
        assert client.get("/metrics/").status_code == 403
        assert client.get("/metrics/", HTTP_X_SCRAPE_TOKEN="secret").status_code == 200


@pytest.mark.django_db
def test_without_prometheus_client_the_view_says_how_to_install_it(urls, staff_client, monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    response = staff_client.get("/metrics/")
    assert response.status_code == 501
    assert b"django-convex-scheduler[metrics]" in response.content


# Settings checks ------------------------------------------------------------------


def check_ids(**setting):
    with override_settings(CONVEX_SCHEDULER=setting):
        return [message.id for message in check_metrics_settings()]


def test_the_default_metrics_settings_pass_the_checks():
    assert check_ids() == []
    assert (
        check_ids(METRICS_ALLOWED_IPS=("10.0.0.0/8", "::1"), METRICS_PERMISSION=allow_header) == []
    )


@pytest.mark.parametrize(
    "permission", ["tests.nowhere.allow", 42, "convex_scheduler.conf.SETTING_NAME"]
)
def test_e012_a_permission_that_is_not_an_importable_callable(permission):
    assert check_ids(METRICS_PERMISSION=permission) == ["convex_scheduler.E012"]


@pytest.mark.parametrize("allowed", ["127.0.0.1", ["localhost"], ["10.0.0.0/33"], [None]])
def test_e013_allowed_ips_that_are_not_a_list_of_addresses(allowed):
    assert check_ids(METRICS_ALLOWED_IPS=allowed) == ["convex_scheduler.E013"]


# A worker's metrics ---------------------------------------------------------------


@pytest.fixture
def worker_metrics():
    stats = WorkerStats()
    collected = WorkerMetrics(stats=stats)
    collected.connect()
    yield collected
    collected.disconnect()


@pytest.mark.django_db
def test_worker_counters_from_the_lifecycle_signals(worker_metrics):
    scheduler.run_after(0, functions.increment, {"name": "m"})
    scheduler.run_after(0, functions.increment, {"name": "m"})
    scheduler.run_after(0, functions.increment_then_fail, {"name": "f"})
    scheduler.run_after(0, functions.record, {"label": "x"})
    run_due()
    function_retried.send(
        sender=ScheduledFunction,
        scheduled_function_id=1,
        name="tests.functions:increment",
        attempt=1,
        error=None,
        delay=0.1,
        in_place=True,
    )
    actions_orphaned.send(sender=ScheduledFunction, count=3, worker_ids=["gone"])
    worker_metrics.observe_claim(3)
    worker_metrics.stats.crashes_detected = 2

    text = generate_latest(worker_metrics.registry).decode()
    assert families(text) == {
        "convex_scheduler_functions_started": "counter",
        "convex_scheduler_functions_finished": "counter",
        "convex_scheduler_function_duration_seconds": "histogram",
        "convex_scheduler_function_retries": "counter",
        "convex_scheduler_claim_batch_size": "histogram",
        "convex_scheduler_actions_orphaned": "counter",
        "convex_scheduler_crash_detections": "counter",
    }
    values = samples(text)
    increment = {"name": "tests.functions:increment", "kind": "mutation"}
    failing = {"name": "tests.functions:increment_then_fail", "kind": "mutation"}
    record = {"name": "tests.functions:record", "kind": "action"}
    assert values[("convex_scheduler_functions_started_total", labels(**increment))] == 2
    assert values[("convex_scheduler_functions_started_total", labels(**record))] == 1
    finished = "convex_scheduler_functions_finished_total"
    assert values[(finished, labels(**increment, outcome="success"))] == 2
    assert values[(finished, labels(**failing, outcome="failed"))] == 1
    assert values[(finished, labels(**record, outcome="success"))] == 1
    assert values[("convex_scheduler_function_duration_seconds_count", labels(**increment))] == 2
    assert values[("convex_scheduler_function_duration_seconds_sum", labels(**record))] > 0
    assert (
        values[
            (
                "convex_scheduler_function_retries_total",
                labels(name="tests.functions:increment", in_place="true"),
            )
        ]
        == 1
    )
    assert values[("convex_scheduler_claim_batch_size_count", frozenset())] == 1
    assert values[("convex_scheduler_claim_batch_size_bucket", labels(le="2.0"))] == 0
    assert values[("convex_scheduler_claim_batch_size_bucket", labels(le="5.0"))] == 1
    assert values[("convex_scheduler_actions_orphaned_total", frozenset())] == 3
    assert values[("convex_scheduler_crash_detections_total", frozenset())] == 2


@pytest.mark.django_db
def test_disconnected_metrics_count_nothing(worker_metrics):
    worker_metrics.disconnect()
    scheduler.run_after(0, functions.increment, {"name": "m"})
    run_due()
    values = samples(generate_latest(worker_metrics.registry).decode())
    assert not [key for key in values if key[0] == "convex_scheduler_functions_started_total"]


def test_two_workers_metrics_do_not_share_receivers():
    first, second = WorkerMetrics(), WorkerMetrics()
    first.connect()
    second.connect()
    try:
        actions_orphaned.send(sender=ScheduledFunction, count=1, worker_ids=["x"])
    finally:
        first.disconnect()
        second.disconnect()
    for collected in (first, second):
        values = samples(generate_latest(collected.registry).decode())
        assert values[("convex_scheduler_actions_orphaned_total", frozenset())] == 1


def test_serve_exposes_the_worker_metrics_over_http():
    collected = WorkerMetrics(stats=WorkerStats(crashes_detected=4))
    server = serve(0, collected, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        server.shutdown()
    assert samples(text)[("convex_scheduler_crash_detections_total", frozenset())] == 4


@pytest.mark.django_db
def test_the_grafana_dashboard_uses_only_metrics_that_exist(urls, staff_client):
    import json
    import re
    from pathlib import Path

    dashboard = json.loads(
        (Path(__file__).resolve().parent.parent / "docs" / "grafana-dashboard.json").read_text()
    )
    expressions = [
        target["expr"] for panel in dashboard["panels"] for target in panel["targets"]
    ] + [variable["definition"] for variable in dashboard["templating"]["list"][1:]]
    used = {name for expr in expressions for name in re.findall(r"convex_scheduler_\w+", expr)}

    collected = WorkerMetrics()
    collected.observe_claim(1)
    collected.started.labels(name="f", kind="mutation").inc()
    collected.finished.labels(name="f", kind="mutation", outcome="success").inc()
    collected.duration.labels(name="f", kind="mutation").observe(1)
    collected.retries.labels(name="f", in_place="true").inc()
    exposed = set()
    for text in (
        staff_client.get("/metrics/").content.decode(),
        generate_latest(collected.registry).decode(),
    ):
        exposed |= {key[0] for key in samples(text)}
    assert used and used <= exposed, used - exposed


@pytest.mark.django_db
def test_the_apps_urlconf_serves_the_metrics_view(client, settings):
    settings.ROOT_URLCONF = "tests.urls"
    assert client.get("/api/metrics/").status_code == 403
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_user("metrics-staff", is_staff=True)
    client.force_login(staff)
    response = client.get("/api/metrics/")
    assert response.status_code == 200
    assert "convex_scheduler_" in response.content.decode()
