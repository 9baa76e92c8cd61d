"""``run_after``, ``run_at`` and ``cancel``: every rule about what may be scheduled.

The web face and the admin call these too, so validation lives in one place.
Writes go through the caller's connection: inside ``transaction.atomic()``
a schedule or cancel commits or rolls back with the caller's transaction.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import connections, router
from django.utils import timezone
from django.utils.translation import gettext

from . import clock
from .conf import poll_interval_for, scheduler_settings
from .exceptions import SchedulingError
from .registry import FunctionKind, RegisteredFunction, check_pool, registry
from .retries import Retry, as_retry
from .wakeup import CHANNEL, ring_local_workers

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MAX_ARGS_DEPTH", "MAX_DISTANCE", "Scheduler", "json_nesting_exceeds", "scheduler"]

#: How far from now a function may be scheduled, either way: five years of 366 days.
MAX_DISTANCE = timedelta(days=5 * 366)
MAX_DELAY_MS = MAX_DISTANCE.total_seconds() * 1000
MAX_ARGS_DEPTH = 64


@dataclass
class _Running:
    """The scheduled function on whose behalf a scheduler schedules."""

    id: int
    kind: FunctionKind
    #: The row children point at; an action's id, also for mutations it runs.
    parent_id: int
    #: Whether the parent may have been canceled while running (actions only:
    #: a running mutation holds its row lock, so a cancel waits for it).
    parent_cancelable: bool
    scheduled_count: int = 0
    scheduled_bytes: int = 0


class Scheduler:
    """Schedules and cancels functions.

    ``convex_scheduler.scheduler`` is the instance for code outside scheduled
    functions. A running function gets its own as ``ctx.scheduler``, which
    records the running function as the parent of what it schedules.
    """

    def __init__(self, running: _Running | None = None) -> None:
        self._running = running

    @classmethod
    def for_running_function(
        cls, *, running_id: int, kind: FunctionKind, parent_id: int, parent_cancelable: bool
    ) -> Scheduler:
        """The scheduler a running function gets as ``ctx.scheduler``.

        What it schedules has ``parent_id`` as its parent and counts against
        the per-function limits; with ``parent_cancelable`` (actions, and
        mutations run for them) it is born canceled once the parent is.
        ``running_id`` is the row a mutation may not cancel (0 for none).
        """
        return cls(_Running(running_id, kind, parent_id, parent_cancelable))

    def run_after(
        self,
        delay_ms: float,
        function: Callable[..., Any] | str,
        args: dict[str, Any] | None = None,
        *,
        retry: Retry | bool | None = None,
        on_complete: Callable[..., Any] | str | None = None,
        context: Any = None,
        pool: str | None = None,
    ) -> int:
        """Schedule ``function(ctx, **args)`` to run ``delay_ms`` milliseconds from now.

        Returns the id of the new :class:`~convex_scheduler.models.ScheduledFunction`.
        A delay of 0 makes it due as soon as the current transaction commits.

        ``retry`` (actions only) opts this call into retries, overriding the
        action's own; ``on_complete`` names a registered mutation scheduled
        exactly once when the function finishes, called with ``id``,
        ``context`` (any JSON value) and ``result`` (the outcome); ``pool``
        (actions only) overrides the action's pool. See :doc:`/retries`.
        """
        now = clock.now()
        return self._schedule(
            _due_after(delay_ms, now),
            function,
            args,
            now,
            _Options.of(retry=retry, on_complete=on_complete, context=context, pool=pool),
        )

    def run_at(
        self,
        when: datetime | float,
        function: Callable[..., Any] | str,
        args: dict[str, Any] | None = None,
        *,
        retry: Retry | bool | None = None,
        on_complete: Callable[..., Any] | str | None = None,
        context: Any = None,
        pool: str | None = None,
    ) -> int:
        """Schedule ``function(ctx, **args)`` to run at ``when``.

        ``when`` is a datetime (a naive one is read in the current time zone) or
        milliseconds since the Unix epoch. A past time makes it due at once; it
        must lie within five years of now either way. The keyword options are
        those of :meth:`run_after`.
        """
        now = clock.now()
        return self._schedule(
            _due_at(when, now),
            function,
            args,
            now,
            _Options.of(retry=retry, on_complete=on_complete, context=context, pool=pool),
        )

    def status(self, scheduled_function_id: int | str) -> dict[str, Any] | None:
        """``{"state", "attempts", "result" | "error"}`` of a scheduled function.

        ``None`` when there is no such row, for example once it is past
        retention (``RETENTION`` after it finished).
        """
        from .models import ScheduledFunction, State

        pk = parse_id(scheduled_function_id)
        using = router.db_for_read(ScheduledFunction)
        row = (
            ScheduledFunction.objects.using(using)
            .filter(pk=pk)
            .values("state", "attempts", "result", "error")
            .first()
        )
        if row is None:
            return None
        status: dict[str, Any] = {"state": row["state"], "attempts": row["attempts"]}
        if row["state"] == State.SUCCESS:
            status["result"] = row["result"]
        elif row["error"]:
            status["error"] = row["error"]
        return status

    def cancel_all(
        self,
        name: Callable[..., Any] | str | None = None,
        before: datetime | float | None = None,
        limit: int | None = None,
    ) -> int:
        """Cancel unfinished functions by name and/or ``scheduled_time < before``; return how many.

        Works in transactions of at most 1,000 rows each, so it never holds
        long locks; running actions are marked canceled as :meth:`cancel`
        does. ``limit`` caps the total. Inside the caller's transaction the
        batches are savepoints of it.
        """
        from .models import ScheduledFunction

        rows = ScheduledFunction.objects.using(router.db_for_write(ScheduledFunction)).filter(
            state__in=("pending", "inProgress")
        )
        if name is not None:
            rows = rows.filter(name=registry.resolve(name).name if callable(name) else name)
        if before is not None:
            rows = rows.filter(scheduled_time__lt=parse_timestamp(before))
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise SchedulingError(
                gettext("limit must be a positive whole number, not %(limit)s.")
                % {"limit": repr(limit)}
            )
        return rows.cancel_in_batches(clock.now(), limit=limit)

    def schedule(
        self,
        function: Callable[..., Any] | str,
        args: Any = None,
        *,
        delay_ms: Any = None,
        run_at: Any = None,
        allow_internal: bool,
    ) -> int:
        """Schedule on behalf of a user: the one entry of the REST API and the admin form.

        Give exactly one of ``delay_ms`` (as for :meth:`run_after`) and
        ``run_at`` (as for :meth:`run_at`); ``None`` means not given. Without
        ``allow_internal`` an internal function is refused with the very
        message an unknown name gets, so a client cannot tell that it exists.
        Every refusal is a :class:`SchedulingError` whose ``field`` names the
        input at fault (``None`` for the delay/time combination).
        """
        if delay_ms is not None and run_at is not None:
            raise SchedulingError(gettext("Give either delay_ms or run_at, not both."))
        if delay_ms is None and run_at is None:
            raise SchedulingError(
                gettext("Give delay_ms (milliseconds from now) or run_at (a time).")
            )
        entry = _resolve(function, allow_internal=allow_internal)
        now = clock.now()
        due = _due_after(delay_ms, now) if delay_ms is not None else _due_at(run_at, now)
        return self._schedule(due, entry, args, now)

    def cancel(self, scheduled_function_id: int | str) -> None:
        """Cancel a scheduled function.

        Pending: it will never run. A running action keeps running, but what it
        schedules from now on is born canceled. Finished or unknown: nothing
        happens.
        """
        from .models import ScheduledFunction

        pk = parse_id(scheduled_function_id)
        running = self._running
        if running is not None and running.kind == FunctionKind.MUTATION and running.id == pk:
            raise SchedulingError(gettext("A mutation cannot cancel itself."))
        using = router.db_for_write(ScheduledFunction)
        ScheduledFunction.objects.using(using).filter(pk=pk).cancel(clock.now())

    # Async callers (async views, async actions). Like Django's own ``a``
    # methods, each runs its sync twin through ``sync_to_async``, on the one
    # thread Django keeps for thread-sensitive code and with its connection.
    # There is no transaction to join: each call commits on its own.

    async def arun_after(
        self,
        delay_ms: float,
        function: Callable[..., Any] | str,
        args: dict[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """:meth:`run_after` for async code; the keyword options are the same."""
        return await sync_to_async(self.run_after)(delay_ms, function, args, **options)

    async def arun_at(
        self,
        when: datetime | float,
        function: Callable[..., Any] | str,
        args: dict[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """:meth:`run_at` for async code; the keyword options are the same."""
        return await sync_to_async(self.run_at)(when, function, args, **options)

    async def acancel(self, scheduled_function_id: int | str) -> None:
        """:meth:`cancel` for async code."""
        await sync_to_async(self.cancel)(scheduled_function_id)

    async def astatus(self, scheduled_function_id: int | str) -> dict[str, Any] | None:
        """:meth:`status` for async code."""
        return await sync_to_async(self.status)(scheduled_function_id)

    def _schedule(
        self,
        due: datetime,
        function: Callable[..., Any] | str | RegisteredFunction,
        args: dict[str, Any] | None,
        now: datetime,
        options: _Options | None = None,
    ) -> int:
        from .models import ScheduledFunction, State

        entry = _resolve(function, allow_internal=True)
        args = {} if args is None else args
        args_json, size = encode_args(entry, args)
        extra = (options or _Options()).for_entry(entry)
        running = self._running
        if running is not None:
            self._charge(running, size)

        state = State.PENDING
        scheduled_time: datetime = due
        next_run_time: datetime | None = due
        completed_time: datetime | None = None
        using = router.db_for_write(ScheduledFunction)
        if (
            running is not None
            and running.parent_cancelable
            and ScheduledFunction.objects.using(using)
            .filter(pk=running.parent_id, state=State.CANCELED)
            .exists()
        ):
            state = State.CANCELED
            scheduled_time, next_run_time, completed_time = now, None, now
        wake = state == State.PENDING and due <= now + timedelta(
            seconds=poll_interval_for(connections[using].vendor)
        )
        pk = ScheduledFunction.objects.using(using).insert_one(
            args_json=args_json,
            notify_channel=CHANNEL if wake else None,
            name=entry.name,
            kind=entry.kind.value,
            state=state,
            scheduled_time=scheduled_time,
            next_run_time=next_run_time,
            creation_time=now,
            completed_time=completed_time,
            parent_id=running.parent_id if running is not None else None,
            **extra,
        )
        if wake:
            ring_local_workers(using)
        return pk

    def _charge(self, running: _Running, size: int) -> None:
        limit = scheduler_settings.MAX_SCHEDULED_PER_FUNCTION
        byte_limit = scheduler_settings.MAX_SCHEDULED_ARGS_BYTES
        if running.scheduled_count + 1 > limit:
            raise SchedulingError(
                gettext(
                    "Too many functions scheduled by one function: at most %(limit)d "
                    "(setting MAX_SCHEDULED_PER_FUNCTION)."
                )
                % {"limit": limit}
            )
        if running.scheduled_bytes + size > byte_limit:
            raise SchedulingError(
                gettext(
                    "Too much argument data scheduled by one function: %(size)d bytes, "
                    "at most %(limit)d (setting MAX_SCHEDULED_ARGS_BYTES)."
                )
                % {"size": running.scheduled_bytes + size, "limit": byte_limit}
            )
        running.scheduled_count += 1
        running.scheduled_bytes += size


@dataclass(frozen=True)
class _Options:
    """The keyword options of one scheduling call, checked."""

    retry: Retry | None = None
    retry_given: bool = False
    on_complete: str = ""
    context: Any = None
    pool: str | None = None

    @classmethod
    def of(cls, *, retry: Any, on_complete: Any, context: Any, pool: Any) -> _Options:
        callback = ""
        if on_complete is not None:
            try:
                entry = registry.resolve(on_complete)
            except SchedulingError as exc:
                raise SchedulingError(
                    gettext("on_complete: %(error)s") % {"error": exc}, field="on_complete"
                ) from None
            if entry.kind != FunctionKind.MUTATION:
                raise SchedulingError(
                    gettext(
                        "on_complete must be a registered mutation; %(name)s is an action. "
                        "A callback runs exactly once, which only a mutation guarantees."
                    )
                    % {"name": repr(entry.name)},
                    field="on_complete",
                )
            try:
                entry.signature.bind(None, id=0, context=None, result={})
            except TypeError as exc:
                raise SchedulingError(
                    gettext(
                        "on_complete %(name)s must accept id, context and result "
                        "keyword arguments: %(error)s."
                    )
                    % {"name": repr(entry.name), "error": exc},
                    field="on_complete",
                ) from None
            callback = entry.name
        if context is not None:
            if not callback:
                raise SchedulingError(gettext("context is only passed to on_complete; give both."))
            _check_json(context, "context", depth=1)
        return cls(
            retry=as_retry(retry),
            retry_given=retry is not None,
            on_complete=callback,
            context=context,
            pool=None if pool is None else check_pool(pool),
        )

    def for_entry(self, entry: RegisteredFunction) -> dict[str, Any]:
        """The row's columns for these options and the function's own defaults."""
        is_action = entry.kind == FunctionKind.ACTION
        if not is_action and (self.retry is not None or self.pool):
            raise SchedulingError(
                gettext(
                    "%(name)s is a mutation: mutations take no retry or pool (they retry "
                    "transient database errors until they succeed)."
                )
                % {"name": repr(entry.name)},
                field="retry" if self.retry is not None else "pool",
            )
        retry = self.retry if self.retry_given else entry.retry
        return {
            "retry": retry.as_json() if retry is not None and is_action else None,
            "pool": (self.pool if self.pool is not None else entry.pool) if is_action else "",
            "on_complete": self.on_complete,
            "on_complete_context": self.context,
        }


def _resolve(function: Any, *, allow_internal: bool) -> RegisteredFunction:
    try:
        entry = registry.resolve(function)
    except SchedulingError as exc:
        if allow_internal:
            raise SchedulingError(str(exc), field="function") from None
        entry = None
    if not allow_internal and (entry is None or entry.internal):
        # The same words for an internal function as for an unknown name.
        name = function if isinstance(function, str) else getattr(entry, "name", function)
        raise SchedulingError(
            gettext("No public function is registered under the name %(name)s.")
            % {"name": _short(name, 300)},
            field="function",
        )
    assert entry is not None
    return entry


def _due_after(delay_ms: Any, now: datetime) -> datetime:
    """``now`` plus a delay in milliseconds, or a :class:`SchedulingError` on ``delay_ms``."""
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, numbers.Real):
        raise SchedulingError(
            gettext("delay_ms must be a number of milliseconds, not %(type)s.")
            % {"type": type(delay_ms).__name__},
            field="delay_ms",
        )
    try:
        delay = float(delay_ms)
    except OverflowError:
        if delay_ms < 0:
            raise SchedulingError(
                gettext("delay_ms must be 0 or more."), field="delay_ms"
            ) from None
        raise SchedulingError(
            gettext("delay_ms is too large; at most %(max).0f ms (five years) is allowed.")
            % {"max": MAX_DELAY_MS},
            field="delay_ms",
        ) from None
    if math.isnan(delay) or math.isinf(delay):
        raise SchedulingError(
            gettext("delay_ms must be a finite number, not %(value)s.") % {"value": repr(delay_ms)},
            field="delay_ms",
        )
    if delay < 0:
        raise SchedulingError(
            gettext("delay_ms must be 0 or more, not %(value)s.") % {"value": repr(delay_ms)},
            field="delay_ms",
        )
    if delay > MAX_DELAY_MS:
        raise SchedulingError(
            gettext("delay_ms %(value)s is more than five years (at most %(max).0f ms).")
            % {"value": repr(delay_ms), "max": MAX_DELAY_MS},
            field="delay_ms",
        )
    return now + timedelta(milliseconds=delay)


def _due_at(when: Any, now: datetime) -> datetime:
    """``when`` as an aware time within five years of ``now``, or an error on ``run_at``."""
    due = parse_timestamp(when)
    if abs(due - now) > MAX_DISTANCE:
        raise SchedulingError(
            gettext(
                "The time %(time)s is more than five years from now (%(now)s); "
                "pick a time within %(days)d days either way."
            )
            % {"time": due.isoformat(), "now": now.isoformat(), "days": MAX_DISTANCE.days},
            field="run_at",
        )
    return due


def parse_timestamp(when: Any) -> datetime:
    """A datetime or epoch milliseconds as an aware datetime, or a :class:`SchedulingError`."""
    try:
        return _parse_timestamp(when)
    except SchedulingError as exc:
        raise SchedulingError(str(exc), field="run_at") from None


def _parse_timestamp(when: Any) -> datetime:
    if isinstance(when, datetime):
        try:
            if timezone.is_naive(when):
                when = timezone.make_aware(when, timezone.get_current_timezone())
            # Stored in UTC: PostgreSQL refuses offsets past ±15:59, which
            # Python (and ISO 8601) allow.
            return when.astimezone(UTC)
        except (OverflowError, ValueError):
            raise SchedulingError(
                gettext(
                    "The time %(time)s is out of range; pick a time within five years "
                    "(%(days)d days) of now."
                )
                % {"time": repr(when), "days": MAX_DISTANCE.days}
            ) from None
    if isinstance(when, bool) or not isinstance(when, numbers.Real):
        raise SchedulingError(
            gettext("A time must be a datetime or milliseconds since the Unix epoch, not %(type)s.")
            % {"type": type(when).__name__}
        )
    try:
        millis = float(when)
    except OverflowError:
        raise SchedulingError(
            gettext(
                "The time in epoch milliseconds is out of range; pick a time within five "
                "years (%(days)d days) of now."
            )
            % {"days": MAX_DISTANCE.days}
        ) from None
    if math.isnan(millis) or math.isinf(millis):
        raise SchedulingError(
            gettext("A time in epoch milliseconds must be finite, not %(value)s.")
            % {"value": repr(when)}
        )
    try:
        return datetime.fromtimestamp(millis / 1000, tz=clock.now().tzinfo)
    except (OverflowError, OSError, ValueError):
        raise SchedulingError(
            gettext(
                "The time %(value)s ms since the epoch is out of range; pick a time within "
                "five years (%(days)d days) of now."
            )
            % {"value": repr(when), "days": MAX_DISTANCE.days}
        ) from None


def parse_id(value: Any) -> int:
    """A scheduled function id given as an int or a string of digits (a 64-bit positive id)."""
    try:
        return _parse_id(value)
    except SchedulingError as exc:
        raise SchedulingError(str(exc), field="id") from None


def _parse_id(value: Any) -> int:
    if isinstance(value, bool):
        raise SchedulingError(
            gettext("A scheduled function id must be a positive integer, not a bool.")
        )
    if isinstance(value, int):
        pk = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        pk = int(value)
    else:
        raise SchedulingError(
            gettext("A scheduled function id must be a positive integer, not %(value)s.")
            % {"value": _short(value)}
        )
    if not 0 < pk < 2**63:
        raise SchedulingError(
            gettext("A scheduled function id must be a positive integer, not %(value)s.")
            % {"value": _short(value)}
        )
    return pk


def validate_args(entry: RegisteredFunction, args: Any) -> int:
    """Check ``args`` for ``entry``; return their size in bytes as stored."""
    return encode_args(entry, args)[1]


def encode_args(entry: RegisteredFunction, args: Any) -> tuple[str, int]:
    """Check ``args`` for ``entry``; return them as stored (JSON text) and that size in bytes."""
    try:
        return _encode_args(entry, args)
    except SchedulingError as exc:
        raise SchedulingError(str(exc), field="args") from None


def _encode_args(entry: RegisteredFunction, args: Any) -> tuple[str, int]:
    if not isinstance(args, dict):
        raise SchedulingError(
            gettext("Arguments must be a dict of JSON values, not %(type)s.")
            % {"type": type(args).__name__}
        )
    for key in args:
        if not isinstance(key, str):
            raise SchedulingError(
                gettext("Argument names must be strings, not %(key)s.") % {"key": _short(key)}
            )
        _check_json(key, f"name {_short(key)}", depth=1)
    for key, value in args.items():
        _check_json(value, key, depth=1)
    entry.bind_check(args)
    text = json.dumps(args, separators=(",", ":"), ensure_ascii=False)
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise SchedulingError(
            gettext("Arguments of %(name)s contain text that is not valid Unicode: %(reason)s.")
            % {"name": repr(entry.name), "reason": exc.reason}
        ) from None
    limit = scheduler_settings.MAX_ARGS_BYTES
    if size > limit:
        raise SchedulingError(
            gettext(
                "Arguments of %(name)s are %(size)d bytes; at most %(limit)d bytes are allowed "
                "(setting MAX_ARGS_BYTES)."
            )
            % {"name": repr(entry.name), "size": size, "limit": limit}
        )
    return text, size


def _check_json(value: Any, path: Any, depth: int) -> None:
    if depth > MAX_ARGS_DEPTH:
        raise SchedulingError(
            gettext("Argument %(path)s is nested more than %(depth)d levels deep.")
            % {"path": _short(path), "depth": MAX_ARGS_DEPTH}
        )
    if isinstance(value, str):
        if "\x00" in value:
            raise SchedulingError(
                gettext(
                    "Argument %(path)s contains the NUL character (U+0000), which PostgreSQL "
                    "cannot store; strings may contain any other character."
                )
                % {"path": _short(path)}
            )
        return
    if value is None or isinstance(value, (bool, int)):
        return
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise SchedulingError(
                gettext("Argument %(path)s is %(value)s; JSON numbers must be finite.")
                % {"path": _short(path), "value": repr(value)}
            )
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SchedulingError(
                    gettext(
                        "Argument %(path)s has the key %(key)s; JSON object keys must be strings."
                    )
                    % {"path": _short(path), "key": _short(key)}
                )
            _check_json(key, f"{path} key {_short(key)}", depth + 1)
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    raise SchedulingError(
        gettext(
            "Argument %(path)s is a %(type)s, which is not a JSON value "
            "(allowed: None, bool, int, float, str, list and dict with string keys)."
        )
        % {"path": _short(path), "type": type(value).__name__}
    )


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters so a message stays readable."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def json_nesting_exceeds(text: str | bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels deep in the JSON ``text``.

    Decided without parsing: linear in the length of ``text`` and free of
    recursion, so a body can be measured before a recursive parser sees it
    (CPython's ``json`` raises ``RecursionError`` at about a thousand levels).
    Brackets inside strings do not count; invalid JSON is left to the parser.
    """
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    depth = 0
    for opens in map(
        _OPENS.__contains__, _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    ):
        depth = depth + 1 if opens else depth - 1
        if depth > limit:
            return True
    return False


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))
_OPENS = frozenset(b"[{")


scheduler = Scheduler()
