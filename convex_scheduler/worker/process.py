"""The worker process: runner threads, heartbeats, wake-ups and two-stage shutdown."""

from __future__ import annotations

import logging
import threading
import time
import uuid

from django.db import close_old_connections, connections, router, transaction

from .. import clock, retry
from ..conf import poll_interval_for, scheduler_settings
from ..exceptions import Transience, classify_error
from ..models import ScheduledFunction
from ..wakeup import doorbell_dir, supports_notify
from .execution import Executor, Outcome
from .listeners import Doorbell, Listener
from .liveness import Liveness, close_connection
from .stats import WorkerStats

logger = logging.getLogger("convex_scheduler")


class Worker:
    """Claims due scheduled functions and runs them.

    :param concurrency: how many functions run at once (threads, each with
        its own database connection and event loop for ``async def`` actions).
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
        self._progress = threading.Condition()
        self._active = 0
        self._generation = 0
        self._wake = threading.Condition()
        self._wake_seq = 0
        #: Functions run so far, and those reserved by threads claiming now
        #: (``max_functions`` counts both).
        self._started = 0
        self._reserved = 0
        self._budget = threading.Lock()
        self._calling_thread = threading.current_thread()
        self._recycle_connections = True
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
            self.liveness.housekeeping(self.executor.claimable())
            if self.concurrency == 1 and self.burst:
                self._run_inline()
            else:
                self._run_threads()
        finally:
            self.liveness.deregister(forced=self._forced.is_set())
            self.executor.close_event_loop()
            self._log_stopped()
        return self.stats

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

    def _outside_transaction(self) -> bool:
        try:
            return transaction.get_autocommit(using=self.using)
        except Exception:
            return True  # not even connected, so certainly not inside a transaction

    def _register(self) -> None:
        self.liveness.register()
        settings = connections[self.using].settings_dict
        functions = self.liveness.functions
        logger.info(
            "worker started id=%s database=%s (%s %s) concurrency=%s functions=%s "
            "wake-up=%s, polling every %ss%s",
            self.id,
            self.using,
            self.vendor,
            settings.get("NAME"),
            self.concurrency,
            len(functions),
            "LISTEN/NOTIFY" if self.listens else "local doorbell",
            self.poll_interval,
            " burst" if self.burst else "",
        )
        logger.debug("registered functions: %s", ", ".join(sorted(functions)) or "none")
        if self.vendor != "sqlite" and settings.get("CONN_MAX_AGE") == 0:
            logger.warning(
                "DATABASES[%r]['CONN_MAX_AGE'] is 0: like a request, every claim opens a new "
                "connection. Set it to None (or seconds) for the worker to keep its "
                "connections; see 'Workers in production' in the docs.",
                self.using,
            )

    def _log_stopped(self) -> None:
        logger.info(
            "worker stopped id=%s succeeded=%s failed=%s canceled=%s retried=%s",
            self.id,
            self.stats.succeeded,
            self.stats.failed,
            self.stats.canceled,
            self.stats.retried,
        )

    def log_status(self) -> None:
        try:
            next_due = ScheduledFunction.objects.using(self.using).next_due_time()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            next_due = None
        lag = max(0.0, (clock.now() - next_due).total_seconds()) if next_due else 0.0
        logger.info(
            "status succeeded=%s failed=%s canceled=%s retried=%s orphans_failed=%s "
            "crashes=%s lag=%.3fs",
            self.stats.succeeded,
            self.stats.failed,
            self.stats.canceled,
            self.stats.retried,
            self.stats.orphans_failed,
            self.stats.crashes_detected,
            lag,
        )

    # Threads ------------------------------------------------------------

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
                self.liveness.beat()
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
        try:
            self._supervise(threads[: self.concurrency])
        finally:
            listener_stopped.set()
            for thread in threads[self.concurrency :]:
                thread.join(timeout=2)

    def _supervise(self, runners: list[threading.Thread]) -> None:
        """Beat, keep house and report while the runners run; enforce the grace period."""
        grace_deadline = None
        last_beat = last_status = time.monotonic()
        interval = scheduler_settings.HEARTBEAT_INTERVAL
        while any(thread.is_alive() for thread in runners) and not self._forced.is_set():
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
                self.log_status()

    def _runner_thread(self) -> None:
        try:
            self._runner_loop()
        except Exception:
            logger.exception("worker thread crashed")
            self.crashed = True
            self.stop()
        finally:
            self.executor.close_event_loop()
            connections.close_all()
            self._changed.set()

    def _runner_loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._progress:
                generation = self._generation
                self._active += 1
            wake_seq = self._wake_seq
            outcome = Outcome.BACKOFF
            try:
                outcome = self._run_next()
            finally:
                with self._progress:
                    self._active -= 1
                    if outcome is Outcome.RAN:
                        self._generation += 1
                    self._progress.notify_all()
            if outcome is Outcome.RAN:
                failures = 0
                if self.concurrency > 1:
                    self.wake()  # what it ran may have scheduled more for now
                continue
            if outcome is Outcome.BACKOFF:
                failures += 1
                delay = retry.full_jitter(
                    failures,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    max(self.poll_interval, 5.0),
                )
                retry.wait(delay, self._forced)
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

    def _run_next(self) -> Outcome:
        if self._recycle_connections or threading.current_thread() is not self._calling_thread:
            close_old_connections()  # what Django does around every request
        limit = self._reserve(scheduler_settings.BATCH_SIZE)
        if limit == 0:
            return Outcome.IDLE
        used = 0
        try:
            outcome, used = self.executor.run_next(limit)
        finally:
            self._settle(limit, used)
        return outcome

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
        with self._budget:
            if self.max_functions is not None:
                self._reserved -= reserved
            self._started += used

    def _idle_wait(self, wake_seq: int) -> None:
        timeout = self.poll_interval
        try:
            # Only rows this worker can run: others' would wake it for nothing.
            next_due = (
                ScheduledFunction.objects.using(self.using)
                .filter(self.executor.claimable())
                .next_due_time()
            )
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
