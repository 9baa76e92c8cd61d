"""Results, opt-in retries for actions, completion callbacks, status, cancel_all and pools."""

import json

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from convex_scheduler import NonRetryableError, Retry, SchedulingError, mutation, scheduler
from convex_scheduler.models import ORPHANED_ACTION_ERROR, ScheduledFunction, State
from convex_scheduler.testing import run_due

from . import functions
from .harness import finish, kill, start_worker, wait_for
from .models import ActionRun


def row(sid):
    return ScheduledFunction.objects.get(pk=sid)


def runs(sid):
    return ActionRun.objects.filter(scheduled_function_id=sid).count()


def callbacks_of(sid):
    """The outcome each completion callback of ``sid`` was called with."""
    return [
        json.loads(label)
        for label in ActionRun.objects.filter(scheduled_function_id=sid)
        .exclude(label__in=["", "once", "nr", "b", "pool"])
        .values_list("label", flat=True)
        if label.startswith("{")
    ]


# Results ----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["result:mutation", "result:action"])
def test_what_a_function_returns_is_stored_as_its_result(name):
    value = {"total": 3, "items": ["a", None, 1.5]}
    sid = scheduler.run_after(0, name, {"value": value})
    run_due()
    done = row(sid)
    assert (done.state, done.result) == (State.SUCCESS, value)
    assert scheduler.status(sid) == {"state": "success", "attempts": 1, "result": value}


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["result:mutation", "result:action"])
def test_a_result_over_max_result_bytes_fails_the_function(name, settings):
    settings.CONVEX_SCHEDULER = {**settings.CONVEX_SCHEDULER, "MAX_RESULT_BYTES": 100}
    sid = scheduler.run_after(0, name, {"value": "x" * 200})
    run_due()
    failed = row(sid)
    assert failed.state == State.FAILED
    assert "at most 100 bytes (setting MAX_RESULT_BYTES)" in failed.error
    assert failed.result is None


@pytest.mark.django_db
def test_status_is_none_for_an_unknown_or_expired_row():
    assert scheduler.status(987654321) is None
    with pytest.raises(SchedulingError):
        scheduler.status("abc")


# Retries ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_retrying_action_that_fails_twice_then_succeeds():
    sid = scheduler.run_after(0, "retry:flaky", {"key": "k", "failures": 2})
    run_due()
    done = row(sid)
    assert (done.state, done.attempts, done.result) == (State.SUCCESS, 3, "ok after 3")
    assert runs(sid) == 3


@pytest.mark.django_db
def test_each_failed_attempt_is_visible_and_waits_its_backoff(clock):
    sid = scheduler.run_after(
        0,
        "retry:flaky",
        {"key": "k", "failures": 1},
        retry=Retry(max_attempts=3, initial_backoff_ms=10_000, base=2),
    )
    run_due()
    waiting = row(sid)
    assert (waiting.state, waiting.attempts) == (State.PENDING, 1)
    assert waiting.error.startswith("ConnectionError: flaky attempt 1")
    assert timezone.timedelta(seconds=5) <= waiting.next_run_time - clock.now()
    assert waiting.next_run_time - clock.now() <= timezone.timedelta(seconds=15)
    assert waiting.scheduled_time == waiting.creation_time  # never changes
    clock.advance(seconds=15)
    run_due()
    assert (row(sid).state, row(sid).attempts) == (State.SUCCESS, 2)


@pytest.mark.django_db
def test_non_retryable_error_fails_at_once():
    sid = scheduler.run_after(0, "retry:non_retryable")
    run_due()
    failed = row(sid)
    assert (failed.state, failed.attempts) == (State.FAILED, 1)
    assert "NonRetryableError: the card was declined" in failed.error
    assert NonRetryableError.__module__ == "convex_scheduler.retries"


@pytest.mark.django_db
def test_attempts_run_out_and_the_last_error_stays():
    sid = scheduler.run_after(0, "retry:flaky", {"key": "k", "failures": 99})
    run_due()
    failed = row(sid)
    assert (failed.state, failed.attempts) == (State.FAILED, 5)
    assert failed.error.startswith("ConnectionError: flaky attempt 5")
    assert runs(sid) == 5


@pytest.mark.django_db
def test_actions_without_retry_stay_at_most_once_and_a_call_can_opt_in():
    once = scheduler.run_after(0, "retry:at_most_once")
    twice = scheduler.run_after(
        0, "retry:at_most_once", retry=Retry(max_attempts=2, initial_backoff_ms=0)
    )
    run_due()
    assert (row(once).state, runs(once)) == (State.FAILED, 1)
    assert (row(twice).state, runs(twice), row(twice).attempts) == (State.FAILED, 2, 2)


def test_mutations_refuse_retry_and_pool():
    with pytest.raises(TypeError, match="Mutations take no retry"):

        @mutation(name="tests:retrying_mutation", retry=True)
        def nope(ctx):
            pass

    with pytest.raises(SchedulingError, match="mutations take no retry") as caught:
        scheduler.run_after(0, functions.increment, {"name": "a"}, retry=True)
    assert caught.value.field == "retry"


@pytest.mark.parametrize(
    "policy",
    [
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"max_attempts": True},
        {"initial_backoff_ms": -1},
        {"initial_backoff_ms": float("inf")},
        {"base": 0.5},
    ],
)
def test_bad_retry_policies_are_refused(policy):
    with pytest.raises(SchedulingError, match="Retry"):
        Retry(**policy)


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_during_a_retrying_action_is_retried_by_another(tmp_path):
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    gate.touch()
    sid = scheduler.run_after(0, "retry:blocking", {"gate": str(gate), "entered": str(entered)})
    plain = scheduler.run_after(
        0,
        functions.blocking_record,
        {
            "label": "p",
            "gate": str(gate),
            "entered": str(tmp_path / "e2"),
            "log": str(tmp_path / "log"),
        },
    )
    worker = start_worker("--concurrency", "2")
    wait_for(lambda: entered.exists() and (tmp_path / "e2").exists(), "both actions to start")
    kill(worker)
    gate.unlink()
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    # The retrying action ran again; the plain one kept the at-most-once rule.
    if row(sid).state == State.PENDING:
        wait_for(lambda: ScheduledFunction.objects.due(timezone.now()).exists(), "the backoff")
        code, output = finish(start_worker("--burst"))
        assert code == 0, output
    retried = row(sid)
    assert (retried.state, retried.attempts, retried.result) == (State.SUCCESS, 2, "done")
    assert runs(sid) == 2
    assert (row(plain).state, row(plain).error) == (State.FAILED, ORPHANED_ACTION_ERROR)


# Completion callbacks -----------------------------------------------------


@pytest.mark.django_db
def test_on_complete_runs_once_with_the_return_value_and_context():
    sid = scheduler.run_after(
        0, "result:mutation", {"value": 7}, on_complete="callback:record", context={"k": 1}
    )
    run_due()
    assert callbacks_of(sid) == [
        {"context": {"k": 1}, "result": {"kind": "success", "return_value": 7}}
    ]
    callback = ScheduledFunction.objects.get(parent_id=sid, name="callback:record")
    assert callback.state == State.SUCCESS
    assert row(sid).callback_id == callback.pk
    assert run_due().finished == 0  # nothing more to run: once


@pytest.mark.django_db
def test_on_complete_runs_once_after_a_failure():
    sid = scheduler.run_after(
        0, functions.increment_then_fail, {"name": "a"}, on_complete="callback:record"
    )
    run_due()
    (outcome,) = callbacks_of(sid)
    assert outcome["result"]["kind"] == "failed"
    assert outcome["result"]["error"] == "ValueError: boom after incrementing a"


@pytest.mark.django_db
def test_on_complete_runs_once_after_cancel_before_start():
    sid = scheduler.run_after(
        60_000, functions.increment, {"name": "a"}, on_complete="callback:record"
    )
    scheduler.cancel(sid)
    scheduler.cancel(sid)  # a second cancel changes nothing, schedules nothing
    run_due()
    assert callbacks_of(sid) == [{"context": None, "result": {"kind": "canceled"}}]


@pytest.mark.django_db
def test_on_complete_runs_once_after_cancel_while_running(clock):
    sid = scheduler.run_after(0, functions.record, {"label": "x"}, on_complete="callback:record")
    ScheduledFunction.objects.filter(pk=sid).start_action("a-live-worker", clock.now())
    scheduler.cancel(sid)
    # The action finishes later: its outcome does not overwrite canceled.
    ScheduledFunction.objects.filter(pk=sid).succeed(clock.now(), from_state=State.IN_PROGRESS)
    run_due()
    assert callbacks_of(sid) == [{"context": None, "result": {"kind": "canceled"}}]


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_on_complete_runs_once_when_the_worker_dies_before_the_outcome(tmp_path):
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    gate.touch()
    sid = scheduler.run_after(
        0,
        functions.blocking_record,
        {"label": "k", "gate": str(gate), "entered": str(entered), "log": str(tmp_path / "log")},
        on_complete="callback:record",
    )
    worker = start_worker()
    wait_for(entered.exists, "the action to start")
    kill(worker)
    gate.unlink()
    for _ in range(2):
        code, output = finish(start_worker("--burst"))
        assert code == 0, output
    assert callbacks_of(sid) == [
        {"context": None, "result": {"kind": "failed", "error": ORPHANED_ACTION_ERROR}}
    ]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_complete": "retry:at_most_once"}, "must be a registered mutation"),
        ({"on_complete": "no:such"}, "No function is registered"),
        ({"on_complete": functions.increment}, "must accept id, context and result"),
        ({"on_complete": "callback:record", "context": {1, 2}}, "not a JSON value"),
        ({"context": {"k": 1}}, "only passed to on_complete"),
    ],
)
def test_bad_callbacks_are_refused_when_scheduling(kwargs, message):
    with pytest.raises(SchedulingError, match=message):
        scheduler.run_after(0, functions.increment, {"name": "a"}, **kwargs)
    assert not ScheduledFunction.objects.exists()


# cancel_all -----------------------------------------------------------------


@pytest.mark.django_db
def test_cancel_all_by_name_and_time_in_batches_of_at_most_1000(clock):
    for _ in range(2_100):
        scheduler.run_after(60_000, functions.increment, {"name": "a"})
    other = scheduler.run_after(60_000, functions.record)
    later = scheduler.run_at(
        clock.now() + timezone.timedelta(days=2), functions.increment, {"name": "a"}
    )
    with CaptureQueriesContext(connection) as queries:
        count = scheduler.cancel_all(
            name=functions.increment, before=clock.now() + timezone.timedelta(days=1)
        )
    assert count == 2_100
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 3  # 1,000 + 1,000 + 100
    assert row(other).state == State.PENDING
    assert row(later).state == State.PENDING
    assert scheduler.cancel_all(limit=1) == 1
    with pytest.raises(SchedulingError, match="limit"):
        scheduler.cancel_all(limit=0)


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_cancel_all_while_workers_run_leaves_nothing_to_run_after_it_returns():
    with transaction.atomic():  # one commit for the lot
        ids = [scheduler.run_after(0, functions.record, {"label": "c"}) for _ in range(10_000)]
    workers = [start_worker("--concurrency", "2") for _ in range(2)]
    try:
        wait_for(lambda: ActionRun.objects.exists(), "the workers to start running")
        scheduler.cancel_all(name=functions.record)
        assert not ScheduledFunction.objects.filter(state=State.PENDING).exists()
        never_started = set(
            ScheduledFunction.objects.filter(
                pk__in=ids, state=State.CANCELED, started_time__isnull=True
            ).values_list("pk", flat=True)
        )
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            finish(worker)
    assert never_started
    ran = set(ActionRun.objects.values_list("scheduled_function_id", flat=True))
    assert not ran & never_started
    assert set(ScheduledFunction.objects.values_list("state", flat=True)) <= {
        State.SUCCESS,
        State.CANCELED,
    }


# Pools ------------------------------------------------------------------------


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_a_pool_never_runs_more_than_its_limit_across_workers(tmp_path):
    ids = [scheduler.run_after(0, "pool:limited", {"ms": 60}) for _ in range(24)]
    env = {"CONVEX_TEST_POOLS": json.dumps({"limited": {"max_parallelism": 2}})}
    workers = [start_worker("--burst", "--concurrency", "4", **env) for _ in range(3)]
    peak = 0
    while any(worker.poll() is None for worker in workers):
        running = ScheduledFunction.objects.filter(state=State.IN_PROGRESS).count()
        peak = max(peak, running)
    for worker in workers:
        code, output = finish(worker)
        assert code == 0, output
    assert peak <= 2
    assert set(ScheduledFunction.objects.filter(pk__in=ids).values_list("state", flat=True)) == {
        State.SUCCESS
    }


@pytest.mark.django_db
def test_a_paused_pool_waits_and_fails_nothing(settings):
    settings.CONVEX_SCHEDULER = {
        **settings.CONVEX_SCHEDULER,
        "POOLS": {"limited": {"max_parallelism": 0}},
    }
    sid = scheduler.run_after(0, "pool:limited", {"ms": 0})
    other = scheduler.run_after(0, functions.increment, {"name": "a"})
    run_due()
    assert row(sid).state == State.PENDING
    assert row(other).state == State.SUCCESS
    settings.CONVEX_SCHEDULER = {**settings.CONVEX_SCHEDULER, "POOLS": {}}
    run_due()
    assert row(sid).state == State.SUCCESS

