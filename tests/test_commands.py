from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State

from . import functions
from .models import Counter

pytestmark = pytest.mark.django_db


def test_runscheduler_burst_in_process():
    scheduler.run_after(0, functions.schedule_children, {"name": "k", "count": 2})
    out = StringIO()
    call_command("runscheduler", "--burst", stdout=out)
    assert Counter.objects.get(name="k").value == 2
    assert "Burst done: 3 succeeded, 0 failed, 0 canceled." in out.getvalue()


def test_runscheduler_max_functions():
    for _ in range(3):
        scheduler.run_after(0, functions.increment, {"name": "k"})
    call_command("runscheduler", "--burst", "--max-functions", "2", stdout=StringIO())
    assert Counter.objects.get(name="k").value == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--concurrency", "0"], "must be between 1 and 1024"),
        (["--concurrency", "two"], "'two' is not a whole number"),
        (["--interval", "0"], "must be more than 0 seconds"),
        (["--interval", "soon"], "'soon' is not a number of seconds"),
        (["--max-functions", "-3"], "must be 1 or more"),
    ],
)
def test_runscheduler_usage_errors(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("runscheduler", *flags)


def test_clearscheduledfunctions(clock):
    old = scheduler.run_after(0, functions.increment, {"name": "k"})
    pending = scheduler.run_after(1000, functions.increment, {"name": "k"})
    ScheduledFunction.objects.filter(pk=old).update(
        state=State.SUCCESS, next_run_time=None, completed_time=clock.now()
    )
    clock.advance(days=2)
    out = StringIO()
    call_command("clearscheduledfunctions", stdout=out)
    assert "Deleted 0" in out.getvalue()
    call_command(
        "clearscheduledfunctions", "--older-than-days", "1", "--batch-size", "1", stdout=out
    )
    assert "Deleted 1" in out.getvalue()
    assert list(ScheduledFunction.objects.values_list("pk", flat=True)) == [pending]


def test_retention_deletes_in_batches(clock):
    ids = [scheduler.run_after(0, functions.increment, {"name": "k"}) for _ in range(5)]
    ScheduledFunction.objects.filter(pk__in=ids).update(
        state=State.FAILED, next_run_time=None, completed_time=clock.now() - timedelta(days=8)
    )
    deleted = ScheduledFunction.objects.delete_expired(
        clock.now(), timedelta(days=7), batch_size=2, max_batches=2
    )
    assert deleted == 4
    assert ScheduledFunction.objects.count() == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--older-than-days", "0"], "more than 0"), (["--batch-size", "0"], "1 or more")],
)
def test_clearscheduledfunctions_usage_errors(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("clearscheduledfunctions", *flags)


@pytest.mark.django_db(transaction=True)
def test_runscheduler_fails_when_a_worker_thread_crashes(monkeypatch):
    from convex_scheduler.worker.execution import Executor

    def bug(self, limit):
        raise RuntimeError("a bug in the claim")

    monkeypatch.setattr(Executor, "run_next", bug)
    with pytest.raises(CommandError, match="A worker thread crashed"):
        call_command("runscheduler", "--burst", "--concurrency", "2", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_transient_claim_errors_back_off_with_the_default_poll_interval(monkeypatch, settings):
    """The backoff after a failed claim must work when POLL_INTERVAL is None (the default)."""
    import sqlite3

    from convex_scheduler.worker.execution import Executor

    settings.CONVEX_SCHEDULER = {"UNAVAILABLE_BACKOFF_INITIAL": 0.001}
    calls = []
    original = Executor.lock

    def busy_once(self, ids, now):
        calls.append(now)
        if len(calls) == 1:
            error = sqlite3.OperationalError("database is locked")
            error.sqlite_errorcode = 5
            raise error
        return original(self, ids, now)

    monkeypatch.setattr(Executor, "lock", busy_once)
    scheduler.run_after(0, functions.increment, {"name": "k"})
    call_command("runscheduler", "--burst", "--concurrency", "2", stdout=StringIO())
    assert Counter.objects.get(name="k").value == 1


@pytest.mark.django_db(transaction=True)
def test_runscheduler_serves_worker_metrics_while_it_runs():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from convex_scheduler.metrics import WorkerMetrics

    scraped = {}
    original_connect = WorkerMetrics.connect

    def connect_and_remember(self):
        original_connect(self)
        scraped["metrics"] = self

    scheduler.run_after(0, functions.increment, {"name": "m"})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WorkerMetrics, "connect", connect_and_remember)
        call_command("runscheduler", "--burst", "--metrics-port", "0", stdout=StringIO())
    metrics = scraped["metrics"]
    families = {
        family.name: family
        for family in text_string_to_metric_families(
            generate_latest(metrics.registry).decode()
        )
    }
    finished = families["convex_scheduler_functions_finished"]
    assert any(
        sample.labels.get("outcome") == "success" and sample.value == 1
        for sample in finished.samples
    )
    claims = families["convex_scheduler_claim_batch_size"]
    assert any(s.name.endswith("_count") and s.value >= 1 for s in claims.samples)


@pytest.mark.parametrize("value", ["-1", "65536", "http"])
def test_runscheduler_metrics_port_is_a_port(value):
    with pytest.raises(CommandError, match="metrics-port"):
        call_command("runscheduler", "--burst", "--metrics-port", value, stdout=StringIO())
