"""Running actions: committed ``inProgress`` first, run outside any transaction.

An action's outcome is written only if its row is still ``inProgress`` (a
cancel wins). If this worker dies while it runs, another worker marks it
``failed``; it is never run twice. ``async def`` actions are awaited on the
runner thread's own event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import clock, retry
from ..context import ActionContext, FunctionContext
from ..models import State
from ..registry import RegisteredFunction
from ..signals import function_started
from ..transactions import write_transaction
from .claimed import Claimed, Outcome
from .errors import format_error
from .liveness import close_connection, send_robust

if TYPE_CHECKING:
    from .execution import Executor


class ActionRunner:
    """Starts and runs claimed actions for an :class:`~.execution.Executor`."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._loops = threading.local()

    def start(self, pk: int, now: Any) -> tuple[Outcome, int]:
        try:
            with write_transaction(self.executor.using):
                locked = self.executor.lock([pk], now)
                entry = self.executor.entry(locked[0]) if locked else None
                if entry is None:
                    return Outcome.RAN, 0  # taken by another worker meanwhile: look again
                claimed = locked[0]
                self.executor.rows(pk).start_action(self.executor.worker_id, now)
        except Exception as exc:
            return self.executor.on_claim_error(exc), 0
        self._run(claimed, entry)
        return Outcome.RAN, 1

    def _run(self, claimed: Claimed, entry: RegisteredFunction) -> None:
        attempt = claimed.attempts + 1
        ctx = ActionContext(claimed.id, claimed.name, attempt)
        started = time.monotonic()
        send_robust(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.executor.worker_id,
        )
        error = ""
        try:
            self.call(entry.func, ctx, claimed.args)
        except BaseException as exc:
            error = format_error(exc)
        state = self._record_outcome(claimed.id, error)
        self.executor.finished(claimed, state, error, attempt, started)

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

    def _record_outcome(self, pk: int, error: str) -> str:
        rows = self.executor.rows(pk)

        def record() -> str:
            if error:
                changed = rows.fail(error, clock.now(), from_state=State.IN_PROGRESS)
            else:
                changed = rows.succeed(clock.now(), from_state=State.IN_PROGRESS)
            if changed:
                return State.FAILED if error else State.SUCCESS
            # A cancel (or an orphan sweep after a long stall) won.
            return rows.values_list("state", flat=True).first() or State.CANCELED

        recorded, state = retry.until_the_database_answers(
            record,
            what=f"recording the outcome of action id={pk}",
            stop=self.executor.forced,
            on_transient=lambda exc: close_connection(self.executor.using),
        )
        return state if recorded and state is not None else State.IN_PROGRESS


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
