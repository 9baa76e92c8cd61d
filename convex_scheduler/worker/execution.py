"""Claiming due rows and handing them to the runners; reporting what finished.

A claim takes one action (:mod:`.actions`) or a batch of mutations
(:mod:`.mutations`) of functions this worker has registered. Whatever a
function raises (any ``BaseException``) or returns is that function's
outcome; the worker goes on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from .. import clock
from ..conf import scheduler_settings
from ..exceptions import Transience, classify_error
from ..models import Kind, Pool, ScheduledFunction, ScheduledFunctionQuerySet, State
from ..registry import RegisteredFunction, registry
from ..signals import function_finished, function_retried
from ..transactions import commit_without_waiting_for_disk, write_transaction
from .actions import ActionRunner
from .claimed import CLAIM_FIELDS, Claimed, Outcome
from .inflight import InFlight
from .liveness import Liveness, close_connection, known_functions_q, send_robust
from .mutations import MutationRunner
from .stats import WorkerStats

logger = logging.getLogger("convex_scheduler")


class Executor:
    """Claims what is due and runs it, on behalf of one worker."""

    def __init__(
        self,
        *,
        worker_id: str,
        using: str,
        stats: WorkerStats,
        liveness: Liveness,
        forced: threading.Event,
    ) -> None:
        self.worker_id = worker_id
        self.using = using
        self.stats = stats
        self.liveness = liveness
        self.forced = forced
        self._claimable: tuple[int, Q] | None = None
        #: The time the latest claim looked for due rows (this thread's or another's).
        self.last_claim_time: datetime | None = None
        self.mutations = MutationRunner(self)
        self.actions = ActionRunner(self)
        self.isolation = SuspectIsolation()
        #: Where claimed actions run when the worker runs threads; ``None``
        #: runs each on the claiming thread (``run_due`` and one-thread bursts).
        self.in_flight: InFlight | None = None

    def rows(self, *ids: int) -> ScheduledFunctionQuerySet:
        return ScheduledFunction.objects.using(self.using).filter(pk__in=ids)

    @staticmethod
    def registered_functions() -> list[str]:
        return [f"{entry.kind.value}:{entry.name}" for entry in registry.all()]

    def claimable(self) -> Q:
        """Rows of the functions this worker has registered (others wait for other workers)."""
        size = len(registry.all())
        if self._claimable is None or self._claimable[0] != size:
            self._claimable = (size, known_functions_q(self.registered_functions()))
        return self._claimable[1]

    # Claiming ----------------------------------------------------------

    def run_next(self, limit: int, slots: int = 1) -> tuple[Outcome, int]:
        """Claim up to ``limit`` due rows and run them; return the outcome and how many ran.

        The claim is one short transaction that locks due rows with ``SKIP
        LOCKED`` (so workers claiming at once get different rows) and then
        either starts actions or *leases* a run of mutations: their ``owner``
        becomes this worker, committed before any of them runs (the one extra
        write per batch that poison isolation costs). If this process dies
        while running them, the next worker finds them pending and owned by a
        dead worker, and counts a crash against them. A mutation that crashed
        a worker before is leased alone.

        With :attr:`in_flight`, ``slots`` are slots the caller reserved there:
        up to that many actions start in the one claim transaction and are
        handed over; the slots not handed over are given back. Without it, the
        first action runs here.
        """
        # held[0]: the reserved slots not handed over nor given back yet.
        held = [slots]
        try:
            with self.isolation.shared():
                outcome = self._claim_and_run(limit, held, alone=False)
            if outcome is _SUSPECT_FIRST:
                with self.isolation.alone():
                    outcome = self._claim_and_run(limit, held, alone=True)
            assert outcome is not _SUSPECT_FIRST
            return outcome
        finally:
            if self.in_flight is not None:
                self.in_flight.give_back(held[0])

    def _claim_and_run(self, limit: int, held: list[int], *, alone: bool) -> Any:
        """One claim and its run; ``_SUSPECT_FIRST`` if a suspect is first and not ``alone``."""
        slots = held[0]
        now = self.last_claim_time = clock.now()
        started: list[tuple[Claimed, RegisteredFunction]] = []
        try:
            with write_transaction(self.using):
                due = (
                    ScheduledFunction.objects.using(self.using)
                    .due(now)
                    # Leased rows wait for their worker; its own are fair game.
                    .filter(owner__in=("", self.worker_id))
                )
                full = self.full_pools()
                if full:
                    due = due.exclude(kind=Kind.ACTION, pool__in=full)
                # Read along the due index alone: a filter on the names this
                # worker knows would make the planner walk the name index over
                # every row of those names, finished ones included. Only when
                # the head of the queue holds functions it does not know (a
                # rolling deploy) does it ask for its own names.
                rows = self._lock_due(due, limit)
                if any(not self.knows(row[1], row[2]) for row in rows):
                    rows = self._lock_due(due.filter(self.claimable()), limit)
                if not rows:
                    return Outcome.IDLE, 0
                first = Claimed(*rows[0][:-1])
                if first.kind == Kind.ACTION:
                    wanted = slots if self.in_flight is not None else 1
                    started = self.actions.start_locked(rows, now, wanted)
                    if not started:
                        return Outcome.IDLE, 0  # their pools filled up meanwhile
                else:
                    if first.crashes and not alone:
                        # Leased while this worker's other threads hold leases,
                        # a death caused by their rows would count against it.
                        return _SUSPECT_FIRST
                    ids = [first.id]
                    if not first.crashes:
                        for row in rows[1:]:
                            if row[2] != Kind.MUTATION or row[5]:
                                break  # an action, or a suspect (it runs alone later)
                            ids.append(row[0])
                    self.rows(*ids).update(owner=self.worker_id)
                    commit_without_waiting_for_disk(self.using)
        except Exception as exc:
            return self.on_claim_error(exc), 0
        if first.kind != Kind.ACTION:
            if self.in_flight is not None:
                # The batch runs one mutation at a time: one slot.
                self.in_flight.give_back(held[0] - 1)
                held[0] = 1
            return self.mutations.run_batch(ids, now)
        if self.in_flight is None:
            self.actions.run(*started[0])
            return Outcome.RAN, 1
        for claimed, entry in started:
            self.in_flight.start(claimed, entry)
            held[0] -= 1
        return Outcome.RAN, len(started)

    def _lock_due(self, due: ScheduledFunctionQuerySet, limit: int) -> list[tuple[Any, ...]]:
        return list(
            due.select_for_update(skip_locked=True).values_list(*CLAIM_FIELDS, "pool")[:limit]
        )

    def knows(self, name: str, kind: str) -> bool:
        entry = registry.get(name)
        return entry is not None and entry.kind.value == kind

    def release(self, ids: list[int]) -> None:
        """Give back the lease on those of ``ids`` still pending (they were not run)."""
        try:
            self.rows(*ids).filter(state=State.PENDING, owner=self.worker_id).update(owner="")
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            # Still owned: they look crashed to the next worker, which runs them alone.
            logger.warning("could not release mutations %s: %s", ids, exc)
            close_connection(self.using)

    def next_due_time(self) -> datetime | None:
        """When the next row becomes due (one lookup on the due index).

        It may be a row this worker cannot run (an unknown function, a full
        pool); the idle wait then waits a whole poll interval instead.
        """
        return ScheduledFunction.objects.using(self.using).next_due_time()

    def full_pools(self) -> list[str]:
        """Pools whose parallelism limit is reached now (a paused pool always is)."""
        limits = bounded_pools()
        if not limits:
            return []
        running = dict(
            ScheduledFunction.objects.using(self.using)
            .in_progress()
            .filter(kind=Kind.ACTION, pool__in=list(limits))
            .order_by()
            .values_list("pool")
            .annotate(count=Count("id"))
        )
        return [pool for pool, limit in limits.items() if running.get(pool, 0) >= limit]

    def pool_has_room(self, pool: str) -> bool:
        """Inside the claim transaction: lock the pool's row, then count its running actions.

        The lock serialises the claims of one pool across every worker, so the
        limit holds however many claim at once.
        """
        limit = bounded_pools().get(pool)
        if limit is None:
            return True
        Pool.objects.using(self.using).get_or_create(name=pool)
        list(Pool.objects.using(self.using).select_for_update().filter(name=pool))
        running = (
            ScheduledFunction.objects.using(self.using)
            .in_progress()
            .filter(kind=Kind.ACTION, pool=pool)
            .count()
        )
        return running < limit

    def lock(self, ids: list[int], now: Any) -> list[Claimed]:
        """Lock those of ``ids`` that are due and still leased by this worker.

        A lease can end under a running worker: one taken for dead (a stale
        heartbeat after an outage) has its leases counted as crashed and
        cleared by another worker. Such a row is no longer ours to run: running
        it anyway would be a death nobody counts if it is the poison.
        """
        return [
            Claimed(*row)
            for row in ScheduledFunction.objects.using(self.using)
            .filter(pk__in=ids, owner=self.worker_id)
            .due(now)
            .select_for_update(skip_locked=True)
            .values_list(*CLAIM_FIELDS)
        ]

    def entry(self, claimed: Claimed) -> RegisteredFunction | None:
        entry = registry.get(claimed.name)
        return entry if entry is not None and entry.kind.value == claimed.kind else None

    def on_claim_error(self, exc: Exception) -> Outcome:
        if classify_error(exc) is Transience.PERMANENT:
            raise exc
        logger.warning("database error while claiming, backing off: %s", exc)
        close_connection(self.using)
        return Outcome.BACKOFF

    # Reporting ---------------------------------------------------------

    def finished(
        self, claimed: Claimed, state: str, error: str, attempt: int, started: float
    ) -> None:
        if state == State.SUCCESS:
            self.stats.succeeded += 1
        elif state == State.FAILED:
            self.stats.failed += 1
        elif state == State.CANCELED:
            self.stats.canceled += 1
        send_robust(
            function_finished,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            state=state,
            error=error,
            attempt=attempt,
            duration=time.monotonic() - started,
        )

    def signal_retry(
        self, claimed: Claimed, attempt: int, exc: BaseException, delay: float, *, in_place: bool
    ) -> None:
        send_robust(
            function_retried,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            attempt=attempt,
            error=exc,
            delay=delay,
            in_place=in_place,
        )


#: What a claim returns when the first due row is a suspect and it holds leases beside others.
_SUSPECT_FIRST = object()


class SuspectIsolation:
    """Runner threads claim and run mutations *shared*; a suspect runs *alone*.

    A mutation that crashed a worker before (a suspect) is leased alone so a
    second death counts against it only. Within one worker, that needs more
    than a batch of one: any lease of the worker's other runner threads
    would be counted too when the process dies. So a suspect waits until no
    other thread holds a lease (their batches finish; new claims wait), is
    leased and runs, and only then may the others claim again. Actions
    already in flight keep running.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._sharing += 1
        try:
            yield
        finally:
            with self._condition:
                self._sharing -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._condition:
            self._waiting_alone += 1
            self._condition.wait_for(lambda: not self._alone and not self._sharing)
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._condition:
                self._alone = False
                self._condition.notify_all()


def bounded_pools() -> dict[str, int]:
    """Pool name → its ``max_parallelism``, for the pools the ``POOLS`` setting bounds."""
    return {
        name: int(options["max_parallelism"])
        for name, options in (scheduler_settings.POOLS or {}).items()
        if isinstance(options, dict) and options.get("max_parallelism") is not None
    }
