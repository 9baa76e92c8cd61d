"""A ``django.tasks`` backend: ``@task`` functions run on this scheduler's workers.

::

    TASKS = {"default": {"BACKEND": "convex_scheduler.tasks.SchedulerBackend"}}

Django 6.0 and later ship ``django.tasks``; on Django 5.2 install the
``django-tasks`` backport (``pip install "django-convex-scheduler[tasks]"``).

How a task reaches a worker: :meth:`SchedulerBackend.enqueue` inserts one
:class:`~convex_scheduler.models.ScheduledFunction` row, on the caller's
connection (so inside ``transaction.atomic()`` it exists only if the
transaction commits), under one of two internal functions every worker
registers at start-up, ``django.tasks:action`` or ``django.tasks:mutation``
(``OPTIONS["run_as"]``). The row's arguments name the task by its module
path, the backend alias, and the task's ``args`` and ``kwargs``. The worker
runs that internal function, which imports the task by module path and calls
it (:func:`run_task`); the worker stores what it returned in the row's
``result``, as for any function.
"""

from __future__ import annotations

import builtins
import json
import os
import re
import socket
import traceback
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import connections, router
from django.utils.module_loading import import_string

from . import clock
from .conf import poll_interval_for
from .exceptions import SchedulingError
from .registry import TASK_ACTION_NAME, TASK_MUTATION_NAME, FunctionKind, check_pool, registry
from .scheduler import _due_at, encode_args
from .wakeup import CHANNEL, ring_local_workers

if TYPE_CHECKING:
    from django.core.checks import CheckMessage
    from django.tasks import (
        DEFAULT_TASK_QUEUE_NAME,
        Task,
        TaskContext,
        TaskResult,
        TaskResultStatus,
        task_backends,
    )
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import TaskError
    from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued, task_finished, task_started
    from django.utils.json import normalize_json

    from .context import FunctionContext
else:
    try:  # Django 6.0+
        from django.tasks import (
            DEFAULT_TASK_QUEUE_NAME,
            Task,
            TaskContext,
            TaskResult,
            TaskResultStatus,
            task_backends,
        )
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import TaskError
        from django.tasks.exceptions import InvalidTask, InvalidTaskBackend, TaskResultDoesNotExist
        from django.tasks.signals import task_enqueued, task_finished, task_started
        from django.utils.json import normalize_json
    except ImportError:
        try:  # Django 5.2 with the django-tasks backport
            from django_tasks import (
                DEFAULT_TASK_QUEUE_NAME,
                TaskContext,
                TaskResult,
                TaskResultStatus,
                task_backends,
            )
            from django_tasks.backends.base import BaseTaskBackend
            from django_tasks.base import Task, TaskError
            from django_tasks.exceptions import InvalidTaskBackendError as InvalidTaskBackend
            from django_tasks.exceptions import InvalidTaskError as InvalidTask
            from django_tasks.exceptions import TaskResultDoesNotExist
            from django_tasks.signals import task_enqueued, task_finished, task_started
            from django_tasks.utils import normalize_json
        except ImportError as exc:
            raise ImportError(
                "convex_scheduler.tasks needs django.tasks (Django 6.0 or later) or, on "
                'Django 5.2, the django-tasks backport: pip install "django-convex-scheduler'
                '[tasks]".'
            ) from exc

__all__ = ["RUN_AS_ACTION", "RUN_AS_MUTATION", "SchedulerBackend", "run_task"]

RUN_AS_ACTION = "action"
RUN_AS_MUTATION = "mutation"
_FUNCTION_NAMES = {RUN_AS_ACTION: TASK_ACTION_NAME, RUN_AS_MUTATION: TASK_MUTATION_NAME}

#: ``ScheduledFunction.state`` → ``TaskResultStatus``.
STATUS_BY_STATE = {
    "pending": TaskResultStatus.READY,
    "inProgress": TaskResultStatus.RUNNING,
    "success": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "canceled": TaskResultStatus.FAILED,
}

_ROW_FIELDS = (
    "id",
    "name",
    "args",
    "state",
    "scheduled_time",
    "creation_time",
    "started_time",
    "completed_time",
    "error",
    "attempts",
    "owner",
    "priority",
    "pool",
    "result",
)


class SchedulerBackend(BaseTaskBackend):
    """Enqueue ``django.tasks`` tasks as scheduled functions run by ``runscheduler``.

    ``OPTIONS``:

    ``run_as``
        ``"action"`` (the default): a task runs outside any transaction, at
        most once, like an action. ``"mutation"``: inside
        ``transaction.atomic``, exactly once, retried on transient database
        errors, like a mutation.

    ``QUEUES`` lists the queue names tasks may use (default ``["default"]``);
    a task's queue is stored as the row's ``pool`` (``"default"`` as the
    empty, default pool).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    #: Stored in the ``priority`` column, but workers do not order by it yet,
    #: so the backend does not claim it (and refuses non-default priorities).
    supports_priority = False

    @property
    def run_as(self) -> str:
        return str(self.options.get("run_as", RUN_AS_ACTION))

    def check(self, **kwargs: Any) -> list[CheckMessage]:
        from .checks import check_task_backend

        return [*super().check(**kwargs), *check_task_backend(self.alias, self.options)]

    def validate_task(self, task: Task) -> None:
        super().validate_task(task)
        try:
            check_pool(task.queue_name)  # a queue is stored as a pool
        except SchedulingError as exc:
            raise InvalidTask(f"Queue {task.queue_name!r}: {exc}") from None
        if task.run_after is not None:
            try:
                _due_at(task.run_after, clock.now())
            except SchedulingError as exc:
                raise InvalidTask(str(exc)) from None

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Insert the task's row on the caller's connection and return its result, READY."""
        from .models import ScheduledFunction, State

        self.validate_task(task)
        entry = registry.resolve(self._function_name())
        now = clock.now()
        try:
            due = now if task.run_after is None else _due_at(task.run_after, now)
        except SchedulingError as exc:
            raise InvalidTask(str(exc)) from None
        task_args: list[Any] = normalize_json(list(args))  # type: ignore[assignment]  # a list stays a list
        task_kwargs: dict[str, Any] = normalize_json(dict(kwargs))  # type: ignore[assignment]  # a dict stays a dict
        stored = {
            "task": task.module_path,
            "backend": self.alias,
            "args": task_args,
            "kwargs": task_kwargs,
        }
        args_json, _size = encode_args(entry, stored)
        using = router.db_for_write(ScheduledFunction)
        wake = due <= now + timedelta(seconds=poll_interval_for(connections[using].vendor))
        pk = ScheduledFunction.objects.using(using).insert_one(
            args_json=args_json,
            notify_channel=CHANNEL if wake else None,
            name=entry.name,
            kind=entry.kind.value,
            state=State.PENDING,
            scheduled_time=due,
            next_run_time=due,
            creation_time=now,
            completed_time=None,
            parent_id=None,
            priority=task.priority,
            pool=pool_for_queue(task.queue_name),
        )
        if wake:
            ring_local_workers(using)
        result: TaskResult = TaskResult(
            task=task,
            id=str(pk),
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=task_args,
            kwargs=task_kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def get_result(self, result_id: str) -> TaskResult:
        """The result of the task enqueued as ``result_id`` by this backend.

        Raises ``TaskResultDoesNotExist`` for an id of no row, of a row that is
        not a task, or of a task of another backend alias.
        """
        from .models import ScheduledFunction

        pk = _parse_result_id(result_id)
        row = None
        if pk is not None:
            row = (
                ScheduledFunction.objects.using(router.db_for_read(ScheduledFunction))
                .filter(pk=pk, name__in=_FUNCTION_NAMES.values())
                .values(*_ROW_FIELDS)
                .first()
            )
        if row is None or not _stored_task(row["args"]) or row["args"]["backend"] != self.alias:
            raise TaskResultDoesNotExist(result_id)
        return self._result_from_row(row)

    def _function_name(self) -> str:
        try:
            return _FUNCTION_NAMES[self.run_as]
        except KeyError:
            raise InvalidTaskBackend(
                f"TASKS[{self.alias!r}]['OPTIONS']['run_as'] must be 'action' or 'mutation', "
                f"not {self.options.get('run_as')!r}."
            ) from None

    def _task(self, row: dict[str, Any]) -> Task:
        path = row["args"]["task"]
        try:
            found = import_string(path)
        except ImportError as exc:
            raise InvalidTask(f"The task {path!r} cannot be imported: {exc}") from exc
        if not isinstance(found, Task):
            raise InvalidTask(f"{path!r} is not a task (a function decorated with @task).")
        scheduled, created = row["scheduled_time"], row["creation_time"]
        return found.using(
            backend=self.alias,
            priority=row["priority"],
            queue_name=queue_for_pool(row["pool"]),
            run_after=scheduled if scheduled != created else None,
        )

    def _result_from_row(self, row: dict[str, Any]) -> TaskResult:
        status = STATUS_BY_STATE[row["state"]]
        finished = status in (TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED)
        result: TaskResult = TaskResult(
            task=self._task(row),
            id=str(row["id"]),
            status=status,
            enqueued_at=row["creation_time"],
            started_at=row["started_time"],
            last_attempted_at=row["started_time"],
            finished_at=row["completed_time"] if finished else None,
            args=row["args"]["args"],
            kwargs=row["args"]["kwargs"],
            backend=self.alias,
            errors=task_errors(row["error"]) if row["state"] == "failed" else [],
            worker_ids=[row["owner"]] * row["attempts"],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", row["result"])
        return result


def pool_for_queue(queue_name: str) -> str:
    """The ``pool`` of a queue: Django's default queue is the default (empty) pool."""
    return "" if queue_name == DEFAULT_TASK_QUEUE_NAME else queue_name


def queue_for_pool(pool: str) -> str:
    return pool or DEFAULT_TASK_QUEUE_NAME


def _parse_result_id(result_id: Any) -> int | None:
    text = str(result_id)
    if not (text.isascii() and text.isdigit()):
        return None
    pk = int(text)
    return pk if 0 < pk < 2**63 else None


def _stored_task(args: Any) -> bool:
    return (
        isinstance(args, dict)
        and isinstance(args.get("task"), str)
        and isinstance(args.get("backend"), str)
        and isinstance(args.get("args"), list)
        and isinstance(args.get("kwargs"), dict)
    )


_EXCEPTION_LINE = re.compile(r"(?P<path>[A-Za-z_][\w.]*)(?::|$)")


def task_errors(error: str) -> list[TaskError]:
    """The ``errors`` of a failed row, read from its ``error`` text.

    The worker stores ``"Name: message"``, a blank line, then the traceback,
    whose last exception line spells the class with its module. An error
    without a traceback (an action lost with its worker, a function no worker
    knows) gets ``builtins.Exception``.
    """
    if not error:
        return []
    headline, _, trace = error.partition("\n\n")
    name = headline.split(":", 1)[0].strip()
    path = None
    if trace and name.isidentifier():
        for line in reversed(trace.splitlines()):
            match = _EXCEPTION_LINE.fullmatch(line.split(": ", 1)[0].rstrip(":"))
            if match and (match["path"] == name or match["path"].endswith(f".{name}")):
                path = match["path"]
                break
    if path is None:
        path = "Exception"
        trace = error
    if "." not in path:
        builtin = getattr(builtins, path, None)
        is_exception = isinstance(builtin, type) and issubclass(builtin, BaseException)
        path = f"builtins.{path}" if is_exception else "builtins.Exception"
    return [TaskError(exception_class_path=path, traceback=trace)]


def _local_worker_id(using: str) -> str:
    """The id of the worker of this process (mutations do not record one in ``owner``)."""
    from .models import SchedulerWorker

    return (
        SchedulerWorker.objects.using(using)
        .filter(hostname=socket.gethostname(), pid=os.getpid())
        .order_by("-started_time")
        .values_list("pk", flat=True)
        .first()
    ) or ""


def run_task(
    ctx: FunctionContext, *, task: str, backend: str, args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Run the task a row names, in the worker, and return what it returned.

    Called by the internal functions ``django.tasks:action`` and
    ``django.tasks:mutation``. Sends ``task_started`` and ``task_finished``
    around the call. The return value, made JSON as the immediate backend
    does, is returned for the worker to store in the row's ``result`` with
    its success (within ``MAX_RESULT_BYTES``). A mutation also records its
    worker and start time, in its transaction. An exception propagates, so
    the worker records the row ``failed`` with its traceback.
    """
    from .models import ScheduledFunction, State

    scheduler_backend = task_backends[backend]
    if not isinstance(scheduler_backend, SchedulerBackend):
        raise InvalidTaskBackend(
            f"TASKS[{backend!r}] is not a convex_scheduler.tasks.SchedulerBackend."
        )
    using = router.db_for_write(ScheduledFunction)
    rows = ScheduledFunction.objects.using(using).filter(pk=ctx.scheduled_function_id)
    row = rows.values(*_ROW_FIELDS).get()
    is_mutation = ctx.kind == FunctionKind.MUTATION
    started = row["started_time"] or clock.now()
    worker_id = row["owner"] or _local_worker_id(using)
    row.update(state=State.IN_PROGRESS, started_time=started, owner=worker_id, attempts=ctx.attempt)
    task_result = scheduler_backend._result_from_row(row)
    the_task = task_result.task
    sender = type(scheduler_backend)
    task_started.send(sender, task_result=task_result)
    try:
        if the_task.takes_context:
            raw = the_task.call(TaskContext(task_result=task_result), *args, **kwargs)
        else:
            raw = the_task.call(*args, **kwargs)
        value = normalize_json(raw)
        json.dumps(value, allow_nan=False)
    except BaseException as exc:  # SystemExit too, as the immediate backend; always re-raised
        object.__setattr__(task_result, "status", TaskResultStatus.FAILED)
        object.__setattr__(task_result, "finished_at", clock.now())
        exc_type = type(exc)
        task_result.errors.append(
            TaskError(
                exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
                traceback="".join(traceback.format_exception(exc)),
            )
        )
        task_finished.send(sender, task_result=task_result)
        raise
    if is_mutation:
        # Actions have both already; a mutation's are kept only if it commits.
        rows.filter(state=State.PENDING).update(owner=worker_id, started_time=started)
    object.__setattr__(task_result, "status", TaskResultStatus.SUCCESSFUL)
    object.__setattr__(task_result, "finished_at", clock.now())
    object.__setattr__(task_result, "_return_value", value)
    task_finished.send(sender, task_result=task_result)
    # The worker stores what a function returns in the row's ``result``, in
    # the same write that records its success.
    return value
