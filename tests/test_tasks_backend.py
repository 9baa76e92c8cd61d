"""``convex_scheduler.tasks.SchedulerBackend`` against the ``django.tasks`` contract (issue 15).

Runs on Django 6.x with the built-in ``django.tasks`` and on Django 5.2 with
the ``django-tasks`` backport (``requirements-test.txt`` installs it, so every
CI cell runs these); skipped only on Django < 6.0 without the backport.

The backend-agnostic expectations come from Django's own task tests
(``tests/tasks/test_immediate_backend.py``, ``tests/tasks/tasks.py``) and the
backport's database-backend tests (``tests/tests/test_database_backend.py``),
re-expressed here rather than copied. What was adapted, and why:

* Enqueueing does not run the task: a worker does. Where the immediate
  backend's tests check the result of ``enqueue()`` directly, these check it
  READY, run the worker in-process (``convex_scheduler.testing.run_due``),
  then ``refresh()`` / ``get_result()``.
* ``get_result()`` works (the immediate backend's "cannot get result" tests
  become "gets the result"), and ids are the row's id as a string, so an
  invalid id is ``"abc"`` rather than a malformed UUID.
* ``run_after`` is supported (the immediate backend refuses it), bounded by
  the scheduler's five years either way.
* Priority is refused like on any backend without ``supports_priority``
  (the worker does not order by it yet); a subclass that claims it proves
  the ``priority`` column is written.
* ``KeyboardInterrupt`` from a task is the worker's concern (it stops the
  worker, see the worker tests), not the backend's: not repeated here.
* ``enqueue_on_commit`` (backport database backend) does not apply: the row
  is written in the caller's transaction, so a rolled-back enqueue leaves
  nothing and a committed one is visible at commit, as tested below.
* Log assertions read the framework's own logger (``django.tasks`` on
  Django 6, ``django_tasks`` for the backport).
"""

import logging
from datetime import timedelta

import django
import pytest
from asgiref.sync import async_to_sync
from django.core.checks import Error
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

if django.VERSION >= (6, 0):
    from django.tasks import (
        TaskContext,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist

    TASKS_LOGGER = "django.tasks"
else:
    pytest.importorskip("django_tasks", reason="Django 5.2 needs the django-tasks backport")
    from django_tasks import (
        TaskContext,
        TaskResultStatus,
        default_task_backend,
        task,
        task_backends,
    )
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist

    TASKS_LOGGER = "django_tasks"

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.registry import TASK_ACTION_NAME, TASK_MUTATION_NAME, registry
from convex_scheduler.tasks import SchedulerBackend, task_errors
from convex_scheduler.testing import run_due

from .models import Counter

BACKEND = "convex_scheduler.tasks.SchedulerBackend"

pytestmark = pytest.mark.django_db


# Tasks, module-level as the framework requires. Decorated while the default
# (immediate) backend is configured; the tests switch TASKS to this backend.


@task()
def noop_task(*args, **kwargs):
    return None


@task()
async def noop_task_async(*args, **kwargs):
    return None


@task()
def calculate_meaning_of_life():
    return 42


@task()
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task()
def failing_task_value_error():
    raise ValueError("This task failed due to ValueError")


@task()
def failing_task_system_exit():
    raise SystemExit("This task failed due to SystemExit")


class Outer:
    class NestedError(Exception):
        pass


@task()
def failing_task_nested_exception():
    raise Outer.NestedError("nested")


@task()
def complex_exception():
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value():
    return {"a": object()}


@task()
def nan_return_value():
    return float("nan")


@task(takes_context=True)
def get_task_id(context):
    return context.task_result.id


@task(takes_context=True)
def check_context(context, attempt):
    assert isinstance(context, TaskContext)
    assert context.attempt == attempt
    assert context.task_result.status == TaskResultStatus.RUNNING
    assert context.task_result.worker_ids[-1] is not None
    return {"attempt": context.attempt, "started": context.task_result.started_at is not None}


@task()
def bump_counter(name):
    counter, _ = Counter.objects.get_or_create(name=name)
    Counter.objects.filter(pk=counter.pk).update(value=counter.value + 1)
    return connection.in_atomic_block


@task()
def bump_counter_then_fail(name):
    Counter.objects.create(name=name, value=1)
    raise RuntimeError("after writing")


def tasks_setting(**options):
    return {
        "default": {
            "BACKEND": BACKEND,
            "QUEUES": ["default", "emails"],
            **({"OPTIONS": options} if options else {}),
        }
    }


@pytest.fixture
def backend():
    with override_settings(TASKS=tasks_setting()):
        yield task_backends["default"]


@pytest.fixture
def mutation_backend():
    with override_settings(TASKS=tasks_setting(run_as="mutation")):
        yield task_backends["default"]


# The backend itself ----------------------------------------------------------


def test_using_the_backend(backend):
    assert isinstance(backend, SchedulerBackend)
    assert default_task_backend.alias == "default"
    assert backend.options == {}
    assert (backend.supports_defer, backend.supports_async_task, backend.supports_get_result) == (
        True,
        True,
        True,
    )
    assert backend.supports_priority is False


def test_the_task_runners_are_registered_internal_functions():
    action = registry.get(TASK_ACTION_NAME)
    mutation = registry.get(TASK_MUTATION_NAME)
    assert action is not None and mutation is not None
    assert (action.kind.value, action.internal) == ("action", True)
    assert (mutation.kind.value, mutation.internal) == ("mutation", True)


def test_check_is_clean_and_reports_a_bad_run_as(backend):
    assert list(backend.check()) == []
    with override_settings(TASKS=tasks_setting(run_as="thread")):
        errors = list(task_backends["default"].check())
    assert [error.id for error in errors] == ["convex_scheduler.E011"]
    assert isinstance(errors[0], Error) and "'thread'" in errors[0].msg


# Enqueue -----------------------------------------------------------------------


@pytest.mark.parametrize("the_task", [noop_task, noop_task_async])
def test_enqueue_is_ready_until_a_worker_runs_it(backend, the_task):
    result = the_task.enqueue(1, two=3)
    assert result.status == TaskResultStatus.READY
    assert result.is_finished is False
    assert result.started_at is None and result.finished_at is None
    assert result.last_attempted_at is None
    assert result.enqueued_at is not None
    with pytest.raises(ValueError, match="Task has not finished yet"):
        result.return_value  # noqa: B018
    assert result.task == the_task
    assert (result.args, result.kwargs) == ([1], {"two": 3})
    assert (result.attempts, result.worker_ids, result.errors) == (0, [], [])

    row = ScheduledFunction.objects.get(pk=int(result.id))
    assert (row.name, row.kind, row.state) == (TASK_ACTION_NAME, "action", State.PENDING)
    assert row.args == {
        "task": the_task.module_path,
        "backend": "default",
        "args": [1],
        "kwargs": {"two": 3},
    }

    run_due()
    assert result.status == TaskResultStatus.READY  # a result is a snapshot
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.is_finished is True
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert result.last_attempted_at == result.started_at
    assert result.return_value is None
    assert result.attempts == 1 and result.worker_ids[0] != ""


def test_aenqueue_and_aget_result(backend):
    async def enqueue_and_get():
        result = await noop_task_async.aenqueue()
        return result, await default_task_backend.aget_result(result.id)

    result, fetched = async_to_sync(enqueue_and_get)()
    assert result.status == fetched.status == TaskResultStatus.READY
    assert fetched == result


def test_get_result_equals_what_enqueue_returned(backend):
    result = default_task_backend.enqueue(noop_task, [], {})
    assert default_task_backend.get_result(result.id) == result
    assert noop_task.get_result(result.id) == result


def test_arguments_are_stored_as_json(backend):
    result = echo.enqueue((1, 2), key=("a", b"b"))
    assert (result.args, result.kwargs) == ([[1, 2]], {"key": ["a", "b"]})
    run_due()
    assert default_task_backend.get_result(result.id).return_value == {
        "args": [[1, 2]],
        "kwargs": {"key": ["a", "b"]},
    }


def test_arguments_that_are_not_json_are_refused_at_enqueue(backend):
    with pytest.raises(TypeError, match="Unsupported type"):
        echo.enqueue(object())
    with pytest.raises(ValueError, match="finite"):
        echo.enqueue(float("inf"))
    assert not ScheduledFunction.objects.exists()


def test_validate_on_enqueue(backend):
    with pytest.raises(InvalidTask, match="Queue 'unknown_queue' is not valid for backend"):
        noop_task.using(queue_name="unknown_queue").enqueue()
    assert not ScheduledFunction.objects.exists()


def test_queue_name_is_the_pool(backend):
    default = noop_task.enqueue()
    emails = noop_task.using(queue_name="emails").enqueue()
    pools = dict(ScheduledFunction.objects.values_list("pk", "pool"))
    assert (pools[int(default.id)], pools[int(emails.id)]) == ("", "emails")
    assert default_task_backend.get_result(emails.id).task.queue_name == "emails"
    assert default_task_backend.get_result(default.id).task.queue_name == "default"


@pytest.mark.parametrize("queue", ["x" * 101, "line\nbreak"])
def test_a_queue_name_must_be_a_pool_name(queue):
    with override_settings(TASKS={"default": {"BACKEND": BACKEND, "QUEUES": []}}):
        with pytest.raises(InvalidTask, match="at most 100 printable characters"):
            noop_task.using(queue_name=queue).enqueue()
        noop_task.using(queue_name="x" * 100).enqueue()
    assert ScheduledFunction.objects.get().pool == "x" * 100


def test_a_queue_is_a_pool_whose_limit_applies_to_action_tasks(backend):
    with override_settings(CONVEX_SCHEDULER={"POOLS": {"emails": {"max_parallelism": 0}}}):
        paused = noop_task.using(queue_name="emails").enqueue()
        free = noop_task.enqueue()
        run_due()
    assert default_task_backend.get_result(paused.id).status == TaskResultStatus.READY
    assert default_task_backend.get_result(free.id).status == TaskResultStatus.SUCCESSFUL


def test_priority_is_refused_while_workers_do_not_order_by_it(backend):
    with pytest.raises(InvalidTask, match="does not support setting priority"):
        noop_task.using(priority=10).enqueue()


class PriorityBackend(SchedulerBackend):
    """What the backend becomes once workers order by priority."""

    supports_priority = True


def test_priority_is_stored_by_a_backend_that_supports_it():
    with override_settings(TASKS={"default": {"BACKEND": f"{__name__}.PriorityBackend"}}):
        result = noop_task.using(priority=-7).enqueue()
        assert ScheduledFunction.objects.get(pk=int(result.id)).priority == -7
        assert default_task_backend.get_result(result.id).task.priority == -7


def test_run_after_is_the_scheduled_time(backend):
    when = timezone.now() + timedelta(hours=1)
    result = noop_task.using(run_after=when).enqueue()
    row = ScheduledFunction.objects.get(pk=int(result.id))
    assert row.scheduled_time == row.next_run_time == when
    run_due()
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.READY
    assert fetched.task.run_after == when


def test_run_after_more_than_five_years_away_is_invalid(backend):
    with pytest.raises(InvalidTask, match="five years"):
        noop_task.using(run_after=timezone.now() + timedelta(days=5 * 366 + 1)).enqueue()


def test_a_past_run_after_runs_at_once(backend):
    result = noop_task.using(run_after=timezone.now() - timedelta(minutes=5)).enqueue()
    run_due()
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_enqueue_leaves_nothing(backend):
    with pytest.raises(RuntimeError), transaction.atomic():
        noop_task.enqueue()
        assert ScheduledFunction.objects.count() == 1
        raise RuntimeError("roll back")
    assert not ScheduledFunction.objects.exists()
    with transaction.atomic():
        result = noop_task.enqueue()
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.READY


def test_enqueue_logs_and_sends_task_enqueued(backend, caplog):
    with caplog.at_level(logging.DEBUG, logger=TASKS_LOGGER):
        result = noop_task.enqueue()
        enqueued = [r for r in caplog.records if "enqueued" in r.getMessage()]
        assert len(enqueued) == 1 and result.id in enqueued[0].getMessage()
        caplog.clear()
        run_due()
    messages = [r.getMessage() for r in caplog.records if r.name == TASKS_LOGGER]
    assert any("state=RUNNING" in m and result.id in m for m in messages), messages
    assert any("state=SUCCESSFUL" in m and result.id in m for m in messages), messages


# Results --------------------------------------------------------------------------


def test_result(backend):
    result = default_task_backend.enqueue(calculate_meaning_of_life, [], {})
    run_due()
    fetched = calculate_meaning_of_life.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value == 42
    assert ScheduledFunction.objects.get(pk=int(result.id)).result == 42


@pytest.mark.parametrize(
    ("the_task", "exception", "message"),
    [
        (failing_task_value_error, ValueError, "This task failed due to ValueError"),
        (failing_task_system_exit, SystemExit, "This task failed due to SystemExit"),
    ],
)
def test_catches_exception(backend, caplog, the_task, exception, message):
    result = the_task.enqueue()
    with caplog.at_level(logging.ERROR, logger=TASKS_LOGGER):
        run_due()
    assert any(message in r.getMessage() or message in (r.exc_text or "") for r in caplog.records)
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    assert result.is_finished is True
    assert result.started_at >= result.enqueued_at
    assert result.finished_at >= result.started_at
    assert len(result.errors) == 1
    assert result.errors[0].exception_class is exception
    assert result.errors[0].traceback.endswith(f"{exception.__name__}: {message}\n")
    assert result.task == the_task
    assert (result.args, result.kwargs) == ([], {})


def test_exception_class_path_keeps_module_and_nesting(backend):
    result = failing_task_nested_exception.enqueue()
    run_due()
    error = default_task_backend.get_result(result.id).errors[0]
    # The qualified name, as the immediate backend records it (import_string
    # cannot resolve a nested class, there or here).
    assert error.exception_class_path == f"{__name__}.Outer.NestedError"


def test_complex_exception(backend):
    result = complex_exception.enqueue()
    run_due()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result._return_value is None
    assert result.errors[0].exception_class is ValueError
    assert 'ValueError(ValueError("This task failed"))' in result.errors[0].traceback


@pytest.mark.parametrize(
    ("the_task", "exception", "text"),
    [
        (complex_return_value, TypeError, "Unsupported type"),
        (nan_return_value, ValueError, "Out of range float values"),
    ],
)
def test_a_return_value_that_is_not_json_fails_the_task(backend, the_task, exception, text):
    result = the_task.enqueue()
    run_due()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class is exception
    assert text in result.errors[0].traceback
    assert ScheduledFunction.objects.get(pk=int(result.id)).result is None


def test_the_worker_stores_the_return_value_within_max_result_bytes(backend):
    small = echo.enqueue("a")
    big = echo.enqueue("a" * 100)
    with override_settings(CONVEX_SCHEDULER={"MAX_RESULT_BYTES": 60}):
        run_due()
    assert default_task_backend.get_result(small.id).return_value == {
        "args": ["a"],
        "kwargs": {},
    }
    refused = default_task_backend.get_result(big.id)
    assert refused.status == TaskResultStatus.FAILED
    assert "MAX_RESULT_BYTES" in refused.errors[0].traceback
    assert ScheduledFunction.objects.get(pk=int(big.id)).result is None


def test_takes_context(backend):
    result = get_task_id.enqueue()
    run_due()
    assert default_task_backend.get_result(result.id).return_value == result.id


def test_context(backend):
    result = check_context.enqueue(1)
    run_due()
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL, fetched.errors
    assert fetched.return_value == {"attempt": 1, "started": True}


def test_get_missing_result(backend):
    for missing in ["999999", "abc", "", "-1", "1.5", str(2**63)]:
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(missing)


def test_a_row_that_is_not_a_task_is_no_result(backend):
    pk = scheduler.run_after(0, "tests.functions:increment", {"name": "n"})
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(pk))


def test_results_belong_to_their_backend_alias():
    setting = {**tasks_setting(), "other": {"BACKEND": BACKEND}}
    with override_settings(TASKS=setting):
        result = noop_task.enqueue()
        assert task_backends["default"].get_result(result.id) == result
        with pytest.raises(TaskResultDoesNotExist):
            task_backends["other"].get_result(result.id)


def test_status_mapping(backend):
    ids = {state: noop_task.enqueue().id for state in State.values}
    for state, result_id in ids.items():
        changes = {
            "state": state,
            "next_run_time": None if state != State.PENDING else timezone.now(),
        }
        if state not in (State.PENDING, State.IN_PROGRESS):
            changes["completed_time"] = timezone.now()
        ScheduledFunction.objects.filter(pk=int(result_id)).update(**changes)
    statuses = {state: default_task_backend.get_result(pk).status for state, pk in ids.items()}
    assert statuses == {
        "pending": TaskResultStatus.READY,
        "inProgress": TaskResultStatus.RUNNING,
        "success": TaskResultStatus.SUCCESSFUL,
        "failed": TaskResultStatus.FAILED,
        "canceled": TaskResultStatus.FAILED,
    }


def test_a_canceled_task_never_runs_and_is_failed_without_errors(backend):
    result = bump_counter.enqueue("canceled")
    scheduler.cancel(result.id)
    run_due()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors == [] and result.finished_at is not None
    assert not Counter.objects.filter(name="canceled").exists()


def test_a_task_that_cannot_be_imported_fails_and_get_result_says_why(backend):
    result = noop_task.enqueue()
    row = ScheduledFunction.objects.filter(pk=int(result.id))
    row.update(args={"task": "tests.nowhere.gone", "backend": "default", "args": [], "kwargs": {}})
    with pytest.raises(InvalidTask, match=r"'tests\.nowhere\.gone' cannot be imported"):
        default_task_backend.get_result(result.id)
    run_due()
    assert row.get().state == State.FAILED
    assert "cannot be imported" in row.get().error


def test_a_path_that_is_not_a_task_is_never_called(backend):
    result = noop_task.enqueue()
    row = ScheduledFunction.objects.filter(pk=int(result.id))
    row.update(args={"task": "os.abort", "backend": "default", "args": [], "kwargs": {}})
    run_due()
    assert row.get().state == State.FAILED
    assert "'os.abort' is not a task" in row.get().error


# Action or mutation -------------------------------------------------------------


def test_an_action_runs_outside_a_transaction(backend):
    result = bump_counter.enqueue("action")
    run_due()
    # run_due runs actions in the test's transaction; what matters is that the
    # runner opened none of its own: a mutation's is checked below.
    assert Counter.objects.get(name="action").value == 1
    assert default_task_backend.get_result(result.id).status == TaskResultStatus.SUCCESSFUL


def test_run_as_mutation_runs_inside_a_transaction_and_records_the_worker(mutation_backend):
    result = bump_counter.enqueue("mutation")
    row = ScheduledFunction.objects.get(pk=int(result.id))
    assert (row.name, row.kind) == (TASK_MUTATION_NAME, "mutation")
    run_due()
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.SUCCESSFUL
    assert fetched.return_value is True  # connection.in_atomic_block inside the task
    assert fetched.started_at is not None and fetched.attempts == 1
    assert Counter.objects.get(name="mutation").value == 1


def test_run_as_mutation_rolls_back_the_writes_of_a_failed_task(mutation_backend):
    result = bump_counter_then_fail.enqueue("rolled-back")
    run_due()
    fetched = default_task_backend.get_result(result.id)
    assert fetched.status == TaskResultStatus.FAILED
    assert fetched.errors[0].exception_class is RuntimeError
    assert not Counter.objects.filter(name="rolled-back").exists()


# Reading errors ------------------------------------------------------------------


def test_errors_without_a_traceback_are_plain_exceptions():
    [error] = task_errors("Transient error while executing action")
    assert error.exception_class_path == "builtins.Exception"
    assert error.traceback == "Transient error while executing action"
    assert task_errors("") == []


def test_errors_of_an_unknown_or_truncated_class_fall_back_to_exception():
    [error] = task_errors("Gone: x\n\nTraceback (most recent call last):\n  File ...\n")
    assert error.exception_class_path == "builtins.Exception"
    [error] = task_errors("KeyError: 'k'\n\nTraceback (most recent call last):\nKeyError: 'k'\n")
    assert error.exception_class is KeyError
