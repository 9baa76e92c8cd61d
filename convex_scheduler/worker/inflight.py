"""Actions in flight: one event loop for ``async def`` actions, threads for the rest.

A worker with ``--concurrency N`` has N *slots*, one per function running at
once. A runner thread reserves free slots before it claims: a mutation batch
holds one slot while it runs (its mutations run one after another), and a
claim of actions starts at most as many actions as it reserved slots — each
committed ``inProgress`` in that one claim transaction, so nothing is marked
started that cannot start at once — and hands them here; the runner thread
goes back to claiming. ``async def`` actions run as tasks on one event loop
the worker owns, at the cost of a coroutine each; other actions run on
threads (at most one per slot, started when needed and reused), which close
their database connections after each action: an action that does not touch
the database never holds one. Outcomes are written by one thread in grouped
commits: a finished action's outcome waits at most ``OUTCOME_GROUP_WAIT`` for
company (not at all when no other action is running), and each row is still
written by a conditional update that cannot overwrite a cancel. A slot is
free again once its outcome is written.

So the worker's own connections do not grow with ``--concurrency``: its
runner threads (at most ``MAX_RUNNER_THREADS``), this writer, the heartbeat
and the wake-up listener. Every thread here is a daemon: on a forced stop, an
action that hangs must not keep the process alive.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import connections

from .. import clock, retry
from ..models import State
from ..registry import RegisteredFunction
from ..transactions import write_transaction
from .claimed import Claimed
from .errors import format_error
from .liveness import close_connection

if TYPE_CHECKING:
    from .actions import ActionRunner

logger = logging.getLogger("convex_scheduler")

#: How long a finished action's outcome waits for others to share its commit (seconds).
OUTCOME_GROUP_WAIT = 0.002
#: The most outcomes written in one commit.
OUTCOME_GROUP_SIZE = 100


@dataclass
class Finished:
    claimed: Claimed
    attempt: int
    started: float
    error: str
    result: Any
    retry_at: datetime | None


class InFlight:
    """The worker's slots, its event loop, its action threads and the outcome writer."""

    def __init__(
        self,
        runner: ActionRunner,
        *,
        slots: int,
        on_done: Callable[[], None],
        on_crash: Callable[[], None],
    ) -> None:
        self.runner = runner
        self.slots = slots
        self.on_done = on_done
        self.on_crash = on_crash
        self._reserved = 0
        self._running = 0
        self._closed = False
        self._lock = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="convex-scheduler-async", daemon=True
        )
        self._sync_jobs: queue.SimpleQueue[tuple[Claimed, RegisteredFunction] | None] = (
            queue.SimpleQueue()
        )
        self._sync_threads = 0
        self._idle_sync_threads = 0
        self._outcomes: queue.Queue[Finished | None] = queue.Queue()
        self._writer = threading.Thread(
            target=self._write_outcomes, name="convex-scheduler-outcomes", daemon=True
        )
        self._loop_thread.start()
        self._writer.start()

    # Slots ----------------------------------------------------------------

    def reserve(self, wanted: int) -> int:
        """Reserve up to ``wanted`` free slots; return how many (maybe 0)."""
        with self._lock:
            granted = max(0, min(wanted, self.slots - self._reserved - self._running))
            self._reserved += granted
            return granted

    def give_back(self, count: int) -> None:
        """Return reserved slots that started nothing here."""
        if count <= 0:
            return
        with self._lock:
            self._reserved -= count
            self._lock.notify_all()

    def wait_for_free_slot(self, timeout: float) -> bool:
        """Wait until a slot is free (or :meth:`interrupt`); return whether one is."""
        with self._lock:
            if self.slots - self._reserved - self._running <= 0 and not self._closed:
                self._lock.wait(timeout)
            return self.slots - self._reserved - self._running > 0

    def interrupt(self) -> None:
        """Wake threads waiting for a slot (the worker is stopping)."""
        with self._lock:
            self._lock.notify_all()

    def idle(self) -> bool:
        """Whether no action is running or waiting for its outcome to be written."""
        with self._lock:
            return self._running == 0

    # Running ----------------------------------------------------------------

    def start(self, claimed: Claimed, entry: RegisteredFunction) -> None:
        """Run an action committed ``inProgress`` in a slot the caller reserved."""
        with self._lock:
            self._reserved -= 1
            self._running += 1
            if not inspect.iscoroutinefunction(entry.func):
                if self._idle_sync_threads:
                    self._idle_sync_threads -= 1
                else:
                    self._sync_threads += 1
                    threading.Thread(
                        target=self._sync_thread,
                        name=f"convex-scheduler-action-{self._sync_threads}",
                        daemon=True,
                    ).start()
        if inspect.iscoroutinefunction(entry.func):
            asyncio.run_coroutine_threadsafe(self._run_async(claimed, entry), self._loop)
        else:
            self._sync_jobs.put((claimed, entry))

    def _end(
        self,
        claimed: Claimed,
        attempt: int,
        started: float,
        returned: Any,
        failure: BaseException | None,
    ) -> None:
        error, result, retry_at = self.runner.conclude(claimed, attempt, returned, failure)
        self._outcomes.put(Finished(claimed, attempt, started, error, result, retry_at))

    async def _run_async(self, claimed: Claimed, entry: RegisteredFunction) -> None:
        ctx, attempt, started = self.runner.begin(claimed)
        returned, failure = None, None
        try:
            returned = await entry.func(ctx, **claimed.args)
        except BaseException as exc:  # SystemExit from a function must not stop the loop
            failure = exc
        self._end(claimed, attempt, started, returned, failure)

    def _sync_thread(self) -> None:
        try:
            while (job := self._sync_jobs.get()) is not None:
                claimed, entry = job
                try:
                    ctx, attempt, started = self.runner.begin(claimed)
                    returned, failure = None, None
                    try:
                        returned = self.runner.call(entry.func, ctx, claimed.args)
                    except BaseException as exc:
                        failure = exc
                    self._end(claimed, attempt, started, returned, failure)
                finally:
                    # This thread holds a connection only while an action uses one.
                    connections.close_all()
                with self._lock:
                    self._idle_sync_threads += 1
        finally:
            self.runner.close_event_loop()

    # Outcomes ---------------------------------------------------------------

    def _write_outcomes(self) -> None:
        try:
            while (first := self._outcomes.get()) is not None:
                group = [first]
                deadline = time.monotonic() + OUTCOME_GROUP_WAIT
                while len(group) < OUTCOME_GROUP_SIZE:
                    if not self._others_running(len(group)):
                        break  # no company can come: do not wait for it
                    try:
                        item = self._outcomes.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
                    if item is None:
                        self._outcomes.put(None)  # stop after this group
                        break
                    group.append(item)
                self._write_group(group)
        except Exception:
            logger.exception("the action outcome writer crashed")
            self.on_crash()
        finally:
            connections.close_all()

    def _others_running(self, outcomes: int) -> bool:
        """Whether actions other than those whose ``outcomes`` are in hand are running."""
        with self._lock:
            return self._running > outcomes

    def _write_group(self, group: list[Finished]) -> None:
        executor = self.runner.executor
        states: list[str] = []

        def record_all() -> None:
            states.clear()
            with write_transaction(executor.using):
                plain = self._succeed_plain(group)
                for item in group:
                    state = plain.get(item.claimed.id)
                    if state is None:
                        state = self.runner.record(
                            item.claimed, item.error, item.result, item.retry_at
                        )
                    states.append(state)

        try:
            recorded, _ = self._until_written(record_all, f"{len(group)} action(s)")
        except Exception:
            # One outcome the database refuses must not take the others with
            # it: write them one by one, and that one as a failure saying why.
            logger.exception("recording %d action outcomes together failed", len(group))
            recorded = self._write_one_by_one(group, states)
        if not recorded:
            return  # a forced stop: they stay inProgress and fail as orphans
        for item, state in zip(group, states, strict=True):
            self.runner.report(
                item.claimed, state, item.error, item.attempt, item.started, item.retry_at
            )
        with self._lock:
            self._running -= len(group)
            self._lock.notify_all()
        self.on_done()

    def _succeed_plain(self, group: list[Finished]) -> dict[int, str]:
        """Record the plain successes of ``group`` in one ``UPDATE``; return their states.

        Plain: no result to store and no completion callback, so one
        conditional update of them all says the same as one each. Rows a
        cancel ended first keep ``canceled``.
        """
        ids = [
            item.claimed.id
            for item in group
            if not item.error and item.result is None and not item.claimed.on_complete
        ]
        if not ids:
            return {}
        rows = self.runner.executor.rows(*ids)
        changed = rows.succeed(clock.now(), from_state=State.IN_PROGRESS, callbacks=False)
        if changed == len(ids):
            return dict.fromkeys(ids, State.SUCCESS)
        return dict(rows.values_list("id", "state"))

    def _write_one_by_one(self, group: list[Finished], states: list[str]) -> bool:
        states.clear()
        for item in group:

            def record_one(item: Finished = item) -> str:
                with write_transaction(self.runner.executor.using):
                    return self.runner.record(item.claimed, item.error, item.result, item.retry_at)

            try:
                recorded, state = self._until_written(record_one, f"action id={item.claimed.id}")
            except Exception as exc:
                item.error = f"Its outcome could not be recorded: {format_error(exc)}"
                item.result, item.retry_at = None, None
                recorded, state = self._until_written(record_one, f"action id={item.claimed.id}")
            if not recorded or state is None:
                return False
            states.append(state)
        return True

    def _until_written(self, write: Callable[[], Any], what: str) -> tuple[bool, Any]:
        executor = self.runner.executor
        return retry.until_the_database_answers(
            write,
            what=f"recording the outcome of {what}",
            stop=executor.forced,
            on_transient=lambda exc: close_connection(executor.using),
        )

    # Shutdown ---------------------------------------------------------------

    def close(self, *, wait: bool) -> None:
        """Stop the writer (after what is queued, if ``wait``), the loop and the threads."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            threads = self._sync_threads
        self._outcomes.put(None)
        for _ in range(threads):
            self._sync_jobs.put(None)
        if wait:
            self._writer.join()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if wait:
            self._loop_thread.join(timeout=2)
            if not self._loop_thread.is_alive():
                self._loop.close()
