"""The state transitions of ScheduledFunctionQuerySet, each a conditional UPDATE, on the real
database: a transition applies only from the states it names, and says how many rows moved."""

from datetime import timedelta

import pytest
from django.db.models.functions import Now
from django.utils import timezone

from convex_scheduler import scheduler
from convex_scheduler.models import (
    CRASHED_ERROR,
    ORPHANED_ACTION_ERROR,
    ScheduledFunction,
    SchedulerWorker,
    State,
)

from . import functions

pytestmark = pytest.mark.django_db


def rows(*ids):
    return ScheduledFunction.objects.filter(pk__in=ids)


def get(pk):
    return ScheduledFunction.objects.get(pk=pk)


def mutation_row():
    return scheduler.run_after(0, functions.increment, {"name": "m"})


def action_row():
    return scheduler.run_after(0, functions.record, {"label": "a"})


def test_cancel_moves_pending_and_running_rows_only():
    pending, running, done = action_row(), action_row(), mutation_row()
    now = timezone.now()
    rows(running).start_action("w1", now)
    rows(done).succeed(now, from_state=State.PENDING)
    assert rows(pending, running, done).cancel(now) == 2
    assert [get(pk).state for pk in (pending, running, done)] == [
        State.CANCELED,
        State.CANCELED,
        State.SUCCESS,
    ]
    assert get(pending).next_run_time is None
    assert get(pending).completed_time == now


def test_start_action_claims_a_pending_row_once():
    pk, now = action_row(), timezone.now()
    assert rows(pk).start_action("w1", now) == 1
    assert rows(pk).start_action("w2", now) == 0  # a second claim finds nothing
    row = get(pk)
    assert (row.state, row.owner, row.attempts, row.next_run_time) == (
        State.IN_PROGRESS,
        "w1",
        1,
        None,
    )


def test_succeed_and_fail_apply_only_from_the_given_state():
    ok, bad, now = action_row(), action_row(), timezone.now()
    rows(ok, bad).start_action("w1", now)
    assert rows(ok).succeed(now, from_state=State.PENDING) == 0
    assert rows(ok).succeed(now, from_state=State.IN_PROGRESS, attempts=3) == 1
    assert rows(bad).fail("boom", now, from_state=State.IN_PROGRESS) == 1
    # A finished row is never overwritten, e.g. by a cancel's late loser.
    assert rows(ok).fail("late", now, from_state=State.IN_PROGRESS) == 0
    assert (get(ok).state, get(ok).attempts, get(ok).error) == (State.SUCCESS, 3, "")
    assert (get(bad).state, get(bad).error) == (State.FAILED, "boom")


def test_postpone_moves_the_due_time_not_the_scheduled_time():
    pk = mutation_row()
    before = get(pk)
    later = timezone.now() + timedelta(minutes=5)
    assert rows(pk).postpone(later, attempts=2) == 1
    row = get(pk)
    assert (row.next_run_time, row.attempts, row.scheduled_time) == (
        later,
        2,
        before.scheduled_time,
    )
    rows(pk).cancel(timezone.now())
    assert rows(pk).postpone(later, attempts=3) == 0


def test_record_crash_counts_pending_mutations_and_fails_them_at_the_limit():
    mutation, action, now = mutation_row(), action_row(), timezone.now()
    retry_at = now + timedelta(seconds=1)
    assert rows(mutation, action).record_crash(now, retry_at=retry_at, max_crashes=2) == (1, 0)
    row = get(mutation)
    assert (row.state, row.crashes, row.attempts, row.next_run_time) == (
        State.PENDING,
        1,
        1,
        retry_at,
    )
    assert get(action).crashes == 0  # actions are never retried
    assert rows(mutation).record_crash(now, retry_at=retry_at, max_crashes=2) == (1, 1)
    row = get(mutation)
    assert (row.state, row.error, row.next_run_time) == (
        State.FAILED,
        CRASHED_ERROR.format(crashes=2),
        None,
    )


def test_fail_orphaned_actions_touches_only_running_actions_of_dead_workers():
    dead, alive, pending = action_row(), action_row(), action_row()
    now = timezone.now()
    rows(dead).start_action("dead", now)
    rows(alive).start_action("alive", now)
    assert ScheduledFunction.objects.fail_orphaned_actions(["dead"], now) == 1
    assert (get(dead).state, get(dead).error) == (State.FAILED, ORPHANED_ACTION_ERROR)
    assert get(alive).state == State.IN_PROGRESS
    assert get(pending).state == State.PENDING


def test_delete_expired_deletes_finished_rows_past_retention_in_batches():
    now = timezone.now()
    old = [mutation_row() for _ in range(5)]
    recent, pending = mutation_row(), mutation_row()
    rows(*old).succeed(now - timedelta(days=10), from_state=State.PENDING)
    rows(recent).succeed(now, from_state=State.PENDING)
    objects = ScheduledFunction.objects
    assert objects.delete_expired(now, timedelta(days=7), batch_size=2, max_batches=2) == 4
    assert objects.delete_expired(now, timedelta(days=7), batch_size=2) == 1
    assert set(objects.values_list("pk", flat=True)) == {recent, pending}


def test_alive_is_judged_by_the_heartbeat_in_database_time():
    fresh = SchedulerWorker.objects.create(
        id="fresh", hostname="h", pid=1, started_time=Now(), last_heartbeat=Now()
    )
    stale = SchedulerWorker.objects.create(
        id="stale", hostname="h", pid=2, started_time=Now(), last_heartbeat=Now()
    )
    SchedulerWorker.objects.filter(pk=stale.pk).update(
        last_heartbeat=timezone.now() - timedelta(minutes=10)
    )
    assert set(SchedulerWorker.objects.alive(timeout=60).values_list("pk", flat=True)) == {fresh.pk}
    assert SchedulerWorker.objects.alive(timeout=3600).count() == 2
