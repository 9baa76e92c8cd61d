"""What every runner thread does: claim, run, back off, wait while idle, end a burst."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import close_old_connections

from .. import clock, crons, retry
from ..conf import scheduler_settings
from ..exceptions import Transience, classify_error
from .claimed import Outcome
from .execution import Executor
from .inflight import InFlight

logger = logging.getLogger("convex_scheduler")


class Budget:
    """``--max-functions``: reserved under a lock before each claim, counted after it.

    Threads claiming at once never claim more between them than allowed.
    """

    def __init__(self, limit: int | None, on_spent: Callable[[], None]) -> None:
        self.limit = limit
        self.on_spent = on_spent
        self.started = 0
        self._reserved = 0
        self._lock = threading.Lock()

    def reserve(self, wanted: int) -> int:
        if self.limit is None:
            return wanted
        with self._lock:
            granted = max(0, min(wanted, self.limit - self.started - self._reserved))
            self._reserved += granted
            if granted == 0 and self._reserved == 0:
                self.on_spent()
            return granted

    def settle(self, reserved: int, used: int) -> None:
        with self._lock:
            if self.limit is not None:
                self._reserved -= reserved
            self.started += used


class RunnerLoop:
    """The loop each runner thread runs, and the wake-ups and burst bookkeeping they share."""

    def __init__(
        self,
        *,
        executor: Executor,
        budget: Budget,
        burst: bool,
        threads: int,
        poll_interval: float,
        stopping: threading.Event,
        forced: threading.Event,
        changed: threading.Event,
        recycles: Callable[[], bool],
        on_claim: Callable[[int], None] | None = None,
    ) -> None:
        self.executor = executor
        self.budget = budget
        self.burst = burst
        #: How many runner threads run this loop.
        self.threads = threads
        #: The worker's slots and actions in flight, when it runs threads.
        self.in_flight: InFlight | None = None
        self.poll_interval = poll_interval
        self.stopping = stopping
        self.forced = forced
        self.changed = changed
        #: Whether this thread's connections are the worker's to recycle.
        self.recycles = recycles
        self.on_claim = on_claim
        self.progress = threading.Condition()
        self._waiting = 0
        self._generation = 0
        self._wake = threading.Condition()
        self._wake_seq = 0
        self._crons_checked: float | None = None
        self._crons_lock = threading.Lock()

    def wake(self) -> None:
        """Make idle runner threads look for due functions now."""
        with self._wake:
            self._wake_seq += 1
            self._wake.notify_all()

    def note_progress(self) -> None:
        """A function finished elsewhere (an action in flight): look again, burst or not."""
        with self.progress:
            self._generation += 1
            self.progress.notify_all()
        self.wake()

    def run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            if self.in_flight is not None and not self.in_flight.wait_for_free_slot(
                self.poll_interval
            ):
                continue
            with self.progress:
                generation = self._generation
            wake_seq = self._wake_seq
            outcome = Outcome.BACKOFF
            try:
                outcome = self._run_next()
            finally:
                if outcome is Outcome.RAN:
                    with self.progress:
                        self._generation += 1
                        self.progress.notify_all()
            if outcome is Outcome.RAN:
                failures = 0
                if self.threads > 1:
                    self.wake()  # what it ran may have scheduled more for now
                continue
            if outcome is Outcome.FULL:
                continue
            if outcome is Outcome.BACKOFF:
                failures += 1
                delay = retry.full_jitter(
                    failures,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    max(self.poll_interval, 5.0),
                )
                retry.wait(delay, self.forced)
                continue
            failures = 0
            if self.burst:
                if self._burst_over(generation):
                    break
                continue
            self._idle_wait(wake_seq)

    def _burst_over(self, generation: int) -> bool:
        """Wait for a finished run or a poll interval (then look again), or end the burst.

        The burst is over when every runner thread found nothing due, no
        action is in flight and no run finished since they looked. Deciding
        this from one shared count of waiting threads, rather than from a
        moment when no thread happens to be claiming, ends it within one
        check however many threads run.
        """
        with self.progress:
            self._waiting += 1
            try:
                while self._generation == generation and not self.stopping.is_set():
                    if self._waiting == self.threads and (
                        self.in_flight is None or self.in_flight.idle()
                    ):
                        self.stopping.set()
                        self.changed.set()
                        self.progress.notify_all()
                        return True
                    if not self.progress.wait(self.poll_interval):
                        # Look again: the rows may only have been locked by
                        # another thread's claim when this one looked.
                        return self.stopping.is_set()
                return self.stopping.is_set()
            finally:
                self._waiting -= 1

    def _run_next(self) -> Outcome:
        if self.recycles():
            close_old_connections()  # what Django does around every request
        self._start_cron_runs()
        limit = self.budget.reserve(scheduler_settings.BATCH_SIZE)
        if limit == 0:
            return Outcome.IDLE
        used = 0
        try:
            slots = 1
            if self.in_flight is not None:
                slots = self.in_flight.reserve(limit)
                if slots == 0:
                    return Outcome.FULL  # another thread took the last free slot
            outcome, used = self.executor.run_next(limit, slots)
        finally:
            self.budget.settle(limit, used)
        if used and self.on_claim is not None:
            self.on_claim(used)
        return outcome

    def _start_cron_runs(self) -> None:
        """Turn due cron ticks into rows, at most once per poll interval for all threads."""
        now = time.monotonic()
        with self._crons_lock:
            if self._crons_checked is not None and now - self._crons_checked < self.poll_interval:
                return
            self._crons_checked = now
        try:
            crons.start_due_runs(using=self.executor.using, now=clock.now())
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            logger.warning("starting due cron runs failed, retrying next poll: %s", exc)

    def _idle_wait(self, wake_seq: int) -> None:
        timeout = self.poll_interval
        try:
            next_due = self.executor.next_due_time()
        except Exception as exc:
            if classify_error(exc) is Transience.PERMANENT:
                raise
            next_due = None
        if next_due is not None:
            looked = self.executor.last_claim_time
            if looked is None or next_due > looked:
                # Not yet due when the claim looked: wait until it is.
                timeout = min(timeout, max(0.0, (next_due - clock.now()).total_seconds()))
            # Else it was due when the claim looked and still could not be
            # taken (an unknown function, a full pool): wait a poll, not spin.
        if timeout > 0:
            with self._wake:
                # A wake-up since we last looked means look again at once.
                if self._wake_seq == wake_seq and not self.stopping.is_set():
                    self._wake.wait(timeout)
