"""The dispatch loop behind ``manage.py runscheduler``.

Guarantees this module protects:

* A mutation is claimed, run and marked ``success`` in one transaction with
  its row locked. If the process dies anywhere in between, the transaction
  rolls back and the row is still ``pending`` for the next worker: the
  function's writes and its outcome commit together or not at all.
* An action is marked ``inProgress`` (with this worker as owner) and
  committed *before* it runs, and its outcome is written only if the row is
  still ``inProgress``. If this worker dies, another worker sees that the
  owner is gone and marks the action ``failed``; it is never run again.

The loop knows nothing of HTTP and talks to the database only through the
ORM on the alias the router picks for :class:`ScheduledFunction`.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import close_old_connections, connections, router, transaction
from django.db.models import DateTimeField, ExpressionWrapper, F
from django.db.models.functions import Now
from django.dispatch import Signal

from . import clock
from .conf import poll_interval_for, scheduler_settings
from .context import ActionContext, MutationContext
from .exceptions import Transience, classify_error
from .models import Kind, ScheduledFunction, ScheduledFunctionQuerySet, SchedulerWorker, State
from .registry import RegisteredFunction, registry
from .signals import actions_orphaned, function_finished, function_retried, function_started
from .transactions import full_jitter, write_transaction
from .wakeup import Doorbell, Listener, doorbell_dir, supports_notify

logger = logging.getLogger("convex_scheduler")

MAX_ERROR_LENGTH = 64 * 1024
CLEANUP_BATCHES_PER_TICK = 10
#: A batch of mutations stops growing once it has run this long (seconds), so
#: one slow mutation does not hold many rows' locks and delay their commit.
BATCH_TIME_BUDGET = 0.05


class _Outcome(enum.Enum):
    RAN = "ran"
    IDLE = "idle"
    BACKOFF = "backoff"


@dataclass
class WorkerStats:
    """Counts of what one worker did since it started."""

    succeeded: int = 0
    failed: int = 0
    canceled: int = 0
    retried: int = 0
    orphans_failed: int = 0
    deleted: int = 0

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.canceled


@dataclass
class _Claimed:
    id: int
    name: str
    kind: str
    args: dict[str, Any]
    attempts: int


_CLAIM_FIELDS = ("id", "name", "kind", "args", "attempts")


class Worker:
    """Claims due scheduled functions and runs them.

    :param concurrency: how many functions run at once (threads, each with
        its own database connection).
    :param poll_interval: the longest an idle thread sleeps before it looks
        for due functions again (seconds).
    :param burst: run everything that is due, including what those runs
        schedule for now, then return.
    :param max_functions: return after this many functions finished.
    :param heartbeat: keep this worker's registration alive from a background
        thread. :mod:`convex_scheduler.testing` turns it off to stay inside
        the test's transaction.

    Each claim is treated as Django treats a request: before it, connections
    are health-checked (``CONN_HEALTH_CHECKS``) and closed when obsolete
    (``CONN_MAX_AGE``), as ``close_old_connections()`` does. A worker run
    inside the caller's transaction (a test calling ``run_due`` or
    ``call_command("runscheduler", "--burst")``) leaves that connection alone.
    """

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        poll_interval: float | None = None,
        burst: bool = False,
        max_functions: int | None = None,
        using: str | None = None,
        heartbeat: bool = True,
    ) -> None:
        self.concurrency = concurrency or scheduler_settings.CONCURRENCY
        self.burst = burst
        self.max_functions = max_functions
        self.using = using or router.db_for_write(ScheduledFunction)
        self.vendor = connections[self.using].vendor
        self.poll_interval = (
            poll_interval_for(self.vendor) if poll_interval is None else poll_interval
        )
        self.listens = not burst and supports_notify(self.using)
        self.heartbeat = heartbeat
        self.id = uuid.uuid4().hex
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.stats = WorkerStats()
        #: Set when a runner thread died of an unexpected error.
        self.crashed = False
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._changed = threading.Event()
        self._progress = threading.Condition()
        self._active = 0
        self._generation = 0
        #: Functions claimed and run so far, and those claimed by threads
        #: that are still running them (``max_functions`` counts both).
        self._started = 0
        self._reserved = 0
        self._budget = threading.Lock()
        self._calling_thread = threading.current_thread()
        self._recycle_connections = True
        self._wake = threading.Condition()
        self._wake_seq = 0
        # Heartbeats of other workers are judged only after this worker has
        # itself reached the database for WORKER_TIMEOUT: after an outage that
        # stopped everyone's heartbeats, live workers get time to beat again.
        self._healthy_since: float | None = time.monotonic()

    # Lifecycle -----------------------------------------------------------

    def run(self) -> WorkerStats:
        """Run until stopped (or, with ``burst``, until nothing is due)."""
        # Decided once: runner threads have connections of their own, and the
        # calling thread's connection is ours to recycle unless the caller
        # has a transaction open on it.
        self._recycle_connections = self._outside_transaction()
        if self._recycle_connections:
            close_old_connections()
        if not self._register_with_backoff():
            return self.stats
        try:
            self.housekeeping()
            if self.concurrency == 1 and self.burst:
                self._run_inline()
            else:
                self._run_threads()
        finally:
            self._deregister()
        return self.stats

    def _outside_transaction(self) -> bool:
        try:
            return transaction.get_autocommit(using=self.using)
        except Exception:
            # Not even connected, so certainly not inside a transaction.
            return True

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; finish what is running. ``force`` abandons running work."""
        self._stopping.set()
        if force:
            self._forced.set()
        self._changed.set()
        with self._progress:
            self._progress.notify_all()
        self.wake()

    def wake(self) -> None:
        """Make idle runner threads look for due functions now."""
        with self._wake:
            self._wake_seq += 1
            self._wake.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _run_inline(self) -> None:
        beat = None
        if self.heartbeat:
            beat = threading.Thread(target=self._heartbeat_thread, daemon=True)
            beat.start()
        try:
            self._runner_loop()
        finally:
            self._stopping.set()
            self._changed.set()
            if beat is not None:
                beat.join()

    def _heartbeat_thread(self) -> None:
        try:
            while not self._changed.wait(scheduler_settings.HEARTBEAT_INTERVAL):
                close_old_connections()
                self._beat()
        finally:
            connections.close_all()

    def _run_threads(self) -> None:
        threads = [
            threading.Thread(
                target=self._runner_thread, name=f"convex-scheduler-{index}", daemon=True
            )
            for index in range(self.concurrency)
        ]
        listener_stopped = threading.Event()
        if self.listens:
            threads.append(Listener(self.using, self.wake, listener_stopped))
        if not self.burst and not self.listens:
            try:
                threads.append(
                    Doorbell(doorbell_dir(self.using), self.id, self.wake, listener_stopped)
                )
            except OSError as exc:
                logger.warning("no local wake-up socket (polling instead): %s", exc)
        for thread in threads:
            thread.start()
        runners = threads[: self.concurrency]
        grace_deadline = None
        last_beat = last_status = time.monotonic()
        interval = scheduler_settings.HEARTBEAT_INTERVAL
        while any(thread.is_alive() for thread in runners):
            if self._forced.is_set():
                break
            if self._stopping.is_set() and grace_deadline is None:
                grace_deadline = time.monotonic() + scheduler_settings.SHUTDOWN_GRACE_PERIOD
                logger.info(
                    "stopping: finishing running functions (grace %ss)",
                    scheduler_settings.SHUTDOWN_GRACE_PERIOD,
                )
            timeout = max(0.0, last_beat + interval - time.monotonic())
            if grace_deadline is not None:
                remaining = grace_deadline - time.monotonic()
                if remaining <= 0:
                    logger.warning("grace period over: abandoning running functions")
                    self._forced.set()
                    break
                timeout = min(timeout, remaining)
            self._changed.wait(timeout)
            self._changed.clear()
            if time.monotonic() - last_beat >= interval:
                last_beat = time.monotonic()
                if self._recycle_connections:
                    close_old_connections()
                self._beat()
                self.housekeeping()
            if time.monotonic() - last_status >= scheduler_settings.STATUS_INTERVAL:
                last_status = time.monotonic()
                self._log_status()
        listener_stopped.set()
        for thread in threads[self.concurrency :]:
            thread.join(timeout=2)

    def _runner_thread(self) -> None:
        try:
            self._runner_loop()
        except Exception:
            logger.exception("worker thread crashed")
            self.crashed = True
            self.stop()
        finally:
            connections.close_all()
            self._changed.set()

    def _runner_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            if self.max_functions is not None and self._started >= self.max_functions:
                self.stop()
                break
            with self._progress:
                generation = self._generation
                self._active += 1
            wake_seq = self._wake_seq
            outcome = _Outcome.BACKOFF
            try:
                outcome = self._run_next()
            finally:
                with self._progress:
                    self._active -= 1
                    if outcome is _Outcome.RAN:
                        self._generation += 1
                    self._progress.notify_all()
            if outcome is _Outcome.RAN:
                failures = 0
                if self.concurrency > 1:
                    # What it ran may have scheduled more for now.
                    self.wake()
                continue
            if outcome is _Outcome.BACKOFF:
                failures += 1
                self._forced.wait(
                    full_jitter(
                        failures,
                        scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                        max(self.poll_interval, 5.0),
                    )
                )
                continue
            failures = 0
            if self.burst:
                with self._progress:
                    # Nothing was due when we looked, and no run finished since
                    # then that could have scheduled more: the burst is over.
                    if self._active == 0 and self._generation == generation:
                        self._stopping.set()
                        self._changed.set()
                        self._progress.notify_all()
                        break
                    self._progress.wait(self.poll_interval)
                continue
            self._idle_wait(wake_seq)

    def _idle_wait(self, wake_seq: int) -> None:
        timeout = self.poll_interval
        try:
            next_due = ScheduledFunction.objects.using(self.using).next_due_time()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            next_due = None
        if next_due is not None:
            timeout = min(timeout, max(0.0, (next_due - clock.now()).total_seconds()))
        if timeout > 0:
            with self._wake:
                # A wake-up since we last looked means look again at once.
                if self._wake_seq == wake_seq and not self._stopping.is_set():
                    self._wake.wait(timeout)

    # Registration and housekeeping -------------------------------------

    def _register_with_backoff(self) -> bool:
        """Register, waiting out a database that is not reachable yet; False if stopped."""
        registered, _ = self._until_database_answers(
            self._register, "registering the worker", self._stopping
        )
        return registered

    def _until_database_answers(
        self, operation: Callable[[], Any], what: str, stop: threading.Event
    ) -> tuple[bool, Any]:
        """Run ``operation`` until it stops failing with transient database errors.

        Returns ``(True, result)``, or ``(False, None)`` if ``stop`` was set
        while waiting. Any other error is raised.
        """
        failures = 0
        while True:
            try:
                return True, operation()
            except Exception as exc:
                if classify_error(exc) is Transience.PERMANENT:
                    raise
                failures += 1
                self._close_connection()
                delay = full_jitter(failures, scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL, 30.0)
                logger.warning("%s failed, retrying in %.1fs: %s", what, delay, exc)
                if stop.wait(delay):
                    return False, None

    def _register(self) -> None:
        SchedulerWorker.objects.using(self.using).create(
            id=self.id,
            hostname=self.hostname[:255],
            pid=self.pid,
            process_start=_process_start(self.pid),
            started_time=Now(),
            last_heartbeat=Now(),
        )
        settings = connections[self.using].settings_dict
        logger.info(
            "worker started id=%s database=%s (%s %s) concurrency=%s wake-up=%s%s",
            self.id,
            self.using,
            self.vendor,
            settings.get("NAME"),
            self.concurrency,
            ("LISTEN/NOTIFY" if self.listens else "local doorbell")
            + f", polling every {self.poll_interval}s",
            " burst" if self.burst else "",
        )
        if self.vendor != "sqlite" and settings.get("CONN_MAX_AGE") == 0:
            logger.warning(
                "DATABASES[%r]['CONN_MAX_AGE'] is 0: like a request, every claim opens a new "
                "connection. Set it to None (or seconds) for the worker to keep its "
                "connections; see 'Workers in production' in the docs.",
                self.using,
            )

    def _deregister(self) -> None:
        try:
            now = clock.now()
            # Anything still running is abandoned now (forced stop): say so
            # at once rather than leaving it for another worker's timeout.
            abandoned = ScheduledFunction.objects.using(self.using).fail_orphaned_actions(
                [self.id], now
            )
            if abandoned:
                _send(actions_orphaned, count=abandoned, worker_ids=[self.id])
            SchedulerWorker.objects.using(self.using).filter(pk=self.id).delete()
        except Exception:
            logger.exception("could not deregister worker id=%s", self.id)
        logger.info(
            "worker stopped id=%s succeeded=%s failed=%s canceled=%s retried=%s",
            self.id,
            self.stats.succeeded,
            self.stats.failed,
            self.stats.canceled,
            self.stats.retried,
        )

    def _beat(self) -> None:
        try:
            # Database time, not ours: machines' clocks may disagree.
            updated = (
                SchedulerWorker.objects.using(self.using)
                .filter(pk=self.id)
                .update(last_heartbeat=Now())
            )
            if not updated:
                # Another worker took us for dead (e.g. after a long network
                # cut); our actions were failed then. Register again.
                self._register()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            logger.warning("heartbeat failed: %s", exc)
            self._healthy_since = None
            self._close_connection()
        else:
            if self._healthy_since is None:
                self._healthy_since = time.monotonic()

    def _log_status(self) -> None:
        try:
            next_due = ScheduledFunction.objects.using(self.using).next_due_time()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            next_due = None
        lag = max(0.0, (clock.now() - next_due).total_seconds()) if next_due else 0.0
        logger.info(
            "status succeeded=%s failed=%s canceled=%s retried=%s orphans_failed=%s lag=%.3fs",
            self.stats.succeeded,
            self.stats.failed,
            self.stats.canceled,
            self.stats.retried,
            self.stats.orphans_failed,
            lag,
        )

    def housekeeping(self) -> None:
        """Fail orphaned actions and delete expired rows; never raises on a lost database."""
        try:
            self.stats.orphans_failed += self.recover_orphaned_actions()
            self.stats.deleted += ScheduledFunction.objects.using(self.using).delete_expired(
                clock.now(),
                scheduler_settings.RETENTION,
                scheduler_settings.CLEANUP_BATCH_SIZE,
                max_batches=CLEANUP_BATCHES_PER_TICK,
            )
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            logger.warning("housekeeping failed: %s", exc)
            self._close_connection()

    def recover_orphaned_actions(self) -> int:
        """Mark ``failed`` every running action whose worker is gone.

        A worker is gone when its registration is missing, when it ran on this
        host and its process no longer exists, or when its heartbeat (database
        time) is older than ``WORKER_TIMEOUT``. The last rule is applied only
        once this worker has itself been connected for ``WORKER_TIMEOUT``.
        """
        functions = ScheduledFunction.objects.using(self.using)
        workers = SchedulerWorker.objects.using(self.using).exclude(pk=self.id)
        # Owners are read before registrations: a worker registers before it
        # claims, so an owner seen here whose registration is then missing
        # is really gone, never one that registered in between.
        owners = set(
            functions.in_progress()
            .filter(kind=Kind.ACTION)
            .exclude(owner=self.id)
            .values_list("owner", flat=True)
            .distinct()
        )
        dead = owners - set(workers.filter(pk__in=owners).values_list("pk", flat=True))
        for pk, pid, process_start in workers.filter(hostname=self.hostname).values_list(
            "pk", "pid", "process_start"
        ):
            if not process_alive(pid, process_start):
                dead.add(pk)
        timeout = scheduler_settings.WORKER_TIMEOUT
        if self._healthy_since is not None and time.monotonic() - self._healthy_since >= timeout:
            cutoff = ExpressionWrapper(
                Now() - timedelta(seconds=timeout), output_field=DateTimeField()
            )
            dead.update(workers.filter(last_heartbeat__lt=cutoff).values_list("pk", flat=True))
        if not dead:
            return 0
        failed = functions.fail_orphaned_actions(dead, clock.now())
        workers.filter(pk__in=dead).delete()
        if failed:
            _send(actions_orphaned, count=failed, worker_ids=sorted(dead))
        return failed

    # Running one function ----------------------------------------------

    def _run_next(self) -> _Outcome:
        """Claim what is due and run it: one action, or a batch of mutations.

        While there is a backlog, up to ``BATCH_SIZE`` due mutations run in one
        transaction, each in its own savepoint: a developer error rolls back
        only its own savepoint, and the batch commits (writes and ``success``
        states together) once. A transient error rolls back the whole batch;
        the mutation that hit it is retried alone and the rest are claimed
        again. Actions are never batched: each commits ``inProgress`` alone.
        """
        if self._recycle_connections or threading.current_thread() is not self._calling_thread:
            # What Django does around every request.
            close_old_connections()
        limit = self._reserve(scheduler_settings.BATCH_SIZE)
        if limit == 0:
            return _Outcome.IDLE
        used = 0
        try:
            outcome, used = self._claim_and_run(limit)
        finally:
            self._settle(limit, used)
        return outcome

    def _claim_and_run(self, limit: int) -> tuple[_Outcome, int]:
        """Claim up to ``limit`` due rows and run them; return the outcome and how many ran."""
        now = clock.now()
        started = time.monotonic()
        current: _Claimed | None = None
        current_entry: RegisteredFunction | None = None
        action: tuple[_Claimed, RegisteredFunction] | None = None
        finished: list[tuple[_Claimed, str, str]] = []
        try:
            with write_transaction(self.using):
                batch = self._claim(now, limit)
                if not batch:
                    return _Outcome.IDLE, 0
                first = batch[0]
                entry = registry.get(first.name)
                if entry is None or entry.kind.value != first.kind:
                    error = (
                        f"No {first.kind} is registered under the name {first.name!r} "
                        "in this worker."
                    )
                    self._rows(first.id).fail(
                        error, now, from_state=State.PENDING, attempts=first.attempts + 1
                    )
                    finished.append((first, State.FAILED, error))
                elif first.kind == Kind.ACTION:
                    self._rows(first.id).start_action(self.id, now)
                    action = (first, entry)
                else:
                    succeeded = []
                    for claimed in batch:
                        entry = registry.get(claimed.name)
                        if entry is None or entry.kind.value != Kind.MUTATION:
                            break  # left pending: its lock ends with this transaction
                        if finished and time.monotonic() - started > BATCH_TIME_BUDGET:
                            break
                        current, current_entry = claimed, entry
                        state, error = self._mutation_body(
                            claimed, entry, claimed.attempts + 1, record_success=False
                        )
                        if state == State.SUCCESS:
                            succeeded.append(claimed.id)
                        finished.append((claimed, state, error))
                    current = None
                    if succeeded:
                        ScheduledFunction.objects.using(self.using).filter(
                            pk__in=succeeded
                        ).succeed(clock.now(), from_state=State.PENDING, attempts=F("attempts") + 1)
        except Exception as exc:
            if current is not None and current_entry is not None:
                return self._retry_mutation(current, current_entry, exc, started), 1
            return self._on_loop_error(exc), 0

        for claimed, state, error in finished:
            self._finished(claimed, state, error, claimed.attempts + 1, started)
        if action is not None:
            self._run_action(*action)
        return _Outcome.RAN, len(finished) + (action is not None)

    def _reserve(self, wanted: int) -> int:
        """How many rows this thread may claim now, reserved against ``max_functions``.

        Reserved under a lock before the claim, so threads running at once
        never claim more between them than the budget allows.
        """
        if self.max_functions is None:
            return wanted
        with self._budget:
            granted = max(0, min(wanted, self.max_functions - self._started - self._reserved))
            self._reserved += granted
            if granted == 0 and self._reserved == 0:
                self.stop()
            return granted

    def _settle(self, reserved: int, used: int) -> None:
        if self.max_functions is None:
            self._started += used
            return
        with self._budget:
            self._reserved -= reserved
            self._started += used

    def _claim(self, now: datetime, limit: int) -> list[_Claimed]:
        return [
            _Claimed(*row)
            for row in ScheduledFunction.objects.using(self.using)
            .due(now)
            .select_for_update(skip_locked=True)
            .values_list(*_CLAIM_FIELDS)[:limit]
        ]

    def _lock_pending(self, pk: int) -> _Claimed | None:
        rows = list(
            ScheduledFunction.objects.using(self.using)
            .filter(pk=pk, state=State.PENDING)
            .select_for_update(skip_locked=True)
            .values_list(*_CLAIM_FIELDS)
        )
        return _Claimed(*rows[0]) if rows else None

    def _rows(self, pk: int) -> ScheduledFunctionQuerySet:
        return ScheduledFunction.objects.using(self.using).filter(pk=pk)

    def _mutation_body(
        self,
        claimed: _Claimed,
        entry: RegisteredFunction,
        attempt: int,
        *,
        record_success: bool = True,
    ) -> tuple[str, str]:
        """Run a mutation inside the caller's transaction, which holds its row lock."""
        ctx = MutationContext(claimed.id, claimed.name, attempt)
        _send(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.id,
        )
        try:
            with transaction.atomic(using=self.using):
                entry.func(ctx, **claimed.args)
        except Exception as exc:
            if classify_error(exc) is not Transience.PERMANENT:
                raise  # rolls the whole transaction back; retried by the caller
            error = format_error(exc)
            logger.debug("mutation id=%s raised", claimed.id, exc_info=True)
            self._rows(claimed.id).fail(
                error, clock.now(), from_state=State.PENDING, attempts=attempt
            )
            return State.FAILED, error
        if record_success:
            self._rows(claimed.id).succeed(clock.now(), from_state=State.PENDING, attempts=attempt)
        return State.SUCCESS, ""

    def _retry_mutation(
        self, claimed: _Claimed, entry: RegisteredFunction, exc: Exception, started: float
    ) -> _Outcome:
        attempt = claimed.attempts + 1
        conflicts = 0
        while True:
            transience = classify_error(exc)
            if transience is Transience.PERMANENT:
                # Not the function (its errors are caught in _mutation_body):
                # recording the outcome itself failed. Leave the row pending.
                logger.exception("could not record the outcome of id=%s", claimed.id, exc_info=exc)
                self._close_connection()
                return _Outcome.BACKOFF
            self.stats.retried += 1
            if transience is Transience.UNAVAILABLE:
                self._close_connection()
                delay = full_jitter(
                    attempt,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    scheduler_settings.UNAVAILABLE_BACKOFF_MAX,
                )
                try:
                    self._rows(claimed.id).postpone(clock.now() + _seconds(delay), attempts=attempt)
                except Exception as postpone_exc:
                    # The row keeps its due time; whoever reaches the
                    # database first runs it.
                    logger.warning("could not postpone id=%s: %s", claimed.id, postpone_exc)
                    self._close_connection()
                self._signal_retry(claimed, attempt, exc, delay, in_place=False)
                return _Outcome.BACKOFF
            conflicts += 1
            delay = full_jitter(
                conflicts,
                scheduler_settings.CONFLICT_BACKOFF_INITIAL,
                scheduler_settings.CONFLICT_BACKOFF_MAX,
            )
            self._signal_retry(claimed, attempt, exc, delay, in_place=True)
            if self._forced.wait(delay):
                return _Outcome.RAN
            attempt += 1
            try:
                with write_transaction(self.using):
                    locked = self._lock_pending(claimed.id)
                    if locked is None:
                        # Canceled meanwhile, or another worker has it.
                        return _Outcome.RAN
                    state, error = self._mutation_body(locked, entry, attempt)
            except Exception as retry_exc:
                exc = retry_exc
                continue
            self._finished(claimed, state, error, attempt, started)
            return _Outcome.RAN

    def _run_action(self, claimed: _Claimed, entry: RegisteredFunction) -> None:
        attempt = claimed.attempts + 1
        ctx = ActionContext(claimed.id, claimed.name, attempt)
        started = time.monotonic()
        _send(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.id,
        )
        error = ""
        try:
            entry.func(ctx, **claimed.args)
        except Exception as exc:
            logger.debug("action id=%s raised", claimed.id, exc_info=True)
            error = format_error(exc)
        state = self._record_action_outcome(claimed.id, error)
        self._finished(claimed, state, error, attempt, started)

    def _record_action_outcome(self, pk: int, error: str) -> str:
        rows = self._rows(pk)

        def record() -> str:
            if error:
                changed = rows.fail(error, clock.now(), from_state=State.IN_PROGRESS)
            else:
                changed = rows.succeed(clock.now(), from_state=State.IN_PROGRESS)
            if changed:
                return State.FAILED if error else State.SUCCESS
            # A cancel (or an orphan sweep after a long stall) won.
            return rows.values_list("state", flat=True).first() or State.CANCELED

        recorded, state = self._until_database_answers(
            record, f"recording the outcome of action id={pk}", self._forced
        )
        return state if recorded else State.IN_PROGRESS

    def _finished(
        self, claimed: _Claimed, state: str, error: str, attempt: int, started: float
    ) -> None:
        if state == State.SUCCESS:
            self.stats.succeeded += 1
        elif state == State.FAILED:
            self.stats.failed += 1
        elif state == State.CANCELED:
            self.stats.canceled += 1
        _send(
            function_finished,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            state=state,
            error=error,
            attempt=attempt,
            duration=time.monotonic() - started,
        )

    def _signal_retry(
        self, claimed: _Claimed, attempt: int, exc: BaseException, delay: float, *, in_place: bool
    ) -> None:
        _send(
            function_retried,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            attempt=attempt,
            error=exc,
            delay=delay,
            in_place=in_place,
        )

    def _on_loop_error(self, exc: Exception) -> _Outcome:
        if classify_error(exc) is Transience.PERMANENT:
            raise exc
        logger.warning("database error while claiming, backing off: %s", exc)
        self._close_connection()
        return _Outcome.BACKOFF

    def _close_connection(self) -> None:
        try:
            connections[self.using].close()
        except Exception:
            logger.debug("closing a broken connection failed", exc_info=True)


def _send(signal: Signal, **kwargs: Any) -> None:
    # A receiver that raises must not take the worker down with it.
    for receiver, result in signal.send_robust(sender=ScheduledFunction, **kwargs):
        if isinstance(result, Exception):
            logger.error("signal receiver %r failed", receiver, exc_info=result)


def format_error(exc: BaseException) -> str:
    """The error text stored for a failed function: the message, then the traceback."""
    message = f"{type(exc).__name__}: {exc}"
    trace = "".join(traceback.format_exception(exc))
    text = f"{message}\n\n{trace}"
    return text[:MAX_ERROR_LENGTH]


def process_alive(pid: int, process_start: str = "") -> bool:
    """Whether the process ``pid`` on this host is still the one that registered."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _read_stat(pid)
    if stat is None:
        return True
    state, start = stat
    if state in ("Z", "X"):
        return False
    return not (process_start and start != process_start)


def _read_stat(pid: int) -> tuple[str, str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], fields[19]


def _process_start(pid: int) -> str:
    stat = _read_stat(pid)
    return stat[1] if stat else ""


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
