"""Claiming due rows and running them: batches of mutations, single actions.

* A mutation is claimed, run and marked ``success`` in one transaction with
  its row locked. If the process dies anywhere in between, the transaction
  rolls back and the row is still ``pending``: the function's writes and its
  outcome commit together or not at all.
* An action is marked ``inProgress`` (with this worker as owner) and
  committed *before* it runs, and its outcome is written only if the row is
  still ``inProgress``. If this worker dies, another marks it ``failed``.
* Whatever a function raises (any ``BaseException``) or returns is that
  function's outcome; the worker goes on.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q

from .. import clock, retry
from ..conf import scheduler_settings
from ..context import ActionContext, FunctionContext, MutationContext
from ..exceptions import Transience, classify_error
from ..models import Kind, ScheduledFunction, ScheduledFunctionQuerySet, State
from ..registry import RegisteredFunction, registry
from ..signals import function_finished, function_retried, function_started
from ..transactions import write_transaction
from .liveness import Liveness, close_connection, known_functions_q, send_robust
from .stats import WorkerStats

logger = logging.getLogger("convex_scheduler")

MAX_ERROR_LENGTH = 64 * 1024
#: A batch of mutations stops growing once it has run this long (seconds), so
#: one slow mutation does not hold many rows' locks and delay their commit.
BATCH_TIME_BUDGET = 0.05
UNRECORDABLE_ERROR = "{type}: the function failed, and its error could not be stored ({reason})."


class Outcome(enum.Enum):
    RAN = "ran"
    IDLE = "idle"
    BACKOFF = "backoff"


@dataclass
class Claimed:
    id: int
    name: str
    kind: str
    args: dict[str, Any]
    attempts: int
    crashes: int


CLAIM_FIELDS = ("id", "name", "kind", "args", "attempts", "crashes")


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
        self._loops = threading.local()

    def _rows(self, *ids: int) -> ScheduledFunctionQuerySet:
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

    def run_next(self, limit: int) -> tuple[Outcome, int]:
        """Claim up to ``limit`` due rows and run them; return the outcome and how many ran.

        One action, or a batch of mutations in one transaction, each in its
        own savepoint: a developer error rolls back only its own savepoint,
        and the batch commits (writes and ``success`` states together) once.
        A transient error rolls back the whole batch; the mutation that hit
        it is retried alone and the rest are claimed again. A mutation that
        crashed a worker before runs alone.
        """
        now = clock.now()
        try:
            peeked = list(
                ScheduledFunction.objects.using(self.using)
                .due(now)
                .filter(self.claimable())
                .values_list("id", "kind", "crashes")[:limit]
            )
            if not peeked:
                self.liveness.mark_running([])
                return Outcome.IDLE, 0
            first_id, first_kind, first_crashes = peeked[0]
            if first_kind == Kind.ACTION:
                return self._start_action(first_id, now)
            ids = [first_id]
            if not first_crashes:
                for pk, kind, crashes in peeked[1:]:
                    if kind != Kind.MUTATION or crashes:
                        break
                    ids.append(pk)
            self.liveness.mark_running(ids)
        except Exception as exc:
            return self._on_claim_error(exc), 0
        return self._run_mutations(ids, now)

    def _lock(self, ids: list[int], now: Any) -> list[Claimed]:
        return [
            Claimed(*row)
            for row in ScheduledFunction.objects.using(self.using)
            .filter(pk__in=ids)
            .due(now)
            .select_for_update(skip_locked=True)
            .values_list(*CLAIM_FIELDS)
        ]

    def _entry(self, claimed: Claimed) -> RegisteredFunction | None:
        entry = registry.get(claimed.name)
        return entry if entry is not None and entry.kind.value == claimed.kind else None

    def _on_claim_error(self, exc: Exception) -> Outcome:
        if classify_error(exc) is Transience.PERMANENT:
            raise exc
        logger.warning("database error while claiming, backing off: %s", exc)
        close_connection(self.using)
        return Outcome.BACKOFF

    # Mutations ---------------------------------------------------------

    def _run_mutations(self, ids: list[int], now: Any) -> tuple[Outcome, int]:
        started = time.monotonic()
        current: tuple[Claimed, RegisteredFunction] | None = None
        finished: list[tuple[Claimed, str, str]] = []
        try:
            with write_transaction(self.using):
                succeeded = []
                for index, claimed in enumerate(self._lock(ids, now)):
                    entry = self._entry(claimed)
                    if entry is None or (index and claimed.crashes):
                        break  # left pending: its lock ends with this transaction
                    if finished and time.monotonic() - started > BATCH_TIME_BUDGET:
                        break
                    current = (claimed, entry)
                    state, error = self._mutation_body(claimed, entry, claimed.attempts + 1)
                    if state == State.SUCCESS:
                        succeeded.append(claimed.id)
                    finished.append((claimed, state, error))
                    if claimed.crashes:
                        break  # a suspect runs alone
                current = None
                if succeeded:
                    self._rows(*succeeded).succeed(
                        clock.now(), from_state=State.PENDING, attempts=F("attempts") + 1
                    )
        except Exception as exc:
            if current is not None:
                return self._retry_mutation(*current, exc, started), 1
            return self._on_claim_error(exc), 0
        for claimed, state, error in finished:
            self._finished(claimed, state, error, claimed.attempts + 1, started)
        return Outcome.RAN, len(finished)

    def _mutation_body(
        self, claimed: Claimed, entry: RegisteredFunction, attempt: int
    ) -> tuple[str, str]:
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
            worker_id=self.worker_id,
        )
        try:
            with transaction.atomic(using=self.using):
                returned = entry.func(ctx, **claimed.args)
                if inspect.isawaitable(returned):
                    _discard(returned)
                    raise TypeError(
                        f"The mutation {claimed.name!r} returned an awaitable. A mutation runs "
                        "inside a database transaction and cannot be async; make it an action."
                    )
        except BaseException as exc:
            if isinstance(exc, Exception) and classify_error(exc) is not Transience.PERMANENT:
                raise  # rolls the whole transaction back; retried by the caller
            error = format_error(exc)
            self._rows(claimed.id).fail(
                error, clock.now(), from_state=State.PENDING, attempts=attempt
            )
            return State.FAILED, error
        return State.SUCCESS, ""

    def _retry_mutation(
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
                close_connection(self.using)
                self._record_unrecordable(claimed, exc, attempt, started)
                return Outcome.RAN
            self.stats.retried += 1
            if transience is Transience.UNAVAILABLE:
                close_connection(self.using)
                delay = retry.full_jitter(
                    attempt,
                    scheduler_settings.UNAVAILABLE_BACKOFF_INITIAL,
                    scheduler_settings.UNAVAILABLE_BACKOFF_MAX,
                )
                try:
                    self._rows(claimed.id).postpone(clock.now() + _seconds(delay), attempts=attempt)
                except Exception as postpone_exc:
                    # The row keeps its due time; whoever reaches the database
                    # first runs it.
                    logger.warning("could not postpone id=%s: %s", claimed.id, postpone_exc)
                    close_connection(self.using)
                self._signal_retry(claimed, attempt, exc, delay, in_place=False)
                return Outcome.BACKOFF
            conflicts += 1
            delay = retry.full_jitter(
                conflicts,
                scheduler_settings.CONFLICT_BACKOFF_INITIAL,
                scheduler_settings.CONFLICT_BACKOFF_MAX,
            )
            self._signal_retry(claimed, attempt, exc, delay, in_place=True)
            if retry.wait(delay, self.forced):
                return Outcome.RAN
            attempt += 1
            try:
                with write_transaction(self.using):
                    locked = self._lock([claimed.id], clock.now())
                    if not locked:
                        return Outcome.RAN  # canceled meanwhile, or another worker has it
                    state, error = self._mutation_body(locked[0], entry, attempt)
                    if state == State.SUCCESS:
                        self._rows(claimed.id).succeed(
                            clock.now(), from_state=State.PENDING, attempts=attempt
                        )
            except Exception as retry_exc:
                exc = retry_exc
                continue
            self._finished(claimed, state, error, attempt, started)
            return Outcome.RAN

    def _record_unrecordable(
        self, claimed: Claimed, exc: Exception, attempt: int, started: float
    ) -> None:
        error = UNRECORDABLE_ERROR.format(type=type(exc).__name__, reason=_first_line(exc))
        error = storable(error)
        try:
            self._rows(claimed.id).fail(
                error, clock.now(), from_state=State.PENDING, attempts=attempt
            )
        except Exception:
            logger.exception("could not fail id=%s either; postponing it", claimed.id)
            close_connection(self.using)
            try:
                self._rows(claimed.id).postpone(
                    clock.now() + _seconds(scheduler_settings.UNAVAILABLE_BACKOFF_MAX),
                    attempts=attempt,
                )
            except Exception:
                logger.exception("could not postpone id=%s", claimed.id)
            return
        self._finished(claimed, State.FAILED, error, attempt, started)

    # Actions -----------------------------------------------------------

    def _start_action(self, pk: int, now: Any) -> tuple[Outcome, int]:
        try:
            with write_transaction(self.using):
                locked = self._lock([pk], now)
                entry = self._entry(locked[0]) if locked else None
                if entry is None:
                    return Outcome.RAN, 0  # taken by another worker meanwhile: look again
                claimed = locked[0]
                self._rows(pk).start_action(self.worker_id, now)
        except Exception as exc:
            return self._on_claim_error(exc), 0
        self._run_action(claimed, entry)
        return Outcome.RAN, 1

    def _run_action(self, claimed: Claimed, entry: RegisteredFunction) -> None:
        attempt = claimed.attempts + 1
        ctx = ActionContext(claimed.id, claimed.name, attempt)
        started = time.monotonic()
        send_robust(
            function_started,
            scheduled_function_id=claimed.id,
            name=claimed.name,
            kind=claimed.kind,
            attempt=attempt,
            worker_id=self.worker_id,
        )
        error = ""
        try:
            self.call(entry.func, ctx, claimed.args)
        except BaseException as exc:
            error = format_error(exc)
        state = self._record_action_outcome(claimed.id, error)
        self._finished(claimed, state, error, attempt, started)

    def call(self, func: Callable[..., Any], ctx: FunctionContext, args: dict[str, Any]) -> Any:
        """Call an action; await what it returns if that is awaitable (``async def``).

        Each runner thread owns one event loop, so up to ``--concurrency``
        async actions are in flight at once.
        """
        with retry.stop_waits_on(self.forced):
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

        recorded, state = retry.until_the_database_answers(
            record,
            what=f"recording the outcome of action id={pk}",
            stop=self.forced,
            on_transient=lambda exc: close_connection(self.using),
        )
        return state if recorded and state is not None else State.IN_PROGRESS

    # Reporting ---------------------------------------------------------

    def _finished(
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

    def _signal_retry(
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


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # no "coroutine was never awaited" warning


def storable(text: str) -> str:
    """``text`` as every supported database can store it.

    NUL (which PostgreSQL refuses in text) and lone surrogates (which no
    UTF-8 database accepts) are written as backslash escapes, never dropped.
    """
    text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc)
    except BaseException:
        return f"<{type(exc).__name__} whose message could not be read>"
    return text.splitlines()[0] if text else ""


def format_error(exc: BaseException) -> str:
    """The error text stored for a failed function: the message, then the traceback.

    Always storable (see :func:`storable`), whatever the exception's text is
    or does: an exception whose ``__str__`` raises gets a fixed message
    naming its type.
    """
    try:
        message = str(exc)
    except BaseException:
        message = f"<{type(exc).__name__} whose message could not be read>"
    headline = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    try:
        trace = "".join(traceback.format_exception(exc))
    except BaseException:
        trace = ""
    return storable(f"{headline}\n\n{trace}")[:MAX_ERROR_LENGTH]


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
