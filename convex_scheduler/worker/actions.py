"""Running actions: committed ``inProgress`` first, run outside any transaction.

An action's outcome is written only if its row is still ``inProgress`` (a
cancel wins). If this worker dies while it runs, another worker marks it
``failed``; it is never run twice. A worker running threads hands its
actions to :mod:`.inflight`; ``run_due`` and one-thread bursts run them here,
on the calling thread (``async def`` ones on that thread's own event loop).
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .. import clock, retry
from ..context import ActionContext, FunctionContext
from ..models import Kind, State
from ..registry import RegisteredFunction
from ..retries import NonRetryableError, Retry
from ..signals import function_started
from .claimed import Claimed
from .errors import format_error, storable_result
from .liveness import close_connection, send_robust

if TYPE_CHECKING:
    from .execution import Executor


class ActionRunner:
    """Starts and runs claimed actions for an :class:`~.execution.Executor`."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._loops = threading.local()

    def start_locked(
        self, rows: list[tuple[Any, ...]], now: Any, wanted: int
    ) -> list[tuple[Claimed, RegisteredFunction]]:
        """In the claim's transaction, with ``rows`` locked: start up to ``wanted`` actions.

        Each becomes ``inProgress`` in this transaction.

        ``rows`` are claim rows (:data:`~.claimed.CLAIM_FIELDS` and the pool).
        Mutations among them are left for the next claim, and so are actions
        this worker cannot run and those whose pool has no room (checked under
        the pool's lock, after the actions of that pool started before them).
        Actions outside any pool start in one ``UPDATE``.
        """
        started: list[tuple[Claimed, RegisteredFunction]] = []
        unpooled: list[int] = []
        for row in rows:
            if len(started) == wanted:
                break
            claimed, pool = Claimed(*row[:-1]), row[-1]
            if claimed.kind != Kind.ACTION:
                continue
            entry = self.executor.entry(claimed)
            if entry is None:
                continue
            if pool:
                if not self.executor.pool_has_room(pool):
                    continue
                self.executor.rows(claimed.id).start_action(self.executor.worker_id, now)
            else:
                unpooled.append(claimed.id)
            started.append((claimed, entry))
        if unpooled:
            self.executor.rows(*unpooled).start_action(self.executor.worker_id, now)
        return started

    def run(self, claimed: Claimed, entry: RegisteredFunction) -> None:
        """Run an action already committed ``inProgress``; record its outcome or its retry."""
        ctx, attempt, started = self.begin(claimed)
        returned, failure = None, None
        try:
            returned = self.call(entry.func, ctx, claimed.args)
        except BaseException as exc:
            failure = exc
        error, result, retry_at = self.conclude(claimed, attempt, returned, failure)
        state = self._record_outcome(claimed, error, result, retry_at)
        self.report(claimed, state, error, attempt, started, retry_at)

    def begin(self, claimed: Claimed) -> tuple[ActionContext, int, float]:
        """Signal the start of an attempt; its context, number and start time."""
        attempt = claimed.attempts + 1
        send_robust(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.executor.worker_id,
        )
        return ActionContext(claimed.id, claimed.name, attempt), attempt, time.monotonic()

    def conclude(
        self, claimed: Claimed, attempt: int, returned: Any, failure: BaseException | None
    ) -> tuple[str, Any, datetime | None]:
        """What an attempt leaves to record: its error, its result, when it retries (or None)."""
        error, result, retryable = "", None, True
        if failure is None and returned is not None:
            try:
                result = storable_result(claimed.name, returned)
            except BaseException as exc:
                failure = exc
        if failure is not None:
            error = format_error(failure)
            retryable = not isinstance(failure, NonRetryableError)
        retry_at = self.retry_at(claimed, attempt) if error and retryable else None
        return error, result, retry_at

    def report(
        self,
        claimed: Claimed,
        state: str,
        error: str,
        attempt: int,
        started: float,
        retry_at: datetime | None,
    ) -> None:
        """Count and signal an outcome once it is written."""
        if state == State.PENDING:
            assert retry_at is not None
            self.executor.signal_retry(
                claimed,
                attempt,
                RuntimeError(error.split("\n", 1)[0]),
                (retry_at - clock.now()).total_seconds(),
                in_place=False,
            )
            return
        self.executor.finished(claimed, state, error, attempt, started)

    @staticmethod
    def retry_at(claimed: Claimed, attempt: int) -> datetime | None:
        """When a failed attempt runs again, for an action with attempts left; else None."""
        if claimed.retry is None:
            return None
        policy = Retry.from_json(claimed.retry)
        if attempt >= policy.max_attempts:
            return None
        return clock.now() + timedelta(milliseconds=policy.backoff_ms(attempt))

    def call(self, func: Callable[..., Any], ctx: FunctionContext, args: dict[str, Any]) -> Any:
        """Call an action; await what it returns if that is awaitable (``async def``).

        Each runner thread owns one event loop, so up to ``--concurrency``
        async actions are in flight at once.
        """
        with retry.stop_waits_on(self.executor.forced):
            returned = func(ctx, **args)
            if inspect.isawaitable(returned):
                return self._event_loop().run_until_complete(_awaited(returned))
            return returned

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._loops, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._loops.loop = asyncio.new_event_loop()
        return loop

    def close_event_loop(self) -> None:
        """Close this thread's event loop, if it made one."""
        loop = getattr(self._loops, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.close()

    def record(self, claimed: Claimed, error: str, result: Any, retry_at: datetime | None) -> str:
        """Write the outcome if the row is still ``inProgress``; return the state it ends in.

        A retrying action's failed attempt goes back to ``pending`` (``retry_at``).
        """
        rows = self.executor.rows(claimed.id)
        callbacks = bool(claimed.on_complete)
        now = clock.now()
        if retry_at is not None:
            changed = rows.retry_action(error, retry_at)
            outcome = State.PENDING
        elif error:
            changed = rows.fail(error, now, from_state=State.IN_PROGRESS, callbacks=callbacks)
            outcome = State.FAILED
        else:
            changed = rows.succeed(
                now, from_state=State.IN_PROGRESS, result=result, callbacks=callbacks
            )
            outcome = State.SUCCESS
        if changed:
            return outcome
        # A cancel (or an orphan sweep after a long stall) won.
        return rows.values_list("state", flat=True).first() or State.CANCELED

    def _record_outcome(
        self, claimed: Claimed, error: str, result: Any, retry_at: datetime | None
    ) -> str:
        recorded, state = retry.until_the_database_answers(
            lambda: self.record(claimed, error, result, retry_at),
            what=f"recording the outcome of action id={claimed.id}",
            stop=self.executor.forced,
            on_transient=lambda exc: close_connection(self.executor.using),
        )
        return state if recorded and state is not None else State.IN_PROGRESS


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
