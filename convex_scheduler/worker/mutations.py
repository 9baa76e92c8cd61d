"""Running mutations: a batch in one transaction, each in its own savepoint.

A mutation is claimed, run and marked ``success`` in one transaction with its
row locked. If the process dies anywhere in between, the transaction rolls
back and the row is still ``pending``: the function's writes and its outcome
commit together or not at all. A developer error rolls back only its own
savepoint; a transient database error rolls back the whole batch, and the
mutation that hit it is retried alone while the rest are claimed again.
"""

from __future__ import annotations

import inspect
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.db.models import F

from .. import clock, retry
from ..conf import scheduler_settings
from ..context import MutationContext
from ..exceptions import Transience, classify_error
from ..models import State
from ..registry import RegisteredFunction
from ..signals import function_started
from ..transactions import write_transaction
from .claimed import Claimed, Outcome
from .errors import first_line, format_error, storable, storable_result
from .liveness import close_connection, send_robust

if TYPE_CHECKING:
    from .execution import Executor

logger = logging.getLogger("convex_scheduler")

#: A batch of mutations stops growing once it has run this long (seconds), so
#: one slow mutation does not hold many rows' locks and delay their commit.
BATCH_TIME_BUDGET = 0.05
UNRECORDABLE_ERROR = "{type}: the function failed, and its error could not be stored ({reason})."


class MutationRunner:
    """Runs claimed mutations for an :class:`~.execution.Executor`."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def run_batch(self, ids: list[int], now: Any) -> tuple[Outcome, int]:
        started = time.monotonic()
        current: tuple[Claimed, RegisteredFunction] | None = None
        finished: list[tuple[Claimed, str, str]] = []
        try:
            with write_transaction(self.executor.using):
                succeeded: list[Claimed] = []
                for index, claimed in enumerate(self.executor.lock(ids, now)):
                    entry = self.executor.entry(claimed)
                    if entry is None or (index and claimed.crashes):
                        break  # left pending: its lock ends with this transaction
                    if finished and time.monotonic() - started > BATCH_TIME_BUDGET:
                        break
                    current = (claimed, entry)
                    state, error = self._body(claimed, entry, claimed.attempts + 1)
                    if state == State.SUCCESS:
                        succeeded.append(claimed)
                    finished.append((claimed, state, error))
                    if claimed.crashes:
                        break  # a suspect runs alone
                current = None
                if succeeded:
                    # One UPDATE for the batch; results were written in each
                    # savepoint, callbacks are scheduled in this transaction.
                    self.executor.rows(*(claimed.id for claimed in succeeded)).succeed(
                        clock.now(),
                        from_state=State.PENDING,
                        attempts=F("attempts") + 1,
                        callbacks=any(claimed.on_complete for claimed in succeeded),
                    )
        except Exception as exc:
            # Rolled back: nothing of the batch ran. Give the lease back, so the
            # rest are claimed again; the one that hit the error keeps it while
            # it is retried here, so a crash during the retry is counted too.
            retried = current[0].id if current is not None else None
            self.executor.release([pk for pk in ids if pk != retried])
            if current is not None:
                return self._retry(*current, exc, started), 1
            return self.executor.on_claim_error(exc), 0
        if len(finished) < len(ids):
            done = {claimed.id for claimed, _state, _error in finished}
            self.executor.release([pk for pk in ids if pk not in done])
        for claimed, state, error in finished:
            self.executor.finished(claimed, state, error, claimed.attempts + 1, started)
        return Outcome.RAN, len(finished)

    def _body(self, claimed: Claimed, entry: RegisteredFunction, attempt: int) -> tuple[str, str]:
        """Run a mutation inside the caller's transaction, which holds its row lock.

        Returns ``(state, error)``; records a failure itself. A transient
        database error is raised, to roll the whole transaction back.
        """
        ctx = MutationContext(claimed.id, claimed.name, attempt)
        send_robust(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.executor.worker_id,
        )
        try:
            with transaction.atomic(using=self.executor.using):
                returned = entry.func(ctx, **claimed.args)
                if inspect.isawaitable(returned):
                    _discard(returned)
                    raise TypeError(
                        f"The mutation {claimed.name!r} returned an awaitable. A mutation runs "
                        "inside a database transaction and cannot be async; make it an action."
                    )
                if returned is not None:
                    result = storable_result(claimed.name, returned)
                    self.executor.rows(claimed.id).update(result=result)
        except BaseException as exc:
            if isinstance(exc, Exception) and classify_error(exc) is not Transience.PERMANENT:
                raise  # rolls the whole transaction back; retried by the caller
            error = format_error(exc)
            self.executor.rows(claimed.id).fail(
                error,
                clock.now(),
                from_state=State.PENDING,
                attempts=attempt,
                callbacks=bool(claimed.on_complete),
            )
            return State.FAILED, error
        return State.SUCCESS, ""

    def _retry(
        self, claimed: Claimed, entry: RegisteredFunction, exc: Exception, started: float
    ) -> Outcome:
        attempt = claimed.attempts + 1
        conflicts = 0
        while True:
            transience = classify_error(exc)
            if transience is Transience.PERMANENT:
                # Not the function (its errors are caught in _mutation_body):
                # recording its outcome failed. Record a plain one instead, so
                # the row can never hold the head of the queue.
                logger.error("could not record the outcome of id=%s", claimed.id, exc_info=exc)
                close_connection(self.executor.using)
                self._record_unrecordable(claimed, exc, attempt, started)
                return Outcome.RAN
            self.executor.stats.retried += 1
            if transience is Transience.UNAVAILABLE:
                close_connection(self.executor.using)
                delay = retry.full_jitter(
                    attempt,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    scheduler_settings.UNAVAILABLE_BACKOFF_MAX,
                )
                try:
                    self.executor.rows(claimed.id).postpone(
                        clock.now() + _seconds(delay), attempts=attempt
                    )
                except Exception as postpone_exc:
                    # The row keeps its due time; whoever reaches the database
                    # first runs it.
                    logger.warning("could not postpone id=%s: %s", claimed.id, postpone_exc)
                    close_connection(self.executor.using)
                self.executor.signal_retry(claimed, attempt, exc, delay, in_place=False)
                return Outcome.BACKOFF
            conflicts += 1
            delay = retry.full_jitter(
                conflicts,
                scheduler_settings.CONFLICT_BACKOFF_INITIAL,
                scheduler_settings.CONFLICT_BACKOFF_MAX,
            )
            self.executor.signal_retry(claimed, attempt, exc, delay, in_place=True)
            if retry.wait(delay, self.executor.forced):
                return Outcome.RAN
            attempt += 1
            try:
                with write_transaction(self.executor.using):
                    locked = self.executor.lock([claimed.id], clock.now())
                    if not locked:
                        return Outcome.RAN  # canceled meanwhile, or another worker has it
                    state, error = self._body(locked[0], entry, attempt)
                    if state == State.SUCCESS:
                        self.executor.rows(claimed.id).succeed(
                            clock.now(), from_state=State.PENDING, attempts=attempt
                        )
            except Exception as retry_exc:
                exc = retry_exc
                continue
            self.executor.finished(claimed, state, error, attempt, started)
            return Outcome.RAN

    def _record_unrecordable(
        self, claimed: Claimed, exc: Exception, attempt: int, started: float
    ) -> None:
        error = UNRECORDABLE_ERROR.format(type=type(exc).__name__, reason=first_line(exc))
        error = storable(error)
        try:
            self.executor.rows(claimed.id).fail(
                error, clock.now(), from_state=State.PENDING, attempts=attempt
            )
        except Exception:
            logger.exception("could not fail id=%s either; postponing it", claimed.id)
            close_connection(self.executor.using)
            try:
                self.executor.rows(claimed.id).postpone(
                    clock.now() + _seconds(scheduler_settings.UNAVAILABLE_BACKOFF_MAX),
                    attempts=attempt,
                )
            except Exception:
                logger.exception("could not postpone id=%s", claimed.id)
            return
        self.executor.finished(claimed, State.FAILED, error, attempt, started)


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # no "coroutine was never awaited" warning


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
