"""Actions in flight: many at once on the worker's event loop and threads, few connections."""

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F

from convex_scheduler import scheduler
from convex_scheduler.models import ORPHANED_ACTION_ERROR, ScheduledFunction, State
from convex_scheduler.worker import Worker

from . import functions
from .harness import finish, kill, start_worker, wait_for
from .models import Counter

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_sensitive_connections"),
]


def test_async_actions_run_at_once_on_the_workers_event_loop():
    # Each waits until all 40 have started: they succeed only if they run at once.
    key = uuid.uuid4().hex
    ids = [
        scheduler.run_after(0, functions.async_rendezvous, {"key": key, "count": 40})
        for _ in range(40)
    ]
    stats = Worker(burst=True, concurrency=40).run()
    rows = ScheduledFunction.objects.filter(pk__in=ids)
    assert sorted(rows.values_list("state", flat=True)) == [State.SUCCESS] * 40, list(
        rows.values_list("error", flat=True)
    )
    assert stats.succeeded == 40
    assert set(rows.values_list("attempts", flat=True)) == {1}


def test_sync_actions_run_at_once_on_threads_of_their_own():
    key = uuid.uuid4().hex
    ids = [
        scheduler.run_after(0, functions.sync_rendezvous, {"key": key, "count": 8})
        for _ in range(8)
    ]
    Worker(burst=True, concurrency=8).run()
    rows = ScheduledFunction.objects.filter(pk__in=ids)
    assert sorted(rows.values_list("state", flat=True)) == [State.SUCCESS] * 8, list(
        rows.values_list("error", flat=True)
    )


def test_no_more_actions_in_flight_than_the_concurrency(monkeypatch):
    running, most = [0], [0]

    from convex_scheduler.signals import function_finished, function_started

    def started(**kwargs):
        running[0] += 1
        most[0] = max(most[0], running[0])

    def finished(**kwargs):
        running[0] -= 1

    function_started.connect(started, dispatch_uid="inflight-test")
    function_finished.connect(finished, dispatch_uid="inflight-test")
    try:
        key = uuid.uuid4().hex
        # A rendezvous of 3 among 9 actions at concurrency 3: each group of 3
        # meets; a fourth in flight would be a concurrency above the limit.
        for _ in range(9):
            scheduler.run_after(0, functions.async_rendezvous, {"key": key, "count": 3})
        Worker(burst=True, concurrency=3).run()
    finally:
        function_started.disconnect(dispatch_uid="inflight-test")
        function_finished.disconnect(dispatch_uid="inflight-test")
    assert ScheduledFunction.objects.filter(state=State.SUCCESS).count() == 9
    assert most[0] <= 3


def test_mutations_and_actions_together_all_run_once():
    for index in range(30):
        scheduler.run_after(0, functions.increment, {"name": "m"})
        scheduler.run_after(0, functions.record, {"label": str(index)})
        scheduler.run_after(0, functions.bump_twice_async, {"name": "a"})
    stats = Worker(burst=True, concurrency=5).run()
    assert Counter.objects.get(name="m").value == 30
    # Each async action bumps once itself and schedules one more bump, run in the burst.
    assert Counter.objects.get(name="a").value == 60
    assert not ScheduledFunction.objects.exclude(state=State.SUCCESS).exists()
    assert stats.succeeded == 120
    assert set(ScheduledFunction.objects.values_list("attempts", flat=True)) == {1}


def worker_connections() -> int:
    """Connections to the test database other than this test's own."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        else:
            cursor.execute(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                "WHERE DB = DATABASE() AND ID <> CONNECTION_ID()"
            )
        return cursor.fetchone()[0]


@pytest.mark.subprocess
def test_killed_with_200_async_actions_in_flight_fails_each_once(tmp_path):
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    gate.touch()
    entered.mkdir()
    ids = [
        scheduler.run_after(
            0, functions.async_wait_at_gate, {"gate": str(gate), "entered_dir": str(entered)}
        )
        for _ in range(200)
    ]
    worker = start_worker("--concurrency", "200")
    wait_for(lambda: len(list(entered.iterdir())) == 200, "all 200 actions to start")
    if connection.vendor != "sqlite":
        # Runner threads, the outcome writer, the heartbeat, the listener:
        # not one connection per action.
        assert worker_connections() <= 10
    kill(worker)
    assert ScheduledFunction.objects.filter(state=State.IN_PROGRESS).count() == 200
    gate.unlink()
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    rows = ScheduledFunction.objects.filter(pk__in=ids)
    assert set(rows.values_list("state", "error", "attempts")) == {
        (State.FAILED, ORPHANED_ACTION_ERROR, 1)
    }
    assert sorted(int(path.name) for path in entered.iterdir()) == sorted(ids)


@pytest.mark.subprocess
def test_burst_with_many_actions_in_flight_drains_and_exits():
    key = uuid.uuid4().hex
    for _ in range(150):
        scheduler.run_after(0, functions.async_rendezvous, {"key": key, "count": 1})
    for _ in range(20):
        scheduler.run_after(0, functions.increment, {"name": "m"})
    code, output = finish(start_worker("--burst", "--concurrency", "50"))
    assert code == 0, output
    assert "Burst done: 170 succeeded, 0 failed, 0 canceled." in output
    assert Counter.objects.get(name="m").value == 20


def test_an_outcome_the_database_refuses_fails_that_action_alone(monkeypatch):
    from django.db import DataError

    from convex_scheduler.models import ScheduledFunctionQuerySet

    ids = {
        label: scheduler.run_after(0, functions.record, {"label": label})
        for label in ("a", "refused", "b", "c")
    }
    succeed = ScheduledFunctionQuerySet.succeed

    def refusing(self, now, **kwargs):
        if self.filter(pk=ids["refused"]).exists():
            raise DataError("value too long for this column")
        return succeed(self, now, **kwargs)

    monkeypatch.setattr(ScheduledFunctionQuerySet, "succeed", refusing)
    worker = Worker(burst=True, concurrency=4)
    stats = worker.run()
    assert not worker.crashed
    rows = {label: ScheduledFunction.objects.get(pk=pk) for label, pk in ids.items()}
    refused = rows.pop("refused")
    assert refused.state == State.FAILED
    assert refused.error.startswith("Its outcome could not be recorded: DataError: value too long")
    assert {row.state for row in rows.values()} == {State.SUCCESS}
    assert (stats.succeeded, stats.failed) == (3, 1)


# SQLite runs one write transaction at a time, so a claim waits for the
# batch. On MariaDB, in a full run of the suite (not alone), the action was
# twice not claimed until the batch ended, for a reason not yet found
# (docs/workers.rst says so); the slot accounting is the same code there.
@pytest.mark.skipif(
    "connection.vendor != 'postgresql'",
    reason="PostgreSQL only: elsewhere a claim can wait for the running batch's locks",
)
def test_a_mutation_batch_holds_one_slot_and_leaves_the_others_to_actions():
    # At concurrency 2, the mutation (claimed first) and the action meet only
    # if the batch leaves the second slot free while it runs.
    key = uuid.uuid4().hex
    mutation = scheduler.run_after(0, functions.mutation_rendezvous, {"key": key, "count": 2})
    ScheduledFunction.objects.filter(pk=mutation).update(
        next_run_time=F("next_run_time") - timedelta(seconds=1)
    )
    action = scheduler.run_after(0, functions.sync_rendezvous, {"key": key, "count": 2})
    Worker(burst=True, concurrency=2).run()
    rows = ScheduledFunction.objects.filter(pk__in=(mutation, action))
    assert set(rows.values_list("state", flat=True)) == {State.SUCCESS}, list(
        rows.values_list("error", flat=True)
    )
