"""The worker's guarantees, run in-process through convex_scheduler.testing."""

from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings

from convex_scheduler import SchedulingError, scheduler
from convex_scheduler.models import ORPHANED_ACTION_ERROR, ScheduledFunction, State
from convex_scheduler.signals import function_finished, function_retried
from convex_scheduler.testing import run_due

from . import functions
from .models import ActionRun, Counter

pytestmark = pytest.mark.django_db


def counter(name):
    return Counter.objects.filter(name=name).values_list("value", flat=True).first() or 0


def row(sid):
    return ScheduledFunction.objects.get(pk=sid)


def test_mutation_runs_once_and_records_success(clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a", "by": 5})
    stats = run_due()
    assert stats.succeeded == 1
    assert counter("a") == 5
    done = row(sid)
    assert (done.state, done.attempts, done.error) == (State.SUCCESS, 1, "")
    assert done.completed_time == clock.now()
    assert done.next_run_time is None
    assert run_due().finished == 0
    assert counter("a") == 5


def test_nothing_runs_before_it_is_due(clock):
    sid = scheduler.run_after(60_000, functions.increment, {"name": "a"})
    run_due()
    assert row(sid).state == State.PENDING
    clock.advance(seconds=59.999)
    run_due()
    assert row(sid).state == State.PENDING
    clock.advance(milliseconds=1)
    run_due()
    assert row(sid).state == State.SUCCESS
    assert counter("a") == 1


def test_due_functions_start_in_due_time_order_then_creation_order(clock):
    order = []

    def remember(sender, scheduled_function_id, **kwargs):
        order.append(scheduled_function_id)

    later = scheduler.run_after(20, functions.increment, {"name": "a"})
    first = scheduler.run_after(10, functions.increment, {"name": "a"})
    tie = scheduler.run_after(20, functions.increment, {"name": "a"})
    clock.advance(seconds=1)
    function_finished.connect(remember)
    try:
        run_due()
    finally:
        function_finished.disconnect(remember)
    assert order == [first, later, tie]


def test_mutation_developer_error_rolls_back_its_writes_and_schedules():
    failing = scheduler.run_after(0, functions.increment_then_fail, {"name": "a"})
    scheduling = scheduler.run_after(0, functions.schedule_then_fail, {"name": "b"})
    stats = run_due()
    assert stats.failed == 2
    assert counter("a") == 0
    assert row(failing).state == State.FAILED
    assert row(failing).error.startswith("ValueError: boom after incrementing a")
    assert "Traceback" in row(failing).error
    assert row(scheduling).error.startswith("RuntimeError: failed after scheduling")
    # The child it scheduled was rolled back with it.
    assert not ScheduledFunction.objects.filter(parent_id=scheduling).exists()
    assert row(failing).attempts == 1


def test_database_integrity_error_is_a_developer_error_not_retried():
    sid = scheduler.run_after(0, functions.developer_error_from_database, {"name": "a"})
    retries = []

    def on_retry(**kwargs):
        retries.append(kwargs)

    function_retried.connect(on_retry)
    try:
        run_due()
    finally:
        function_retried.disconnect(on_retry)
    assert row(sid).state == State.FAILED
    assert row(sid).error.startswith("IntegrityError")
    assert (row(sid).attempts, retries, counter("a")) == (1, [], 0)


def test_real_transient_conflicts_are_retried_until_success():
    sid = scheduler.run_after(0, functions.conflict_until, {"name": "a", "failures": 3})
    stats = run_due()
    assert stats.retried == 3
    done = row(sid)
    assert (done.state, done.attempts) == (State.SUCCESS, 4)
    # Only the successful attempt's write survived.
    assert counter("a") == 1


def test_children_of_a_mutation_have_it_as_parent_and_run_in_the_same_burst():
    sid = scheduler.run_after(0, functions.schedule_children, {"name": "kid", "count": 3})
    stats = run_due()
    assert stats.succeeded == 4
    children = ScheduledFunction.objects.filter(parent_id=sid)
    assert children.count() == 3
    assert set(children.values_list("state", flat=True)) == {State.SUCCESS}
    assert counter("kid") == 3


def test_delayed_children_wait_for_their_time(clock):
    sid = scheduler.run_after(
        0, functions.schedule_children, {"name": "kid", "count": 2, "delay_ms": 1000}
    )
    run_due()
    assert counter("kid") == 0
    clock.advance(seconds=1)
    run_due()
    assert counter("kid") == 2
    assert ScheduledFunction.objects.filter(parent_id=sid, state=State.SUCCESS).count() == 2


def test_action_runs_once_and_records_success(clock):
    sid = scheduler.run_after(0, functions.record, {"label": "x"})
    run_due()
    done = row(sid)
    assert (done.state, done.attempts, done.completed_time) == (State.SUCCESS, 1, clock.now())
    assert done.started_time == clock.now()
    assert list(ActionRun.objects.values_list("scheduled_function_id", flat=True)) == [sid]
    assert done.owner  # the worker that ran it


def test_failing_action_is_failed_not_retried():
    sid = scheduler.run_after(0, functions.failing_action)
    assert run_due().failed == 1
    assert row(sid).error.startswith("RuntimeError: the action failed")
    assert run_due().finished == 0
    assert row(sid).attempts == 1


def test_action_run_mutation_runs_in_its_own_transaction_with_the_action_as_parent():
    sid = scheduler.run_after(0, functions.action_runs_mutation, {"name": "m"})
    run_due()
    assert row(sid).state == State.SUCCESS
    assert counter("m") == 2 + 2
    assert ScheduledFunction.objects.filter(parent_id=sid).count() == 2


def test_run_mutation_rejects_actions_and_bad_args():
    from convex_scheduler.context import ActionContext

    ctx = ActionContext(1, "x")
    with pytest.raises(SchedulingError, match="run_mutation runs mutations only"):
        ctx.run_mutation(functions.record, {})
    with pytest.raises(SchedulingError, match="unexpected keyword argument 'nope'"):
        ctx.run_mutation(functions.increment, {"name": "a", "nope": 1})


def test_cancel_pending_never_runs(clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    scheduler.cancel(sid)
    run_due()
    assert row(sid).state == State.CANCELED
    assert counter("a") == 0


def test_running_action_canceled_keeps_running_and_its_later_children_are_born_canceled(clock):
    sid = scheduler.run_after(0, functions.action_canceled_midway, {"name": "c"})
    run_due()
    action = row(sid)
    assert action.state == State.CANCELED
    # It kept running to the end.
    assert ActionRun.objects.filter(scheduled_function_id=sid).count() == 1
    children = {r.args["name"]: r for r in ScheduledFunction.objects.filter(parent_id=sid)}
    before, after = children["c-before"], children["c-after"]
    assert before.state == State.SUCCESS
    assert counter("c-before") == 1
    assert after.state == State.CANCELED
    assert after.scheduled_time == after.completed_time == clock.now()
    assert counter("c-after") == 0
    # A mutation run on the action's behalf schedules canceled children too.
    via = ScheduledFunction.objects.get(parent_id=sid, args__name="c-via-mutation")
    assert via.state == State.CANCELED


def test_a_mutation_cannot_cancel_itself():
    sid = scheduler.run_after(0, functions.cancel_self)
    run_due()
    assert row(sid).state == State.FAILED
    assert row(sid).error.startswith("SchedulingError: A mutation cannot cancel itself.")


def test_a_mutation_can_cancel_another_function_in_its_transaction(clock):
    target = scheduler.run_after(10_000, functions.increment, {"name": "a"})
    sid = scheduler.run_after(0, functions.cancel_other, {"target": target})
    run_due()
    assert row(sid).state == State.SUCCESS
    assert row(target).state == State.CANCELED


def test_the_1001st_function_fails_the_mutation():
    ok = scheduler.run_after(
        0, functions.schedule_children, {"name": "k", "count": 1000, "delay_ms": 60_000}
    )
    too_many = scheduler.run_after(
        0, functions.schedule_children, {"name": "k", "count": 1001, "delay_ms": 60_000}
    )
    run_due()
    assert row(ok).state == State.SUCCESS
    assert row(too_many).state == State.FAILED
    assert "Too many functions scheduled by one function: at most 1000" in row(too_many).error
    assert ScheduledFunction.objects.filter(parent_id=too_many).count() == 0
    assert ScheduledFunction.objects.filter(parent_id=ok).count() == 1000


@override_settings(CONVEX_SCHEDULER={"MAX_SCHEDULED_ARGS_BYTES": 10_000})
def test_too_much_argument_data_fails_the_mutation():
    ok = scheduler.run_after(0, functions.schedule_big, {"count": 4, "size": 2000})
    too_much = scheduler.run_after(0, functions.schedule_big, {"count": 5, "size": 2000})
    run_due(max_functions=2)
    assert row(ok).state == State.SUCCESS
    assert row(too_much).state == State.FAILED
    assert "Too much argument data scheduled by one function" in row(too_much).error


def test_default_limit_of_16_mib_of_arguments_per_mutation():
    size = 4 * 1024 * 1024 - 100
    sid = scheduler.run_after(0, functions.schedule_big, {"count": 5, "size": size})
    run_due(max_functions=1)
    assert row(sid).state == State.FAILED
    assert "at most 16777216" in row(sid).error


def test_unregistered_name_waits_for_a_worker_that_knows_it_then_fails(clock, caplog):
    """A rolling deploy: a row of a function this worker does not know is left
    alone (never imported by name), warned about once, and failed only after
    UNKNOWN_FUNCTION_TIMEOUT with no live worker knowing it."""
    sid = ScheduledFunction.objects.create(
        name="os:system",
        kind="mutation",
        args={"command": "true"},
        scheduled_time=clock.now(),
        next_run_time=clock.now(),
    ).pk
    known = scheduler.run_after(0, functions.increment, {"name": "k"})
    run_due()  # one worker: one warning, however often it looks
    assert row(sid).state == State.PENDING
    assert row(known).state == State.SUCCESS
    warnings = [r.getMessage() for r in caplog.records if "'os:system'" in r.getMessage()]
    assert len(warnings) == 1
    assert "has not registered it" in warnings[0]

    clock.advance(seconds=3599)
    run_due()
    assert row(sid).state == State.PENDING
    clock.advance(seconds=2)
    run_due()
    failed = row(sid)
    assert failed.state == State.FAILED
    assert "No live worker has registered the mutation 'os:system'" in failed.error
    assert "UNKNOWN_FUNCTION_TIMEOUT" in failed.error


def test_a_row_whose_function_another_live_worker_knows_is_never_failed(clock):
    from django.db.models.functions import Now

    from convex_scheduler.models import SchedulerWorker

    SchedulerWorker.objects.create(
        id="newer-deploy",
        hostname="another-machine",
        pid=1,
        started_time=Now(),
        last_heartbeat=Now(),
        functions=["mutation:chat.functions:new_feature"],
    )
    sid = ScheduledFunction.objects.create(
        name="chat.functions:new_feature",
        kind="mutation",
        scheduled_time=clock.now(),
        next_run_time=clock.now(),
    ).pk
    clock.advance(hours=2)
    run_due()
    assert row(sid).state == State.PENDING


def test_orphaned_action_of_a_vanished_worker_is_failed_with_the_exact_message(clock):
    sid = scheduler.run_after(0, functions.record)
    ScheduledFunction.objects.filter(pk=sid).start_action("no-such-worker", clock.now())
    run_due()
    failed = row(sid)
    assert failed.state == State.FAILED
    assert failed.error == ORPHANED_ACTION_ERROR
    assert not ActionRun.objects.exists()


def test_retention_deletes_finished_rows_after_seven_days_never_pending(clock):
    done = scheduler.run_after(0, functions.increment, {"name": "a"})
    waiting = scheduler.run_at(clock.now() + timedelta(days=30), functions.increment, {"name": "a"})
    run_due()
    clock.advance(days=7)
    run_due()
    assert ScheduledFunction.objects.filter(pk=done).exists()
    clock.advance(seconds=1)
    run_due()
    assert not ScheduledFunction.objects.filter(pk=done).exists()
    assert row(waiting).state == State.PENDING


@pytest.mark.django_db(transaction=True)
def test_outcome_and_writes_commit_together_outside_a_test_transaction():
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    run_due()
    assert not connection.in_atomic_block
    with transaction.atomic():
        assert row(sid).state == State.SUCCESS
        assert counter("a") == 1


def test_a_failing_signal_receiver_does_not_stop_the_worker(caplog):
    def broken(**kwargs):
        raise RuntimeError("receiver bug")

    function_finished.connect(broken)
    try:
        sid = scheduler.run_after(0, functions.increment, {"name": "a"})
        run_due()
    finally:
        function_finished.disconnect(broken)
    assert row(sid).state == State.SUCCESS
    assert any("signal receiver" in record.getMessage() for record in caplog.records)


def test_function_started_for_a_mutation_is_sent_inside_its_transaction():
    seen = []

    def on_started(sender, scheduled_function_id, kind, **kwargs):
        seen.append((kind, connection.in_atomic_block))

    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    from convex_scheduler.signals import function_started

    function_started.connect(on_started)
    try:
        run_due()
    finally:
        function_started.disconnect(on_started)
    assert row(sid).state == State.SUCCESS
    # pytest-django's db fixture wraps the test in a transaction, so the
    # mutation is inside one either way; the action case is in test_connections.
    assert seen == [("mutation", True)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif("connection.vendor == 'sqlite'", reason="SQLite has no connection to lose")
def test_function_retried_is_sent_after_the_due_time_moved(clock):
    sid = scheduler.run_after(0, functions.terminate_own_connection_once, {"name": "r"})
    seen = []

    def on_retry(sender, scheduled_function_id, in_place, **kwargs):
        stored = ScheduledFunction.objects.filter(pk=scheduled_function_id).values_list(
            "next_run_time", "attempts"
        )
        seen.append((in_place, *stored.get()))

    function_retried.connect(on_retry)
    try:
        run_due()
    finally:
        function_retried.disconnect(on_retry)
    assert row(sid).state == State.PENDING
    # The postpone committed before the signal: the receiver saw it.
    [(in_place, next_run_time, attempts)] = seen
    assert not in_place
    assert next_run_time > row(sid).scheduled_time
    assert attempts == 1
