"""Workers as real processes: SIGKILL in the middle of a function, signals, restarts."""

import signal
from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from convex_scheduler import scheduler
from convex_scheduler.models import ORPHANED_ACTION_ERROR, ScheduledFunction, SchedulerWorker, State

from . import functions
from .harness import finish, kill, peek, start_worker, wait_for
from .models import ActionRun, Counter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

def run_blocking_action(gate, tmp_path):
    """Schedule an action that waits at ``gate``; start a worker; return once it is inside."""
    entered, log = tmp_path / "entered", tmp_path / "log"
    sid = scheduler.run_after(
        0,
        functions.blocking_record,
        {"label": "a", "gate": str(gate), "entered": str(entered), "log": str(log)},
    )
    worker = start_worker()
    wait_for(entered.exists, "the action to start")
    return sid, log, worker


@pytest.fixture
def gate(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    return gate


def test_killed_mid_mutation_runs_again_and_applies_exactly_once(gate, tmp_path):
    entered = tmp_path / "entered"
    sid = scheduler.run_after(
        0, functions.blocking_increment, {"name": "m", "gate": str(gate), "entered": str(entered)}
    )
    worker = start_worker()
    wait_for(entered.exists, "the mutation to start")
    kill(worker)

    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == State.PENDING
    assert not Counter.objects.filter(name="m", value__gt=0).exists()

    gate.unlink()
    # The next worker counts the crash against the row, which waits out a
    # short backoff (other rows would run meanwhile) and then runs alone:
    # in that worker's burst, or in the next one if the burst ended first.
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    assert "counted as a crash" in output
    row.refresh_from_db()
    if row.state == State.PENDING:
        assert (row.crashes, row.attempts) == (1, 1)
        wait_for(lambda: ScheduledFunction.objects.due(timezone.now()).exists(), "the backoff")
        code, output = finish(start_worker("--burst"))
        assert code == 0, output
        row.refresh_from_db()
    assert (row.state, row.crashes, row.attempts) == (State.SUCCESS, 1, 2)
    assert Counter.objects.get(name="m").value == 1


def test_killed_mid_action_is_failed_by_the_next_worker_and_never_rerun(gate, tmp_path):
    sid, log, worker = run_blocking_action(gate, tmp_path)
    kill(worker)
    assert ScheduledFunction.objects.get(pk=sid).state == State.IN_PROGRESS
    # Its heartbeat says it is alive for a day yet: only the same-host check
    # that its process is gone can tell the next worker, which must not wait
    # out WORKER_TIMEOUT.
    SchedulerWorker.objects.update(last_heartbeat=timezone.now() + timedelta(days=1))
    assert SchedulerWorker.objects.alive().count() == 1

    gate.unlink()
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == State.FAILED
    assert row.error == ORPHANED_ACTION_ERROR
    assert log.read_text().split() == [str(sid)]
    assert ActionRun.objects.filter(scheduled_function_id=sid).count() == 1
    # The dead worker's registration is gone; the burst worker deregistered.
    assert not SchedulerWorker.objects.exists()


def test_sigterm_finishes_the_running_action_then_exits(gate, tmp_path):
    later = scheduler.run_after(60_000, functions.increment, {"name": "later"})
    sid, log, worker = run_blocking_action(gate, tmp_path)
    ScheduledFunction.objects.filter(pk=later).update(next_run_time=Now())
    worker.send_signal(signal.SIGTERM)
    gate.unlink()
    code, output = finish(worker)
    assert code == 0, output
    assert ScheduledFunction.objects.get(pk=sid).state == State.SUCCESS
    # Nothing new was claimed after the signal: with one thread, the
    # increment queued behind the action never started.
    assert ScheduledFunction.objects.get(pk=later).state == State.PENDING
    assert log.read_text().split() == [str(sid)]


def test_second_signal_exits_at_once_and_fails_the_abandoned_action(gate, tmp_path):
    sid, log, worker = run_blocking_action(gate, tmp_path)
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing running functions" in peek(worker), "the first signal", 30)
    worker.send_signal(signal.SIGINT)
    code, output = finish(worker, timeout=30)
    assert code == 0, output
    row = ScheduledFunction.objects.get(pk=sid)
    assert (row.state, row.error) == (State.FAILED, ORPHANED_ACTION_ERROR)
    assert log.read_text().split() == [str(sid)]


def test_burst_runs_children_scheduled_for_now_and_exits():
    sid = scheduler.run_after(0, functions.schedule_children, {"name": "kid", "count": 5})
    code, output = finish(start_worker("--burst", "--concurrency", "2"))
    assert code == 0, output
    assert ScheduledFunction.objects.filter(parent_id=sid, state=State.SUCCESS).count() == 5
    assert Counter.objects.get(name="kid").value == 5
    assert "Burst done: 6 succeeded, 0 failed, 0 canceled." in output


def test_worker_started_before_the_database_is_reachable_waits_and_stops_cleanly():
    worker = start_worker(
        DATABASE_URL="postgres://postgres@127.0.0.1:9/unreachable", CONVEX_TEST_DB_NAME=""
    )
    wait_for(lambda: "registering the worker failed, retrying" in peek(worker), "a retry", 60)
    assert worker.poll() is None
    worker.send_signal(signal.SIGTERM)
    code, output = finish(worker, timeout=60)
    assert code == 0, peek(worker) + output
