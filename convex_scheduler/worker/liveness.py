"""Which workers are alive, and what happens to the work of those that are not.

A worker registers itself with the names of the functions it knows and beats
a heartbeat in database time; the mutations it claims are leased to it
(their ``owner``) until they finish. Another worker that finds it dead:

* fails its running actions (never re-run: at most once);
* counts a crash against the mutations it was running, which then run
  alone, and fail after ``MAX_CRASHES`` (poison isolation);

and every worker fails rows whose function no live worker has registered for
``UNKNOWN_FUNCTION_TIMEOUT``, warning once per name before that.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

from django.db import connections
from django.db.models import Q
from django.db.models.functions import Now

from .. import clock
from ..conf import scheduler_settings
from ..exceptions import Transience, classify_error
from ..models import Kind, ScheduledFunction, SchedulerWorker, State
from ..signals import actions_orphaned
from ..transactions import write_transaction
from .stats import WorkerStats

logger = logging.getLogger("convex_scheduler")

CLEANUP_BATCHES_PER_TICK = 10


def known_functions_q(functions: set[str] | list[str]) -> Q:
    """Rows whose function is one of ``functions`` (``"kind:name"`` strings)."""
    by_kind: dict[str, list[str]] = {}
    for item in functions:
        kind, _, name = item.partition(":")
        by_kind.setdefault(kind, []).append(name)
    query = Q(pk__in=[])
    for kind, names in by_kind.items():
        query |= Q(kind=kind, name__in=names)
    return query


class Liveness:
    """This worker's registration and heartbeat, and recovery from dead workers."""

    def __init__(
        self, *, worker_id: str, using: str, stats: WorkerStats, functions: list[str]
    ) -> None:
        self.id = worker_id
        self.using = using
        self.stats = stats
        self.functions = functions
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self._warned: set[tuple[str, str]] = set()
        # Heartbeats of other workers are judged only after this worker has
        # itself reached the database for WORKER_TIMEOUT: after an outage that
        # stopped everyone's heartbeats, live workers get time to beat again.
        self.healthy_since: float | None = time.monotonic()

    def _workers(self) -> Any:
        return SchedulerWorker.objects.using(self.using)

    def _functions(self) -> Any:
        return ScheduledFunction.objects.using(self.using)

    # Registration ------------------------------------------------------

    def register(self) -> None:
        self._workers().create(
            id=self.id,
            hostname=self.hostname[:255],
            pid=self.pid,
            process_start=start_time_of(self.pid),
            started_time=Now(),
            last_heartbeat=Now(),
            functions=self.functions,
        )

    def deregister(self, *, forced: bool) -> None:
        connection = connections[self.using]
        try:
            if forced and connection.vendor == "sqlite":
                # An abandoned mutation's thread may hold the write lock until
                # this process exits: do not wait the whole busy timeout for it.
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA busy_timeout = 2000")
            now = clock.now()
            # Anything still running is abandoned now (forced stop): say so
            # at once rather than leaving it for another worker's timeout.
            abandoned = self._functions().fail_orphaned_actions([self.id], now)
            if abandoned:
                send_robust(actions_orphaned, count=abandoned, worker_ids=[self.id])
            leased = self._functions().pending().filter(owner=self.id)
            if not forced:
                leased.update(owner="")  # leased but not run
            elif leased.exists():
                # Abandoned mid-batch: the registration stays, so that the next
                # worker finds this process dead and counts the crash.
                return
            self._workers().filter(pk=self.id).delete()
        except Exception:
            logger.exception("could not deregister worker id=%s", self.id)

    def beat(self) -> None:
        """Renew the heartbeat (database time); register again if another worker removed us."""
        try:
            if not self._workers().filter(pk=self.id).update(last_heartbeat=Now()):
                # Taken for dead (e.g. after a long network cut): our actions
                # were failed then. Register again.
                self.register()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            logger.warning("heartbeat failed: %s", exc)
            self.healthy_since = None
            close_connection(self.using)
        else:
            if self.healthy_since is None:
                self.healthy_since = time.monotonic()

    # Recovery -----------------------------------------------------------

    def housekeeping(self, claimable: Q) -> None:
        """Recover dead workers' work, fail long-unknown functions, delete expired rows.

        Never raises on a lost database: it runs again at the next heartbeat.
        """
        try:
            self.stats.orphans_failed += self.recover()
            self.stats.unknown_failed += self.fail_unknown_functions()
            self.warn_unknown_functions(claimable)
            self.stats.deleted += self._functions().delete_expired(
                clock.now(),
                scheduler_settings.RETENTION,
                scheduler_settings.CLEANUP_BATCH_SIZE,
                max_batches=CLEANUP_BATCHES_PER_TICK,
            )
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            logger.warning("housekeeping failed: %s", exc)
            close_connection(self.using)

    def dead_workers(self) -> set[str]:
        """Workers that are gone: unregistered owners, dead local processes, stale heartbeats.

        A stale heartbeat (not :meth:`SchedulerWorkerQuerySet.alive`) is
        judged only once this worker has itself been connected for
        ``WORKER_TIMEOUT``.
        """
        workers = self._workers().exclude(pk=self.id)
        # Owners are read before registrations: a worker registers before it
        # claims, so an owner seen here whose registration is then missing
        # is really gone, never one that registered in between.
        functions = self._functions()
        owners = set(
            functions.in_progress()
            .filter(kind=Kind.ACTION)
            .exclude(owner=self.id)
            .values_list("owner", flat=True)
            .distinct()
        )
        # Leased mutations are due rows (a postponed row loses its lease), so
        # this reads along the due index only.
        owners.update(
            functions.due(clock.now())
            .order_by()
            .exclude(owner__in=("", self.id))
            .values_list("owner", flat=True)
            .distinct()
        )
        dead = owners - set(workers.filter(pk__in=owners).values_list("pk", flat=True))
        for pk, pid, started in workers.filter(hostname=self.hostname).values_list(
            "pk", "pid", "process_start"
        ):
            if not process_alive(pid, started):
                dead.add(pk)
        timeout = scheduler_settings.WORKER_TIMEOUT
        if self.healthy_since is not None and time.monotonic() - self.healthy_since >= timeout:
            alive = SchedulerWorker.objects.using(self.using).alive().values("pk")
            dead.update(workers.exclude(pk__in=alive).values_list("pk", flat=True))
        return dead

    def recover(self) -> int:
        """Fail dead workers' actions and count the crash against their mutations.

        Returns how many orphaned actions were failed.
        """
        dead = self.dead_workers()
        if not dead:
            return 0
        now = clock.now()
        functions = self._functions()
        failed_actions = functions.fail_orphaned_actions(dead, now)
        # A registration goes only once all its leases were counted: while the
        # dying transaction still holds some rows (the server has not noticed
        # the death yet), they are skipped, and a later pass counts them.
        counted = [worker_id for worker_id in sorted(dead) if self._count_crash(worker_id, now)]
        self._workers().filter(pk__in=counted).delete()
        if failed_actions:
            send_robust(actions_orphaned, count=failed_actions, worker_ids=sorted(dead))
        return failed_actions

    def _count_crash(self, worker_id: str, now: Any) -> bool:
        """Count a crash against the pending mutations the dead worker had leased.

        They were claimed (their ``owner`` committed) before they ran, and the
        worker's death rolled their transaction back: one of them killed it,
        or they shared its batch. Each waits a backoff doubling from
        ``UNAVAILABLE_BACKOFF_INITIAL`` (so other due rows run first), then
        runs alone; ``MAX_CRASHES`` crashes fail it. The conditional updates
        make a crash count once however many workers notice it.

        Returns False while some of them are still locked, by the dead
        worker's transaction or by another worker counting them.
        """
        with write_transaction(self.using):
            suspects = self._functions().pending().filter(kind=Kind.MUTATION, owner=worker_id)
            ids = list(suspects.select_for_update(skip_locked=True).values_list("pk", flat=True))
            complete = not suspects.exclude(pk__in=ids).exists()
            if not ids:
                return complete
            rows = self._functions().filter(pk__in=ids)
            crashes = max(rows.values_list("crashes", flat=True), default=0)
            delay = scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL * 2 ** min(crashes, 16)
            counted, failed = rows.record_crash(
                now,
                retry_at=now + timedelta(seconds=min(60.0, delay)),
                max_crashes=scheduler_settings.MAX_CRASHES,
            )
        if counted:
            self.stats.crashes_detected += 1
            logger.warning(
                "worker id=%s died while running mutation(s) %s: counted as a crash "
                "(%s failed after %s crashes); they will run alone",
                worker_id,
                ",".join(map(str, ids)),
                failed,
                scheduler_settings.MAX_CRASHES,
            )
        return complete

    # Functions no worker knows ------------------------------------------

    def known_everywhere(self) -> set[str]:
        known = set(self.functions)
        for names in self._workers().alive().values_list("functions", flat=True):
            known.update(names or [])
        return known

    def fail_unknown_functions(self) -> int:
        """Fail rows due for ``UNKNOWN_FUNCTION_TIMEOUT`` whose function no live worker knows."""
        timeout = float(scheduler_settings.UNKNOWN_FUNCTION_TIMEOUT)
        now = clock.now()
        stale = (
            self._functions()
            .filter(next_run_time__lt=now - timedelta(seconds=timeout))
            .exclude(known_functions_q(self.known_everywhere()))
        )
        failed = 0
        for name, kind in stale.order_by().values_list("name", "kind").distinct()[:100]:
            error = (
                f"No live worker has registered the {kind} {name!r} for {timeout:g} seconds "
                "(setting UNKNOWN_FUNCTION_TIMEOUT). Define it in an installed app's functions "
                "module, which workers import at start-up."
            )
            count = stale.filter(name=name, kind=kind).fail(error, now, from_state=State.PENDING)
            failed += count
            logger.warning("failed %s row(s) of unknown %s %r: %s", count, kind, name, error)
        return failed

    def warn_unknown_functions(self, claimable: Q) -> None:
        """Warn once per name about due rows this worker leaves for others."""
        due = self._functions().due(clock.now()).exclude(claimable)
        for name, kind in due.order_by().values_list("name", "kind").distinct()[:50]:
            if (name, kind) in self._warned:
                continue
            self._warned.add((name, kind))
            logger.warning(
                "rows of the %s %r are due, but this worker has not registered it: leaving "
                "them for workers that have (failed after UNKNOWN_FUNCTION_TIMEOUT if none does)",
                kind,
                name,
            )


def send_robust(signal: Any, **kwargs: Any) -> None:
    """Send a lifecycle signal; a receiver that raises must not take the worker down."""
    for receiver, result in signal.send_robust(sender=ScheduledFunction, **kwargs):
        if isinstance(result, Exception):
            logger.error("signal receiver %r failed", receiver, exc_info=result)


def close_connection(using: str) -> None:
    try:
        connections[using].close()
    except Exception:
        logger.debug("closing a broken connection failed", exc_info=True)


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


def start_time_of(pid: int) -> str:
    stat = _read_stat(pid)
    return stat[1] if stat else ""
