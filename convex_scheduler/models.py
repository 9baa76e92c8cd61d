"""Scheduled functions and the workers that run them.

State transitions are conditional ``UPDATE`` statements on the QuerySet that
return how many rows changed: a transition that lost a race changes nothing
and says so, instead of overwriting what another process decided.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, models, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import ExpressionWrapper, F, Q
from django.db.models.expressions import Combinable
from django.db.models.functions import Now
from django.db.models.options import Options
from django.utils.translation import gettext_lazy as _

from . import clock
from .compat import can_return_from_insert, quote_name
from .indexes import PartialIndex
from .retries import Retry

#: The exact error an action gets when its worker died while running it.
ORPHANED_ACTION_ERROR = "Transient error while executing action"
#: The error of a mutation that killed its worker process ``MAX_CRASHES`` times.
CRASHED_ERROR = "Worker process died while running this function ({crashes} times)"


class State(models.TextChoices):
    """Where a scheduled function is in its life (Convex's spellings)."""

    PENDING = "pending", _("pending")
    """Waiting for its due time, or due and waiting for a worker."""
    IN_PROGRESS = "inProgress", _("in progress")
    """An action that has started. Mutations never show this state: they go
    from pending to their outcome in one transaction."""
    SUCCESS = "success", _("success")
    """Ran to completion."""
    FAILED = "failed", _("failed")
    """Raised a developer error, or (actions only) was lost with its worker."""
    CANCELED = "canceled", _("canceled")
    """Canceled before it started, or while running as an action."""


FINISHED_STATES = (State.SUCCESS, State.FAILED, State.CANCELED)


class Kind(models.TextChoices):
    """The guarantee a function runs with."""

    MUTATION = "mutation", _("mutation")
    """Exactly once, in one transaction, retried on transient database errors."""
    ACTION = "action", _("action")
    """At most once, outside any transaction, never retried."""


#: Columns written by :meth:`ScheduledFunctionQuerySet.insert_one`, in order.
_INSERT_FIELDS = (
    "name",
    "kind",
    "args",
    "state",
    "scheduled_time",
    "next_run_time",
    "creation_time",
    "completed_time",
    "parent",
    "started_time",
    "error",
    "attempts",
    "owner",
    "crashes",
    "priority",
    "pool",
    "cron",
    "retry",
    "on_complete",
    "on_complete_context",
)
_insert_sql_cache: dict[tuple[str, str, bool], str] = {}


class ScheduledFunctionQuerySet(models.QuerySet):
    def insert_one(
        self, *, args_json: str, notify_channel: str | None = None, **values: Any
    ) -> int:
        """Insert one row with a statement compiled once per database; return its id.

        Scheduling is the hot path of every caller, so this skips the model
        instance, ``save()`` and its signals, and takes the arguments already
        encoded (validation measured them anyway). On PostgreSQL,
        ``notify_channel`` adds ``pg_notify`` to the same statement: the
        notification is delivered when the transaction commits, once per
        transaction, at no extra round trip.
        """
        connection = connections[self.db]
        meta = self.model._meta
        notify = notify_channel is not None and connection.vendor == "postgresql"
        key = (self.db, connection.vendor, notify)
        sql = _insert_sql_cache.get(key)
        if sql is None:
            sql = _insert_sql_cache[key] = _build_insert_sql(connection, meta, notify)
        params: list[Any] = []
        for name in _INSERT_FIELDS:
            field = _concrete_field(meta, name)
            if name == "args":
                params.append(args_json)
            else:
                value = values[field.attname] if field.attname in values else field.get_default()
                params.append(field.get_db_prep_save(value, connection))
        if notify:
            params.append(notify_channel)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            if can_return_from_insert(connection):
                return cursor.fetchone()[0]
            return cursor.lastrowid

    def pending(self) -> ScheduledFunctionQuerySet:
        return self.filter(state=State.PENDING)

    def in_progress(self) -> ScheduledFunctionQuerySet:
        return self.filter(state=State.IN_PROGRESS)

    def finished(self) -> ScheduledFunctionQuerySet:
        return self.filter(state__in=FINISHED_STATES)

    def due(self, now: datetime) -> ScheduledFunctionQuerySet:
        """Pending rows whose due time has come, oldest first (ties by creation order)."""
        # next_run_time is non-null exactly when the row is pending (a
        # constraint), so this is a range scan on the queue index alone.
        return self.filter(next_run_time__lte=now).order_by("next_run_time", "id")

    def expired(self, now: datetime, retention: timedelta) -> ScheduledFunctionQuerySet:
        """Finished rows whose retention period is over."""
        return self.filter(completed_time__lt=now - retention)

    def next_due_time(self) -> datetime | None:
        """When the earliest pending row becomes due (one index lookup)."""
        return (
            self.filter(next_run_time__isnull=False)
            .order_by("next_run_time")
            .values_list("next_run_time", flat=True)
            .first()
        )

    def delete_expired(
        self,
        now: datetime,
        retention: timedelta,
        batch_size: int,
        max_batches: int | None = None,
    ) -> int:
        """Delete finished rows past retention in batches of ``batch_size``; return how many.

        Each batch is its own statement so a large backlog never holds long
        locks. Pending rows are never deleted.
        """
        deleted = batches = 0
        while max_batches is None or batches < max_batches:
            ids = list(
                self.expired(now, retention).order_by().values_list("pk", flat=True)[:batch_size]
            )
            if not ids:
                break
            deleted += self.filter(pk__in=ids).finished().delete()[0]
            batches += 1
        return deleted

    def _finish(self, now: datetime, changes: dict[str, Any], callbacks: bool | None) -> int:
        """Apply a terminal transition, and schedule the completion callbacks of the
        rows it finished in the same transaction, so each runs exactly once.

        ``callbacks=False`` says the caller knows no row has one (saving a query).
        """
        if callbacks is False:
            return self.update(**changes)
        with transaction.atomic(using=self.db):
            waiting = list(
                self.filter(callback_id__isnull=True)
                .exclude(on_complete="")
                .values_list("pk", flat=True)
            )
            changed = self.update(**changes)
            if waiting:
                ScheduledFunction.objects.using(self.db).filter(pk__in=waiting).schedule_callbacks(now)
        return changed

    def schedule_callbacks(self, now: datetime) -> int:
        """Schedule ``on_complete`` of every finished row here whose callback is not scheduled yet.

        The callback mutation is called as ``callback(ctx, id=…, context=…,
        result=…)`` with the outcome ``{"kind": "success", "return_value": …}``,
        ``{"kind": "failed", "error": "<first line>"}`` or ``{"kind": "canceled"}``.
        Run inside the transaction of the terminal transition.
        """
        from .wakeup import CHANNEL, ring_local_workers

        rows = list(
            self.filter(state__in=FINISHED_STATES, callback_id__isnull=True)
            .exclude(on_complete="")
            .select_for_update()
            .values_list("pk", "state", "result", "error", "on_complete", "on_complete_context")
        )
        manager = ScheduledFunction.objects.using(self.db)
        for pk, state, result, error, callback, context in rows:
            if state == State.SUCCESS:
                outcome: dict[str, Any] = {"kind": "success", "return_value": result}
            elif state == State.FAILED:
                outcome = {"kind": "failed", "error": (error or "").split("\n", 1)[0]}
            else:
                outcome = {"kind": "canceled"}
            args = {"id": pk, "context": context, "result": outcome}
            callback_id = manager.insert_one(
                args_json=json.dumps(args, separators=(",", ":"), ensure_ascii=False),
                notify_channel=CHANNEL,
                name=callback,
                kind=Kind.MUTATION,
                state=State.PENDING,
                scheduled_time=now,
                next_run_time=now,
                creation_time=now,
                parent_id=pk,
            )
            manager.filter(pk=pk).update(callback_id=callback_id)
        if rows:
            ring_local_workers(self.db)
        return len(rows)

    def cancel(self, now: datetime, *, callbacks: bool | None = None) -> int:
        """Cancel what has not finished: pending rows never run, running actions keep
        running but their outcome will not overwrite ``canceled``."""
        return self.filter(state__in=(State.PENDING, State.IN_PROGRESS))._finish(
            now,
            {"state": State.CANCELED, "completed_time": now, "next_run_time": None},
            callbacks,
        )

    def cancel_in_batches(
        self, now: datetime, *, limit: int | None = None, batch_size: int = 1000
    ) -> int:
        """Cancel the unfinished rows here, at most ``batch_size`` per transaction.

        Each batch is its own transaction (a savepoint inside the caller's), so
        a large cancel never holds many locks for long. Returns how many were
        canceled; ``limit`` caps it.
        """
        from .transactions import write_transaction

        canceled = 0
        while limit is None or canceled < limit:
            size = batch_size if limit is None else min(batch_size, limit - canceled)
            with write_transaction(self.db):
                ids = list(
                    self.filter(state__in=(State.PENDING, State.IN_PROGRESS))
                    .order_by("pk")
                    .values_list("pk", flat=True)[:size]
                )
                if not ids:
                    break
                canceled += ScheduledFunction.objects.using(self.db).filter(pk__in=ids).cancel(now)
        return canceled

    def start_action(self, worker_id: str, now: datetime) -> int:
        return self.filter(state=State.PENDING).update(
            state=State.IN_PROGRESS,
            next_run_time=None,
            owner=worker_id,
            started_time=now,
            attempts=F("attempts") + 1,
        )

    def succeed(
        self,
        now: datetime,
        *,
        from_state: str,
        attempts: int | Combinable | None = None,
        result: Any = None,
        callbacks: bool | None = None,
    ) -> int:
        changes: dict[str, Any] = {
            "state": State.SUCCESS,
            "completed_time": now,
            "next_run_time": None,
        }
        if attempts is not None:
            changes["attempts"] = attempts
        if result is not None:
            changes["result"] = result
        return self.filter(state=from_state)._finish(now, changes, callbacks)

    def fail(
        self,
        error: str,
        now: datetime,
        *,
        from_state: str,
        attempts: int | None = None,
        callbacks: bool | None = None,
    ) -> int:
        changes: dict[str, Any] = {
            "state": State.FAILED,
            "error": error,
            "completed_time": now,
            "next_run_time": None,
        }
        if attempts is not None:
            changes["attempts"] = attempts
        return self.filter(state=from_state)._finish(now, changes, callbacks)

    def retry_action(self, error: str, until: datetime) -> int:
        """Send a failed attempt of a retrying action back to ``pending`` until ``until``.

        The row stays one row: ``attempts`` already counts the attempt, and
        ``error`` keeps the last error. A cancel that won meanwhile stays.
        """
        return self.filter(state=State.IN_PROGRESS).update(
            state=State.PENDING, error=error, next_run_time=until, owner=""
        )

    def postpone(self, until: datetime, attempts: int) -> int:
        """Move a pending mutation's due time after a transient failure.

        ``scheduled_time`` (what the user asked for) never changes.
        """
        return self.filter(state=State.PENDING).update(
            next_run_time=until, attempts=attempts, owner=""
        )

    def record_crash(
        self, now: datetime, *, retry_at: datetime, max_crashes: int
    ) -> tuple[int, int]:
        """Count a worker crash against the pending mutations among these rows.

        Each gets one more crash and one more attempt and waits until
        ``retry_at`` (so other rows run first); those that have now crashed
        their worker ``max_crashes`` times fail. Returns ``(counted, failed)``.
        """
        counted = self.filter(state=State.PENDING, kind=Kind.MUTATION).update(
            crashes=F("crashes") + 1,
            attempts=F("attempts") + 1,
            next_run_time=retry_at,
            owner="",  # the dead worker's lease ends here
        )
        failed = 0
        poisoned = self.filter(kind=Kind.MUTATION, crashes__gte=max_crashes)
        for crashes in set(poisoned.pending().values_list("crashes", flat=True)):
            error = CRASHED_ERROR.format(crashes=crashes)
            failed += poisoned.filter(crashes=crashes).fail(error, now, from_state=State.PENDING)
        return counted, failed

    def fail_orphaned_actions(self, dead_worker_ids: Iterable[str], now: datetime) -> int:
        """Fail the running actions of workers that are gone; requeue those that retry.

        An action that opted into retries and has attempts left goes back to
        ``pending`` (after its backoff) instead: its dying worker was one
        failed attempt. Returns how many were failed.
        """
        orphans = self.filter(
            state=State.IN_PROGRESS, kind=Kind.ACTION, owner__in=list(dead_worker_ids)
        )
        for pk, attempts, policy in orphans.filter(retry__isnull=False).values_list(
            "pk", "attempts", "retry"
        ):
            retry = Retry.from_json(policy)
            if attempts < retry.max_attempts:
                until = now + timedelta(milliseconds=retry.backoff_ms(attempts))
                orphans.filter(pk=pk).retry_action(ORPHANED_ACTION_ERROR, until)
        return orphans.fail(ORPHANED_ACTION_ERROR, now, from_state=State.IN_PROGRESS)


def _concrete_field(meta: Options, name: str) -> models.Field:
    field = meta.get_field(name)
    assert isinstance(field, models.Field)  # every column we write is a concrete field
    return field


def _build_insert_sql(connection: BaseDatabaseWrapper, meta: Options, notify: bool) -> str:
    def quote(name: str | None) -> str:
        assert name is not None  # tables and concrete columns always have names
        return quote_name(connection, name)

    columns = ", ".join(quote(_concrete_field(meta, name).column) for name in _INSERT_FIELDS)
    placeholders = ", ".join(
        # psycopg sends the JSON text as text; the column wants jsonb.
        "%s::jsonb" if name == "args" and connection.vendor == "postgresql" else "%s"
        for name in _INSERT_FIELDS
    )
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders})"
    pk = quote(_concrete_field(meta, "id").column)
    if notify:
        notify_sql = f"SELECT {pk}, pg_notify(%s, '') FROM inserted"
        return f"WITH inserted AS ({sql} RETURNING {pk}) {notify_sql}"
    if can_return_from_insert(connection):
        sql = f"{sql} RETURNING {pk}"
    return sql


class ScheduledFunction(models.Model):
    """One call of a registered function, to be run at ``scheduled_time``.

    The ``_scheduled_functions`` table of Convex.
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("function"), max_length=255)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    args = models.JSONField(_("arguments"), default=dict)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.PENDING
    )
    scheduled_time = models.DateTimeField(_("scheduled time"))
    next_run_time = models.DateTimeField(
        _("next run time"),
        null=True,
        blank=True,
        help_text=_("When a worker may next pick it up; empty unless pending."),
    )
    creation_time = models.DateTimeField(_("creation time"), default=clock.now)
    started_time = models.DateTimeField(_("started time"), null=True, blank=True)
    completed_time = models.DateTimeField(_("completed time"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True, default="")
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # No database constraint: retention deletes a finished parent while a
    # child may still be pending, and the link is history, not ownership.
    parent = models.ForeignKey(
        "self",
        verbose_name=_("parent"),
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,  # cs_parent_idx: only rows that have a parent
        related_name="children",
    )
    owner = models.CharField(
        _("worker"),
        max_length=64,
        blank=True,
        default="",
        help_text=_("The worker running this action."),
    )
    crashes = models.PositiveSmallIntegerField(
        _("worker crashes"),
        default=0,
        help_text=_(
            "How many times a worker process died while running it. A function that "
            "crashed its worker runs alone, and fails after MAX_CRASHES."
        ),
    )
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        help_text=_("The django.tasks priority, stored as given; workers do not order by it."),
    )
    pool = models.CharField(
        _("pool"),
        max_length=100,
        blank=True,
        default="",
        help_text=_("The pool whose parallelism limit applies; empty for the default pool."),
    )
    result = models.JSONField(
        _("result"),
        null=True,
        blank=True,
        help_text=_("What the function returned, once it succeeded."),
    )
    # NULL, not "": the unique (cron, scheduled_time) constraint must let the
    # many rows that belong to no cron coexist, which NULLs do on every database.
    cron = models.CharField(  # noqa: DJ001
        _("cron"),
        max_length=200,
        null=True,
        blank=True,
        help_text=_("The cron whose tick this run is; empty for a function scheduled directly."),
    )
    retry = models.JSONField(
        _("retry policy"),
        null=True,
        blank=True,
        help_text=_("An action's opt-in retries: max_attempts, initial_backoff_ms, base."),
    )
    on_complete = models.CharField(
        _("on complete"),
        max_length=255,
        blank=True,
        default="",
        help_text=_("The mutation scheduled, exactly once, when this function finishes."),
    )
    on_complete_context = models.JSONField(
        _("callback context"),
        null=True,
        blank=True,
        help_text=_("Passed to the completion callback as context."),
    )
    callback_id = models.BigIntegerField(
        _("callback"),
        null=True,
        blank=True,
        help_text=_("The id of the completion callback's own row, once scheduled."),
    )

    objects = ScheduledFunctionQuerySet.as_manager()

    class Meta:
        verbose_name = _("scheduled function")
        verbose_name_plural = _("scheduled functions")
        permissions = [
            ("schedule_internal_function", _("Can schedule internal functions from the admin")),
        ]
        ordering = ["-scheduled_time", "-id"]
        # Each index and the queries that need it: docs/internals.rst. The
        # partial ones hold only the rows their queries can match, so writes
        # of the other rows (most inserts, every finish) skip them.
        indexes = [
            # The claim and the idle wait: due rows in queue order.
            PartialIndex(
                fields=["next_run_time", "id"],
                name="cs_due_idx",
                where=Q(next_run_time__isnull=False),
            ),
            # Retention: finished rows by age.
            PartialIndex(
                fields=["completed_time"],
                name="cs_completed_idx",
                where=Q(completed_time__isnull=False),
            ),
            # A function's children: the admin's page, the API's ?parent=.
            PartialIndex(fields=["parent"], name="cs_parent_idx", where=Q(parent__isnull=False)),
            # Pools: running actions per pool (the claim's limit check) and
            # the admin's overview; only the rows of bounded pools.
            PartialIndex(fields=["pool", "state"], name="cs_pool_idx", where=~Q(pool="")),
            # The admin's and the API's default order, and the date hierarchy.
            models.Index(fields=["scheduled_time", "id"], name="cs_scheduled_idx"),
            models.Index(fields=["state", "scheduled_time"], name="cs_state_idx"),
            models.Index(fields=["name", "scheduled_time"], name="cs_name_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(state=State.PENDING, next_run_time__isnull=False)
                    | (~Q(state=State.PENDING) & Q(next_run_time__isnull=True))
                ),
                name="cs_queue_key_iff_pending",
            ),
            models.CheckConstraint(condition=Q(state__in=State.values), name="cs_state_valid"),
            models.CheckConstraint(condition=Q(kind__in=Kind.values), name="cs_kind_valid"),
            # One run per tick of a cron, whatever the number of workers. NULL
            # crons (functions scheduled directly) never collide.
            models.UniqueConstraint(fields=["cron", "scheduled_time"], name="cs_cron_tick_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name} #{self.pk} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in FINISHED_STATES


class Pool(models.Model):
    """A pool with a parallelism limit (``POOLS`` setting): its row is the lock that
    serialises claims of the pool's actions across workers and machines."""

    name = models.CharField(_("name"), max_length=100, primary_key=True)

    class Meta:
        verbose_name = _("pool")
        verbose_name_plural = _("pools")

    def __str__(self) -> str:
        return self.name


class SchedulerWorkerQuerySet(models.QuerySet):
    def alive(self, timeout: float | None = None) -> SchedulerWorkerQuerySet:
        """Workers whose last heartbeat is within ``WORKER_TIMEOUT`` of the database's clock.

        The one liveness rule: the admin, the health command, the metrics and
        the workers themselves all ask it. Database time, because machines'
        clocks disagree.
        """
        from .conf import scheduler_settings

        seconds = scheduler_settings.WORKER_TIMEOUT if timeout is None else timeout
        cutoff = ExpressionWrapper(
            Now() - timedelta(seconds=seconds), output_field=models.DateTimeField()
        )
        return self.filter(last_heartbeat__gte=cutoff)


class SchedulerWorker(models.Model):
    """A running ``runscheduler`` process, kept alive by its heartbeat.

    Other workers use it to tell a slow action from one whose worker is gone.
    """

    id = models.CharField(_("id"), max_length=64, primary_key=True)
    hostname = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    process_start = models.CharField(
        _("process start"),
        max_length=32,
        blank=True,
        default="",
        help_text=_("The kernel's start time of the process, to tell a reused pid apart."),
    )
    started_time = models.DateTimeField(_("started"))
    last_heartbeat = models.DateTimeField(_("last heartbeat"))
    functions = models.JSONField(
        _("functions"),
        default=list,
        blank=True,
        help_text=_(
            "The names of the functions this worker has registered: rows of other names "
            "are left for workers that know them."
        ),
    )

    objects = SchedulerWorkerQuerySet.as_manager()

    class Meta:
        verbose_name = _("scheduler worker")
        verbose_name_plural = _("scheduler workers")
        indexes = [models.Index(fields=["last_heartbeat"], name="cs_worker_heartbeat_idx")]

    def __str__(self) -> str:
        return f"{self.hostname}:{self.pid}"


class CronSource(models.TextChoices):
    """Where a cron was defined, and so who may change it."""

    CODE = "code", _("code")
    """Declared in an app's ``crons`` module: the code is the source of truth,
    applied by each worker when it starts. Read-only in the admin."""
    RUNTIME = "runtime", _("run time")
    """Created with ``crons.register()`` or the admin; kept until deleted."""


class ScheduleType(models.TextChoices):
    """How a cron's ticks are computed."""

    INTERVAL = "interval", _("interval")
    """Every ``interval``, each tick counted from the previous tick."""
    CRON = "cron", _("cron expression")
    """The times a 5-field cron ``expression`` matches, in the cron's time zone."""


class CronJobQuerySet(models.QuerySet):
    def due(self, now: datetime) -> CronJobQuerySet:
        """Crons with a tick at or before ``now``, earliest first.

        ``next_tick`` is empty while a cron is paused or removed from code, so
        this is a range scan on the ``next_tick`` index alone.
        """
        return self.filter(next_tick__lte=now).order_by("next_tick", "id")

    def code(self) -> CronJobQuerySet:
        return self.filter(source=CronSource.CODE)

    def runtime(self) -> CronJobQuerySet:
        return self.filter(source=CronSource.RUNTIME)

    def active(self) -> CronJobQuerySet:
        """Crons that still exist: every run-time cron, and the code crons still in code."""
        return self.filter(removed_time__isnull=True)

    def pause(self, now: datetime) -> int:
        """Pause what is not paused yet: no more runs until resumed. Returns the count."""
        return self.filter(paused=False).update(paused=True, next_tick=None, updated_time=now)


class CronJob(models.Model):
    """A recurring function: each tick of its schedule becomes one :class:`ScheduledFunction`.

    The run of a tick is an ordinary scheduled function whose ``cron`` names
    this cron and whose ``scheduled_time`` is the tick.
    """

    id = models.BigAutoField(primary_key=True)
    name = models.CharField(_("name"), max_length=200, unique=True)
    function = models.CharField(_("function"), max_length=255)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    args = models.JSONField(_("arguments"), default=dict, blank=True)
    schedule_type = models.CharField(
        _("schedule type"), max_length=16, choices=ScheduleType.choices
    )
    interval = models.DurationField(
        _("interval"),
        null=True,
        blank=True,
        help_text=_("Time between two ticks, for an interval cron."),
    )
    expression = models.CharField(
        _("cron expression"),
        max_length=100,
        blank=True,
        default="",
        help_text=_("Minute, hour, day of month, month and day of week, as in crontab."),
    )
    timezone = models.CharField(
        _("time zone"),
        max_length=64,
        help_text=_("The IANA time zone the expression is read in."),
    )
    source = models.CharField(_("source"), max_length=16, choices=CronSource.choices)
    paused = models.BooleanField(_("paused"), default=False)
    next_tick = models.DateTimeField(
        _("next tick"),
        null=True,
        blank=True,
        help_text=_("When the next run is due; empty while paused or removed from code."),
    )
    last_tick = models.DateTimeField(_("last tick"), null=True, blank=True)
    # No database constraint: retention deletes finished runs.
    last_run = models.ForeignKey(
        ScheduledFunction,
        verbose_name=_("last run"),
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    run_count = models.PositiveIntegerField(_("runs started"), default=0)
    missed_count = models.PositiveIntegerField(
        _("missed ticks"),
        default=0,
        help_text=_("Ticks skipped because no worker was running at the time."),
    )
    overlap_count = models.PositiveIntegerField(
        _("overlapping ticks"),
        default=0,
        help_text=_("Ticks skipped because the previous run had not finished."),
    )
    created_time = models.DateTimeField(_("created"), default=clock.now)
    updated_time = models.DateTimeField(_("updated"), default=clock.now)
    removed_time = models.DateTimeField(
        _("removed from code"),
        null=True,
        blank=True,
        help_text=_("When a worker found this code cron gone from the code; it no longer runs."),
    )

    objects = CronJobQuerySet.as_manager()

    class Meta:
        verbose_name = _("cron")
        verbose_name_plural = _("crons")
        ordering = ["name"]
        indexes = [models.Index(fields=["next_tick"], name="cs_cron_next_tick_idx")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(paused=False, removed_time__isnull=True, next_tick__isnull=False)
                    | ((Q(paused=True) | Q(removed_time__isnull=False)) & Q(next_tick__isnull=True))
                ),
                name="cs_cron_next_tick_iff_active",
            ),
            models.CheckConstraint(
                condition=(
                    Q(schedule_type=ScheduleType.INTERVAL, interval__isnull=False, expression="")
                    | (
                        Q(schedule_type=ScheduleType.CRON, interval__isnull=True)
                        & ~Q(expression="")
                    )
                ),
                name="cs_cron_schedule_valid",
            ),
            models.CheckConstraint(
                condition=Q(source__in=CronSource.values), name="cs_cron_source_valid"
            ),
            models.CheckConstraint(condition=Q(kind__in=Kind.values), name="cs_cron_kind_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_code(self) -> bool:
        return self.source == CronSource.CODE
