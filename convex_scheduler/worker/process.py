"""The worker process: runner threads, heartbeats, wake-ups and two-stage shutdown."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from django.db import close_old_connections, connections, router, transaction

from .. import clock, crons, retry
from ..conf import poll_interval_for, scheduler_settings
from ..exceptions import Transience, classify_error
from ..models import ScheduledFunction
from ..wakeup import doorbell_dir, supports_notify
from .execution import Executor
from .inflight import InFlight
from .listeners import Doorbell, Listener
from .liveness import Liveness, close_connection
from .runner import Budget, RunnerLoop
from .stats import WorkerStats

logger = logging.getLogger("convex_scheduler")

#: The most runner threads (claims and mutation batches) a worker runs,
#: whatever its concurrency: actions beyond them wait in flight, not on a thread each.
MAX_RUNNER_THREADS = 4


class Worker:
    """Claims due scheduled functions and runs them.

    :param concurrency: how many functions run at once: its *slots*. Up to
        ``MAX_RUNNER_THREADS`` runner threads claim and run mutation batches
        (one slot each); actions are handed to :mod:`.inflight`, where
        ``async def`` ones run on one event loop and the others on threads
        of their own, so the worker's connections do not grow with it.
    :param poll_interval: the longest an idle thread sleeps before it looks
        for due functions again (seconds).
    :param burst: run everything that is due, including what those runs
        schedule for now, then return.
    :param max_functions: return after this many functions ran.
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
        self.stats = WorkerStats()
        #: Set when a runner thread died of an unexpected error.
        self.crashed = False
        self._stopping = threading.Event()
        self._forced = threading.Event()
        self._changed = threading.Event()
        self._calling_thread = threading.current_thread()
        self._recycle_connections = True
        #: One burst thread runs everything on the calling thread (``run_due``).
        self._inline = self.concurrency == 1 and burst
        self._in_flight: InFlight | None = None
        self.executor = Executor(
            worker_id=self.id,
            using=self.using,
            stats=self.stats,
            liveness=Liveness(
                worker_id=self.id,
                using=self.using,
                stats=self.stats,
                functions=Executor.registered_functions(),
            ),
            forced=self._forced,
        )
        self.liveness = self.executor.liveness
        #: Called with the size of every non-empty claim (``--metrics-port``).
        self.on_claim: Callable[[int], None] | None = None
        self.loop = RunnerLoop(
            executor=self.executor,
            budget=Budget(max_functions, self.stop),
            burst=burst,
            threads=1 if self._inline else min(self.concurrency, MAX_RUNNER_THREADS),
            poll_interval=self.poll_interval,
            stopping=self._stopping,
            forced=self._forced,
            changed=self._changed,
            recycles=self._recycles,
            on_claim=lambda size: self.on_claim(size) if self.on_claim else None,
        )

    # Lifecycle -----------------------------------------------------------

    def run(self) -> WorkerStats:
        """Run until stopped (or, with ``burst``, until nothing is due)."""
        # Runner threads have connections of their own; the calling thread's
        # is ours to recycle unless the caller has a transaction open on it.
        self._recycle_connections = self._outside_transaction()
        if self._recycle_connections:
            close_old_connections()
        registered, _ = retry.until_the_database_answers(
            self._register,
            what="registering the worker",
            stop=self._stopping,
            on_transient=lambda exc: close_connection(self.using),
        )
        if not registered:
            return self.stats
        try:
            # Code is the source of truth for code crons: apply its declarations.
            retry.until_the_database_answers(
                lambda: crons.sync_code_crons(using=self.using),
                what="applying the code's crons",
                stop=self._stopping,
                on_transient=lambda exc: close_connection(self.using),
            )
            self.liveness.housekeeping(self.executor.claimable())
            if self._inline:
                self._run_inline()
            else:
                self._run_threads()
        finally:
            self.liveness.deregister(forced=self._forced.is_set())
            self.executor.actions.close_event_loop()
            log_stopped(self)
        return self.stats

    def stop(self, *, force: bool = False) -> None:
        """Stop claiming; finish what is running. ``force`` abandons running work."""
        self._stopping.set()
        if force:
            self._forced.set()
        self._changed.set()
        with self.loop.progress:
            self.loop.progress.notify_all()
        if self._in_flight is not None:
            self._in_flight.interrupt()
        self.wake()

    def wake(self) -> None:
        """Make idle runner threads look for due functions now."""
        self.loop.wake()

    def _recycles(self) -> bool:
        """Whether the current thread's connections are this worker's to recycle.

        Runner threads have their own; the calling thread's is the caller's
        while the caller has a transaction open on it.
        """
        return self._recycle_connections or threading.current_thread() is not self._calling_thread

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def _outside_transaction(self) -> bool:
        try:
            return transaction.get_autocommit(using=self.using)
        except Exception:
            return True  # not even connected, so certainly not inside a transaction

    def _register(self) -> None:
        self.liveness.register()
        log_started(self)

    # Threads ------------------------------------------------------------

    def _run_inline(self) -> None:
        beat = None
        if self.heartbeat:
            beat = threading.Thread(target=self._heartbeat_thread, daemon=True)
            beat.start()
        try:
            self.loop.run()
        finally:
            self._stopping.set()
            self._changed.set()
            if beat is not None:
                beat.join()

    def _heartbeat_thread(self) -> None:
        try:
            while not self._changed.wait(scheduler_settings.HEARTBEAT_INTERVAL):
                close_old_connections()
                self.liveness.beat()
        finally:
            connections.close_all()

    def _run_threads(self) -> None:
        in_flight = self._in_flight = InFlight(
            self.executor.actions,
            slots=self.concurrency,
            on_done=self._action_done,
            on_crash=self._thread_crashed,
        )
        self.executor.in_flight = self.loop.in_flight = in_flight
        runners = [
            threading.Thread(
                target=self._runner_thread, name=f"convex-scheduler-{index}", daemon=True
            )
            for index in range(self.loop.threads)
        ]
        helpers: list[threading.Thread] = []
        listener_stopped = threading.Event()
        if self.listens:
            helpers.append(Listener(self.using, self.wake, listener_stopped))
        if not self.burst and not self.listens:
            try:
                helpers.append(
                    Doorbell(doorbell_dir(self.using), self.id, self.wake, listener_stopped)
                )
            except OSError as exc:
                logger.warning("no local wake-up socket (polling instead): %s", exc)
        for thread in runners + helpers:
            thread.start()
        try:
            self._supervise(runners, in_flight)
        finally:
            listener_stopped.set()
            in_flight.close(wait=not self._forced.is_set())
            for thread in helpers:
                thread.join(timeout=2)

    def _action_done(self) -> None:
        self.loop.note_progress()
        self._changed.set()

    def _supervise(self, runners: list[threading.Thread], in_flight: InFlight) -> None:
        """Beat, keep house and report while functions run; enforce the grace period."""
        grace_deadline = None
        last_beat = last_status = time.monotonic()
        interval = scheduler_settings.HEARTBEAT_INTERVAL
        while (
            any(thread.is_alive() for thread in runners) or not in_flight.idle()
        ) and not self._forced.is_set():
            if self._stopping.is_set() and grace_deadline is None:
                grace = scheduler_settings.SHUTDOWN_GRACE_PERIOD
                grace_deadline = time.monotonic() + grace
                logger.info("stopping: finishing running functions (grace %ss)", grace)
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
                self.liveness.beat()
                self.liveness.housekeeping(self.executor.claimable())
            if time.monotonic() - last_status >= scheduler_settings.STATUS_INTERVAL:
                last_status = time.monotonic()
                log_status(self)

    def _thread_crashed(self) -> None:
        self.crashed = True
        self.stop()

    def _runner_thread(self) -> None:
        try:
            self.loop.run()
        except Exception:
            logger.exception("worker thread crashed")
            self._thread_crashed()
        finally:
            self.executor.actions.close_event_loop()
            connections.close_all()
            self._changed.set()


def log_started(worker: Worker) -> None:
    settings = connections[worker.using].settings_dict
    functions = worker.liveness.functions
    logger.info(
        "worker started id=%s database=%s (%s %s) concurrency=%s functions=%s "
        "wake-up=%s, polling every %ss%s",
        worker.id,
        worker.using,
        worker.vendor,
        settings.get("NAME"),
        worker.concurrency,
        len(functions),
        "LISTEN/NOTIFY" if worker.listens else "local doorbell",
        worker.poll_interval,
        " burst" if worker.burst else "",
    )
    logger.debug("registered functions: %s", ", ".join(sorted(functions)) or "none")
    if worker.vendor != "sqlite" and settings.get("CONN_MAX_AGE") == 0:
        logger.warning(
            "DATABASES[%r]['CONN_MAX_AGE'] is 0: like a request, every claim opens a new "
            "connection. Set it to None (or seconds) for the worker to keep its "
            "connections; see 'Workers in production' in the docs.",
            worker.using,
        )


def log_stopped(worker: Worker) -> None:
    stats = worker.stats
    logger.info(
        "worker stopped id=%s succeeded=%s failed=%s canceled=%s retried=%s",
        worker.id,
        stats.succeeded,
        stats.failed,
        stats.canceled,
        stats.retried,
    )


def log_status(worker: Worker) -> None:
    """One line: what the worker did so far, and how late the oldest due row is."""
    try:
        next_due = ScheduledFunction.objects.using(worker.using).next_due_time()
    except Exception as exc:
        if classify_error(exc) is Transience.PERMANENT:
            raise
        next_due = None
    lag = max(0.0, (clock.now() - next_due).total_seconds()) if next_due else 0.0
    stats = worker.stats
    logger.info(
        "status succeeded=%s failed=%s canceled=%s retried=%s orphans_failed=%s "
        "crashes=%s lag=%.3fs",
        stats.succeeded,
        stats.failed,
        stats.canceled,
        stats.retried,
        stats.orphans_failed,
        stats.crashes_detected,
        lag,
    )
