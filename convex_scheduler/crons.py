"""Crons: recurring functions, declared in code or created at run time.

Declared in an installed app's ``crons`` module, which is autodiscovered like
``functions``::

    from convex_scheduler import crons
    from .functions import clear_presence, send_digest

    crons.interval("clear presence", clear_presence, minutes=5)
    crons.daily("morning digest", send_digest, {"edition": "am"}, hour=8, minute=30,
                timezone="Asia/Tokyo")

or at run time with :func:`register` / :func:`delete`, transactional with the
caller like ``scheduler.run_after``. Each tick of a cron becomes one ordinary
:class:`~convex_scheduler.models.ScheduledFunction` (``cron`` names the cron,
``scheduled_time`` is the tick), created by a worker through
:func:`start_due_runs`: exactly one row per tick (a unique constraint on
``(cron, scheduled_time)``), never two runs of one cron at once, and only the
latest of several missed ticks. Workers apply the code's declarations with
:func:`sync_code_crons` when they start.

Cron expressions are parsed and iterated by ``cronsim``, in the cron's time
zone, with Debian cron's daylight-saving rules: a daily time that does not
exist on the spring-forward day runs at the first valid minute after the gap,
and one that occurs twice on the fall-back day runs at the first occurrence.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from django.db import DatabaseError, IntegrityError, router, transaction
from django.db.models import Field
from django.utils import translation
from django.utils.dates import WEEKDAYS
from django.utils.translation import gettext, ngettext

from . import clock
from .conf import scheduler_settings
from .exceptions import SchedulingError, Transience, classify_error
from .registry import RegisteredFunction, registry
from .retry import full_jitter
from .scheduler import MAX_DISTANCE, encode_args
from .transactions import write_transaction

if TYPE_CHECKING:
    from .models import CronJob

__all__ = [
    "CronDefinition",
    "Schedule",
    "code_crons",
    "cron",
    "daily",
    "declared",
    "define",
    "delete",
    "describe",
    "hourly",
    "interval",
    "monthly",
    "pause",
    "register",
    "resume",
    "start_due_runs",
    "sync_code_crons",
    "weekly",
]

logger = logging.getLogger("convex_scheduler")

#: The longest cron name (the ``cron`` column of scheduled functions).
MAX_NAME_LENGTH = 200
#: The shortest interval between two ticks.
MIN_INTERVAL = timedelta(seconds=1)
#: How many due crons one transaction of :func:`start_due_runs` handles.
DUE_BATCH_SIZE = 100
#: Missed ticks of one cron counted one by one; past this many the rest are
#: estimated from the average spacing (a cron every minute, down ten weeks).
MAX_COUNTED_TICKS = 100_000
#: Attempts of a run-time cron change that is its own transaction, when it
#: meets a deadlock or serialization failure.
CONFLICT_ATTEMPTS = 5

_T = TypeVar("_T")

DAYS_OF_WEEK = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")

# Kinds of schedule, as stored in CronJob.schedule_type.
_INTERVAL = "interval"
_CRON = "cron"


# Schedules ---------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When a cron ticks: every ``interval``, or the times a cron ``expression`` matches.

    ``timezone`` is an IANA name; ``None`` means ``settings.TIME_ZONE``. All
    times given to and returned by the methods are aware; returned ticks are
    in UTC.
    """

    type: str
    interval: timedelta | None = None
    expression: str = ""
    timezone: str | None = None

    @classmethod
    def of(cls, job: CronJob) -> Schedule:
        return cls(job.schedule_type, job.interval, job.expression, job.timezone)

    @property
    def zone_name(self) -> str:
        return self.timezone if self.timezone is not None else default_zone_name()

    def zone(self) -> ZoneInfo:
        return _load_zone(self.zone_name)

    def first_tick(self, now: datetime) -> datetime:
        """The first tick for a cron first seen at ``now``: ``now`` itself for an
        interval (Convex), else the first time at or after ``now`` that matches."""
        if self.type == _INTERVAL:
            return now
        return self._first(self._ticks_after(now - timedelta(microseconds=1)))

    def tick_after(self, tick: datetime) -> datetime:
        """The tick that follows ``tick``, counted from ``tick`` (not from when a run ended)."""
        if self.type == _INTERVAL:
            assert self.interval is not None
            return tick + self.interval
        return self._first(self._ticks_after(tick))

    def resume_tick(self, last_tick: datetime | None, now: datetime) -> datetime:
        """The next tick at or after ``now``, without replaying what came before.

        An interval keeps its phase: the first ``last_tick + k * interval`` at
        or after ``now`` (``now`` if it never ticked).
        """
        if self.type == _INTERVAL:
            assert self.interval is not None
            if last_tick is None:
                return now
            steps = max(1, math.ceil((now - last_tick) / self.interval))
            return last_tick + steps * self.interval
        return self.first_tick(now)

    def catch_up(self, next_tick: datetime, now: datetime) -> tuple[datetime, int, datetime]:
        """For a cron due at ``next_tick``, at ``now``: ``(latest, skipped, following)``.

        ``latest`` is the last tick at or before ``now``, the one to run;
        ``skipped`` counts the ticks from ``next_tick`` up to it that were missed;
        ``following`` is the first tick after ``now``.
        """
        if self.type == _INTERVAL:
            assert self.interval is not None
            skipped = max(0, (now - next_tick) // self.interval)
            latest = next_tick + skipped * self.interval
            return latest, skipped, latest + self.interval
        latest, skipped = next_tick, 0
        ticks = self._ticks_after(next_tick)
        for tick in ticks:
            if tick > now:
                return latest, skipped, tick
            if skipped >= MAX_COUNTED_TICKS:
                break
            latest, skipped = tick, skipped + 1
        else:
            raise SchedulingError(
                gettext("The cron expression %(expression)s no longer matches.")
                % {"expression": repr(self.expression)}
            )
        # A very long outage: estimate the ticks up to the last week from their
        # average spacing instead of walking every one of them.
        spacing = (latest - next_tick) / skipped
        restart = max(latest, now - timedelta(days=8))
        skipped += round((restart - latest) / spacing)
        for tick in self._ticks_after(restart):
            if tick > now:
                return latest, skipped, tick
            latest, skipped = tick, skipped + 1
        raise SchedulingError(
            gettext("The cron expression %(expression)s no longer matches.")
            % {"expression": repr(self.expression)}
        )

    def describe(self) -> str:
        """The schedule in words, in the active language: ``"every day at 08:30 (Asia/Tokyo)"``.

        Logs use :meth:`describe_in_english`.
        """
        if self.type == _INTERVAL:
            assert self.interval is not None
            return _duration_words(self.interval)
        return gettext("%(schedule)s (%(zone)s)") % {
            "schedule": _expression_words(self.expression),
            "zone": self.zone_name,
        }

    def describe_in_english(self) -> str:
        """:meth:`describe` for logs, which stay English whatever the language."""
        with translation.override(None):
            return self.describe()

    def _ticks_after(self, after: datetime) -> Iterator[datetime]:
        """Matching times strictly after ``after``, in UTC, strictly increasing."""
        try:
            zone = self.zone()
            ticks = CronSim(self.expression, after.astimezone(zone))
        except (CronSimError, ValueError, KeyError) as exc:
            raise SchedulingError(
                gettext("Bad cron schedule %(expression)s: %(error)s.")
                % {"expression": repr(self.expression), "error": exc}
            ) from None
        for local in ticks:
            tick = local.astimezone(UTC)
            # Wall-clock iteration can land before ``after`` around a
            # fall-back hour; only what is really later counts.
            if tick > after:
                after = tick
                yield tick

    def _first(self, ticks: Iterator[datetime]) -> datetime:
        for tick in ticks:
            return tick
        raise SchedulingError(
            gettext("The cron expression %(expression)s matches no time in the next 50 years.")
            % {"expression": repr(self.expression)},
            field="cron",
        )


def default_zone_name() -> str:
    """``settings.TIME_ZONE``, the zone of a cron declared without one (UTC if unset)."""
    from django.conf import settings

    return settings.TIME_ZONE or "UTC"


def _load_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise SchedulingError(
            gettext("Unknown time zone %(name)s; use an IANA name such as 'Europe/Paris' or 'UTC'.")
            % {"name": repr(name)},
            field="timezone",
        ) from None


def _duration_words(duration: timedelta) -> str:
    """``"every 5 minutes"``, ``"every hour"``, ``"every 1 day 2 hours"``."""
    total = duration.total_seconds()
    units = (
        (86400, gettext("every day"), lambda n: ngettext("%d day", "%d days", n) % n),
        (3600, gettext("every hour"), lambda n: ngettext("%d hour", "%d hours", n) % n),
        (60, gettext("every minute"), lambda n: ngettext("%d minute", "%d minutes", n) % n),
    )
    parts, ones = [], []
    for size, every_one, words in units:
        count, total = divmod(total, size)
        if count:
            parts.append(words(int(count)))
            ones.append(every_one if count == 1 else "")
    if total:
        seconds = f"{total:g}"
        parts.append(gettext("1 second") if seconds == "1" else gettext("%s seconds") % seconds)
        ones.append(gettext("every second") if seconds == "1" else "")
    if len(parts) == 1 and ones[0]:
        return ones[0]
    return gettext("every %(duration)s") % {"duration": " ".join(parts)}


def _expression_words(expression: str) -> str:
    fields = expression.split()
    minute, hour, day, month, weekday = fields
    if minute.isdigit() and month == "*":
        at = f"{int(hour):02d}:{int(minute):02d}" if hour.isdigit() else ""
        if hour == "*" and day == "*" and weekday == "*":
            return gettext("every hour at minute %(minute)d") % {"minute": int(minute)}
        if at and day == "*" and weekday == "*":
            return gettext("every day at %(time)s") % {"time": at}
        if at and day == "*" and weekday.isdigit() and int(weekday) <= 7:
            # Django's own names, translated by its catalogue (Monday is 0 there).
            name = WEEKDAYS[(int(weekday) - 1) % 7]
            return gettext("every %(weekday)s at %(time)s") % {"weekday": name, "time": at}
        if at and day.isdigit() and weekday == "*":
            return gettext("on day %(day)d of every month at %(time)s") % {
                "day": int(day),
                "time": at,
            }
    if not translation.get_language() or translation.get_language().startswith("en"):
        words = CronSim(expression, datetime(2000, 1, 1)).explain()
        return words[:1].lower() + words[1:]
    # cronsim explains in English only: elsewhere, show the expression itself.
    return gettext("the cron expression %(expression)s") % {"expression": expression}


# Definitions -------------------------------------------------------------


@dataclass(frozen=True)
class CronDefinition:
    """A validated cron: name, function, arguments and schedule."""

    name: str
    function: str
    kind: str
    args: dict[str, Any] = field(hash=False)
    schedule: Schedule


class CronRegistry:
    """The crons declared in code: name → :class:`CronDefinition`."""

    def __init__(self) -> None:
        self._crons: dict[str, CronDefinition] = {}
        self._lock = threading.Lock()

    def declare(self, definition: CronDefinition) -> None:
        with self._lock:
            existing = self._crons.get(definition.name)
            # Importing a crons module again (autoreload, a test) declares the
            # same crons again; only a different definition is a clash.
            if existing is not None and existing != definition:
                raise SchedulingError(
                    gettext(
                        "A cron named %(name)s is already declared in code (calling "
                        "%(function)s, %(schedule)s); cron names must be unique."
                    )
                    % {
                        "name": repr(definition.name),
                        "function": repr(existing.function),
                        "schedule": existing.schedule.describe(),
                    },
                    field="name",
                )
            self._crons[definition.name] = definition

    def get(self, name: str) -> CronDefinition | None:
        return self._crons.get(name)

    def all(self) -> list[CronDefinition]:
        return sorted(self._crons.values(), key=lambda definition: definition.name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._crons.pop(name, None)


code_crons = CronRegistry()


def declared() -> list[CronDefinition]:
    """The crons declared in code in this process, by name."""
    return code_crons.all()


def interval(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    seconds: float = 0,
    minutes: float = 0,
    hours: float = 0,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` every so many seconds, minutes and hours (added up).

    The first run is due when a worker first sees the cron; each next tick is
    counted from the previous tick, not from when the run finished.
    """
    every = timedelta()
    for unit, value in (("seconds", seconds), ("minutes", minutes), ("hours", hours)):
        every += timedelta(**{unit: _non_negative(value, unit)})
    return _declare(name, fn, args, Schedule(_INTERVAL, _check_interval(every), "", timezone))


def hourly(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    minute: int = 0,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` every hour at ``minute``."""
    minute = _in_range(minute, "minute", 0, 59)
    return _declare(name, fn, args, _cron_schedule(f"{minute} * * * *", timezone))


def daily(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    hour: int = 0,
    minute: int = 0,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` every day at ``hour:minute`` in ``timezone``."""
    hour, minute = _in_range(hour, "hour", 0, 23), _in_range(minute, "minute", 0, 59)
    return _declare(name, fn, args, _cron_schedule(f"{minute} {hour} * * *", timezone))


def weekly(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    day_of_week: str,
    hour: int = 0,
    minute: int = 0,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` every week on ``day_of_week`` (``"monday"``) at ``hour:minute``."""
    day = _day_of_week(day_of_week)
    hour, minute = _in_range(hour, "hour", 0, 23), _in_range(minute, "minute", 0, 59)
    return _declare(name, fn, args, _cron_schedule(f"{minute} {hour} * * {day}", timezone))


def monthly(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    day: int,
    hour: int = 0,
    minute: int = 0,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` every month on ``day`` at ``hour:minute``.

    As in cron, months without that day (the 31st in April) are skipped.
    """
    day = _in_range(day, "day", 1, 31)
    hour, minute = _in_range(hour, "hour", 0, 23), _in_range(minute, "minute", 0, 59)
    return _declare(name, fn, args, _cron_schedule(f"{minute} {hour} {day} * *", timezone))


def cron(
    name: str,
    fn: Callable[..., Any] | str,
    spec: str,
    args: dict[str, Any] | None = None,
    *,
    timezone: str | None = None,
) -> CronDefinition:
    """Run ``fn(ctx, **args)`` at the times the 5-field cron expression ``spec`` matches."""
    return _declare(name, fn, args, _cron_schedule(spec, timezone))


def _declare(
    name: str, fn: Callable[..., Any] | str, args: dict[str, Any] | None, schedule: Schedule
) -> CronDefinition:
    definition = _define(name, fn, args, schedule)
    code_crons.declare(definition)
    return definition


def _define(name: Any, fn: Any, args: dict[str, Any] | None, schedule: Schedule) -> CronDefinition:
    name = _check_name(name)
    entry = _resolve(fn)
    args = {} if args is None else args
    encode_args(entry, args)
    if schedule.timezone is not None:
        _load_zone(schedule.timezone)
    return CronDefinition(name, entry.name, entry.kind.value, args, schedule)


def _resolve(fn: Any) -> RegisteredFunction:
    try:
        return registry.resolve(fn)
    except SchedulingError as exc:
        raise SchedulingError(str(exc), field="function") from None


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise SchedulingError(gettext("A cron name must be a non-empty string."), field="name")
    if len(name) > MAX_NAME_LENGTH:
        raise SchedulingError(
            gettext("A cron name has at most %(max)d characters, not %(length)d.")
            % {"max": MAX_NAME_LENGTH, "length": len(name)},
            field="name",
        )
    if name != name.strip() or "/" in name or not name.isprintable():
        raise SchedulingError(
            gettext(
                "A cron name cannot start or end with spaces, contain '/' (it is part of the "
                "API's URLs) or control characters: %(name)s."
            )
            % {"name": repr(name)},
            field="name",
        )
    return name


def _cron_schedule(spec: Any, timezone: Any) -> Schedule:
    if timezone is not None and not isinstance(timezone, str):
        raise SchedulingError(
            gettext("A time zone is an IANA name (a string), not %(type)s.")
            % {"type": type(timezone).__name__},
            field="timezone",
        )
    if not isinstance(spec, str):
        raise SchedulingError(
            gettext("A cron expression is a string, not %(type)s.") % {"type": type(spec).__name__},
            field="cron",
        )
    fields = spec.split()
    if len(fields) != 5:
        raise SchedulingError(
            gettext(
                "A cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                "not %(count)d: %(expression)s."
            )
            % {"count": len(fields), "expression": repr(spec)},
            field="cron",
        )
    expression = " ".join(fields)
    if len(expression) > 100:
        raise SchedulingError(
            gettext("A cron expression has at most 100 characters."), field="cron"
        )
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as exc:
        raise SchedulingError(
            gettext("Bad cron expression %(expression)s: %(error)s.")
            % {"expression": repr(spec), "error": exc},
            field="cron",
        ) from None
    if timezone is not None:
        _load_zone(timezone)
    # One that never matches (the 30th of February) is refused now, not at run
    # time; in UTC, so that declaring needs no settings.
    Schedule(_CRON, None, expression, "UTC").first_tick(datetime(2000, 1, 1, tzinfo=UTC))
    return Schedule(_CRON, None, expression, timezone)


def _check_interval(every: Any) -> timedelta:
    if not isinstance(every, timedelta):
        raise SchedulingError(
            gettext("An interval is a datetime.timedelta, not %(type)s.")
            % {"type": type(every).__name__},
            field="interval",
        )
    if every < MIN_INTERVAL:
        raise SchedulingError(
            gettext("An interval must be at least one second, not %(seconds)g s.")
            % {"seconds": every.total_seconds()},
            field="interval",
        )
    if every > MAX_DISTANCE:
        raise SchedulingError(
            gettext("An interval must be at most five years (%(days)d days).")
            % {"days": MAX_DISTANCE.days},
            field="interval",
        )
    return every


def _non_negative(value: Any, unit: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SchedulingError(
            gettext("%(unit)s must be a number, not %(type)s.")
            % {"unit": unit, "type": type(value).__name__},
            field="interval",
        )
    number = float(value)
    if not math.isfinite(number) or number < 0 or number > MAX_DISTANCE.total_seconds():
        raise SchedulingError(
            gettext("%(unit)s must be a finite number, 0 or more, not %(value)s.")
            % {"unit": unit, "value": repr(value)},
            field="interval",
        )
    return number


def _in_range(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SchedulingError(
            gettext("%(what)s must be an integer from %(low)d to %(high)d, not %(value)s.")
            % {"what": what, "low": low, "high": high, "value": repr(value)},
            field=what,
        )
    if not low <= value <= high:
        raise SchedulingError(
            gettext("%(what)s must be from %(low)d to %(high)d, not %(value)d.")
            % {"what": what, "low": low, "high": high, "value": value},
            field=what,
        )
    return value


def _day_of_week(value: Any) -> int:
    if isinstance(value, str):
        text = value.strip().lower()
        for number, day in enumerate(DAYS_OF_WEEK):
            if text in (day, day[:3]):
                return number
    raise SchedulingError(
        gettext("day_of_week must be the name of a day, such as 'monday' or 'mon', not %(value)s.")
        % {"value": repr(value)},
        field="day_of_week",
    )


def describe(job: CronJob) -> str:
    """A stored cron's schedule in words, such as ``"every day at 08:30 (Asia/Tokyo)"``."""
    return Schedule.of(job).describe()


# Run-time crons ----------------------------------------------------------


def define(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    interval: timedelta | None = None,
    cron: str | None = None,
    timezone: str | None = None,
) -> CronDefinition:
    """Check a run-time cron as :func:`register` does, without writing anything.

    Raises :class:`SchedulingError` naming the input at fault; the admin's
    form uses it to put the message on the right field.
    """
    if (interval is None) == (cron is None):
        raise SchedulingError(
            gettext("Give exactly one of interval (a timedelta) or cron (a 5-field expression).")
        )
    if interval is not None:
        if timezone is not None and not isinstance(timezone, str):
            raise SchedulingError(
                gettext("A time zone is an IANA name (a string)."), field="timezone"
            )
        schedule = Schedule(_INTERVAL, _check_interval(interval), "", timezone)
    else:
        schedule = _cron_schedule(cron, timezone)
    return _define(name, fn, args, schedule)


def register(
    name: str,
    fn: Callable[..., Any] | str,
    args: dict[str, Any] | None = None,
    *,
    interval: timedelta | None = None,
    cron: str | None = None,
    timezone: str | None = None,
) -> CronJob:
    """Create or replace the run-time cron ``name``; return it.

    Give exactly one of ``interval`` (a :class:`~datetime.timedelta` of at least
    one second) and ``cron`` (a 5-field expression, read in ``timezone``,
    ``settings.TIME_ZONE`` by default). Written on the caller's connection:
    inside ``transaction.atomic()`` it commits or rolls back with the caller.
    Replacing a cron keeps its history and pause state; a changed schedule
    takes effect from its next tick. A name declared in code is refused.
    """
    definition = define(name, fn, args, interval=interval, cron=cron, timezone=timezone)
    if code_crons.get(definition.name) is not None:
        raise _declared_in_code(definition.name)

    using = router.db_for_write(_cron_model())
    return _retrying_conflicts(using, lambda: _register(definition, using))


def _register(definition: CronDefinition, using: str) -> CronJob:
    from .models import CronSource

    now = clock.now()
    with write_transaction(using):
        # A concurrent register may create the name between our look and our
        # insert; then it is there to lock and replace on the next round.
        for _ in range(3):
            job = _locked(using, definition.name)
            if job is None:
                job = _create(definition, CronSource.RUNTIME, now, using)
                if job is None:
                    continue
                logger.info(
                    "cron registered cron=%s schedule=%s",
                    job.name,
                    Schedule.of(job).describe_in_english(),
                )
                return job
            if job.source == CronSource.CODE and job.removed_time is None:
                raise _declared_in_code(job.name)
            if _apply(job, definition, CronSource.RUNTIME, now, using):
                logger.info(
                    "cron replaced cron=%s schedule=%s",
                    job.name,
                    Schedule.of(job).describe_in_english(),
                )
            return job
    raise RuntimeError(f"The cron {definition.name!r} kept being created and deleted meanwhile.")


def _retrying_conflicts(using: str, write: Callable[[], _T]) -> _T:
    """``write()``, again after a deadlock or serialization failure when it is its own
    transaction.

    Inside the caller's transaction a conflict is the caller's to retry (the
    worker retries a mutation's); on its own, two callers creating one name
    at once can deadlock on MySQL and MariaDB, and the loser simply goes again.
    """
    if not transaction.get_autocommit(using=using):
        return write()
    attempt = 0
    while True:
        try:
            return write()
        except DatabaseError as exc:
            attempt += 1
            if classify_error(exc) is not Transience.CONFLICT or attempt >= CONFLICT_ATTEMPTS:
                raise
            time.sleep(
                full_jitter(
                    attempt,
                    scheduler_settings.CONFLICT_BACKOFF_INITIAL,
                    scheduler_settings.CONFLICT_BACKOFF_MAX,
                )
            )


def delete(name: str) -> bool:
    """Delete the run-time cron ``name`` and cancel its pending run; whether it existed.

    Transactional with the caller, like :func:`register`. A cron declared in
    code is refused: remove it from the code instead. A code cron that a
    worker already found removed from the code can be deleted.
    """
    from .models import CronSource

    if not isinstance(name, str):
        raise SchedulingError(gettext("A cron name must be a string."), field="name")
    if code_crons.get(name) is not None:
        raise _declared_in_code(name)
    using = router.db_for_write(_cron_model())
    now = clock.now()
    with write_transaction(using):
        job = _locked(using, name)
        if job is None:
            return False
        if job.source == CronSource.CODE and job.removed_time is None:
            raise _declared_in_code(name)
        job.delete()
        canceled = _cancel_pending_runs(name, now, using)
    logger.info("cron deleted cron=%s canceled=%d", name, canceled)
    return True


def pause(name: str) -> bool:
    """Stop ``name`` from starting runs until :func:`resume`; whether it was running.

    A run already started is left alone. Transactional with the caller.
    """
    from .models import CronJob

    using = router.db_for_write(CronJob)
    with write_transaction(using):
        changed = CronJob.objects.using(using).filter(name=name).pause(clock.now())
        if not changed and not CronJob.objects.using(using).filter(name=name).exists():
            raise _unknown(name)
    if changed:
        logger.info("cron paused cron=%s", name)
    return bool(changed)


def resume(name: str) -> bool:
    """Let a paused cron run again from its next tick; whether it was paused.

    The ticks that passed while it was paused are not replayed (nor counted
    as missed). Transactional with the caller.
    """
    using = router.db_for_write(_cron_model())
    now = clock.now()
    with write_transaction(using):
        job = _locked(using, name)
        if job is None:
            raise _unknown(name)
        if not job.paused:
            return False
        job.paused = False
        if job.removed_time is None:
            job.next_tick = Schedule.of(job).resume_tick(job.last_tick, now)
        job.updated_time = now
        job.save(update_fields=["paused", "next_tick", "updated_time"])
    logger.info("cron resumed cron=%s next_tick=%s", name, job.next_tick)
    return True


def _cron_model() -> type[CronJob]:
    from .models import CronJob

    return CronJob


def _locked(using: str, name: str) -> CronJob | None:
    return _cron_model().objects.using(using).select_for_update().filter(name=name).first()


def _create(definition: CronDefinition, source: str, now: datetime, using: str) -> CronJob | None:
    """Insert a new cron, or ``None`` when a concurrent caller inserted that name first."""
    CronJob = _cron_model()
    schedule = definition.schedule
    job = CronJob(
        name=definition.name,
        function=definition.function,
        kind=definition.kind,
        args=definition.args,
        schedule_type=schedule.type,
        interval=schedule.interval,
        expression=schedule.expression,
        timezone=schedule.zone_name,
        source=source,
        next_tick=schedule.first_tick(now),
        created_time=now,
        updated_time=now,
    )
    try:
        with transaction.atomic(using=using):
            job.save(using=using, force_insert=True)
    except IntegrityError:
        if not CronJob.objects.using(using).filter(name=definition.name).exists():
            raise
        return None
    return job


_DEFINITION_FIELDS = ("function", "kind", "args", "schedule_type", "interval", "expression")


def _apply(
    job: CronJob, definition: CronDefinition, source: str, now: datetime, using: str
) -> bool:
    """Make ``job`` say what ``definition`` says; whether anything changed."""
    schedule = definition.schedule
    wanted = {
        "function": definition.function,
        "kind": definition.kind,
        "args": definition.args,
        "schedule_type": schedule.type,
        "interval": schedule.interval,
        "expression": schedule.expression,
        "timezone": schedule.zone_name,
        "source": source,
    }
    before = Schedule.of(job)
    changed = [name for name, value in wanted.items() if getattr(job, name) != value]
    revived = job.removed_time is not None
    if not changed and not revived:
        return False
    for name, value in wanted.items():
        setattr(job, name, value)
    job.removed_time = None
    if job.paused:
        job.next_tick = None
    elif revived:
        job.next_tick = schedule.first_tick(now)
    elif Schedule.of(job) != before:
        # A changed schedule takes effect from its next tick: nothing runs now.
        job.next_tick = Schedule.of(job).resume_tick(job.last_tick, now)
    job.updated_time = now
    job.save(
        using=using,
        update_fields=[*wanted, "removed_time", "next_tick", "updated_time"],
    )
    return True


def _cancel_pending_runs(name: str, now: datetime, using: str) -> int:
    from .models import ScheduledFunction

    return ScheduledFunction.objects.using(using).filter(cron=name).pending().cancel(now)


def _declared_in_code(name: str) -> SchedulingError:
    return SchedulingError(
        gettext("The cron %(name)s is declared in code; change or remove it in its crons module.")
        % {"name": repr(name)},
        field="name",
    )


def _unknown(name: str) -> SchedulingError:
    return SchedulingError(
        gettext("No cron is named %(name)s.") % {"name": repr(name)}, field="name"
    )


# The worker's hooks ------------------------------------------------------


def sync_code_crons(*, using: str) -> None:
    """Make the database's code crons match this process's declarations.

    Called by a worker when it starts. New declarations are created (an
    interval cron is due at once); changed ones take effect from their next
    tick; those gone from the code stop, their pending run canceled. A
    run-time cron with the name of a code cron is taken over by the code.
    Each change is logged at INFO (a take-over at WARNING).
    """
    from django.db.models import Q

    from .models import CronSource

    CronJob = _cron_model()
    definitions = {definition.name: definition for definition in code_crons.all()}
    now = clock.now()
    with write_transaction(using):
        jobs = {
            job.name: job
            for job in CronJob.objects.using(using)
            .select_for_update()
            .filter(Q(source=CronSource.CODE) | Q(name__in=list(definitions)))
        }
        for name, definition in definitions.items():
            job = jobs.get(name)
            if job is None:
                created = _create(definition, CronSource.CODE, now, using)
                if created is not None:
                    logger.info(
                        "cron created from code cron=%s schedule=%s next_tick=%s",
                        name,
                        definition.schedule.describe_in_english(),
                        created.next_tick,
                    )
                continue
            if job.source == CronSource.RUNTIME:
                logger.warning(
                    "cron declared in code replaces the run-time cron of the same name cron=%s",
                    name,
                )
            revived = job.removed_time is not None
            if _apply(job, definition, CronSource.CODE, now, using):
                logger.info(
                    "cron %s from code cron=%s schedule=%s next_tick=%s",
                    "restored" if revived else "changed",
                    name,
                    definition.schedule.describe_in_english(),
                    job.next_tick,
                )
        for name, job in jobs.items():
            if name in definitions or job.source != CronSource.CODE or job.removed_time:
                continue
            job.removed_time = now
            job.next_tick = None
            job.updated_time = now
            job.save(using=using, update_fields=["removed_time", "next_tick", "updated_time"])
            canceled = _cancel_pending_runs(name, now, using)
            logger.info("cron removed from code cron=%s canceled=%d", name, canceled)


def start_due_runs(*, using: str, now: datetime) -> int:
    """Create the run of every cron due at ``now``; return how many runs were created.

    Called by a worker on every poll, before it claims due functions. When
    nothing is due this is one query on the ``next_tick`` index. Due crons
    are locked with ``SKIP LOCKED`` (an immediate transaction on SQLite), so
    any number of workers share the work; the unique ``(cron,
    scheduled_time)`` constraint makes a second row for one tick impossible.
    For each due cron: the ticks missed while no worker ran are skipped and
    counted, the latest one runs, unless the previous run is still pending or
    in progress (then that tick is skipped and counted too), and
    ``next_tick`` moves to the first tick after ``now``.
    """
    CronJob = _cron_model()
    crons = CronJob.objects.using(using)
    if not crons.due(now).exists():
        return 0
    started = 0
    while True:
        with write_transaction(using):
            batch = list(crons.due(now).select_for_update(skip_locked=True)[:DUE_BATCH_SIZE])
            if batch:
                unfinished = _unfinished_runs(batch, using)
                for job in batch:
                    started += _start_tick(job, now, unfinished, using)
        if len(batch) < DUE_BATCH_SIZE:
            return started


def _unfinished_runs(batch: list[CronJob], using: str) -> dict[int, str]:
    from .models import ScheduledFunction, State

    run_ids = [job.last_run_id for job in batch if job.last_run_id is not None]
    if not run_ids:
        return {}
    return dict(
        ScheduledFunction.objects.using(using)
        .filter(pk__in=run_ids, state__in=(State.PENDING, State.IN_PROGRESS))
        .values_list("pk", "state")
    )


def _start_tick(job: CronJob, now: datetime, unfinished: dict[int, str], using: str) -> int:
    from django.db.models import F

    CronJob = _cron_model()
    rows = CronJob.objects.using(using).filter(pk=job.pk)
    assert job.next_tick is not None  # only due crons get here
    try:
        latest, missed, following = Schedule.of(job).catch_up(job.next_tick, now)
    except SchedulingError as exc:
        # Only a row edited around validation gets here; stop it rather than
        # fail every poll of every worker.
        logger.error("cron paused: its schedule cannot be computed cron=%s error=%s", job.name, exc)
        rows.update(paused=True, next_tick=None, updated_time=now)
        return 0
    changes: dict[str, Any] = {"next_tick": following, "last_tick": latest, "updated_time": now}
    if missed:
        changes["missed_count"] = F("missed_count") + missed
        logger.warning(
            "cron skipping %d missed run(s) cron=%s since=%s; running the latest tick=%s",
            missed,
            job.name,
            job.next_tick.isoformat(),
            latest.isoformat(),
        )
    started = 0
    if job.last_run_id in unfinished:
        changes["overlap_count"] = F("overlap_count") + 1
        logger.warning(
            "cron skipping the tick=%s cron=%s: its previous run id=%s is still %s",
            latest.isoformat(),
            job.name,
            job.last_run_id,
            unfinished[job.last_run_id],
        )
    else:
        pk = _insert_run(job, latest, now, using)
        if pk is not None:
            changes["last_run_id"] = pk
            changes["run_count"] = F("run_count") + 1
            started = 1
            logger.debug("cron run created cron=%s id=%s tick=%s", job.name, pk, latest)
    rows.update(**changes)
    return started


def _insert_run(job: CronJob, tick: datetime, now: datetime, using: str) -> int | None:
    """Insert the run of ``tick``; ``None`` if that tick already has its run."""
    from .models import ScheduledFunction, State

    functions = ScheduledFunction.objects.using(using)
    try:
        with transaction.atomic(using=using):
            return functions.insert_one(
                args_json=json.dumps(job.args, separators=(",", ":"), ensure_ascii=False),
                name=job.function,
                kind=job.kind,
                state=State.PENDING,
                scheduled_time=tick,
                next_run_time=tick,
                creation_time=now,
                cron=job.name,
            )
    except IntegrityError as exc:
        if not _is_tick_collision(exc):
            raise
    logger.info("cron tick already has its run cron=%s tick=%s", job.name, tick.isoformat())
    return None


def _is_tick_collision(exc: IntegrityError) -> bool:
    """Whether ``exc`` is the unique ``(cron, scheduled_time)`` constraint refusing a row."""
    from .models import ScheduledFunction

    message = str(exc)
    if "cs_cron_tick_unique" in message:  # PostgreSQL, MySQL and MariaDB name the constraint
        return True
    # SQLite names the columns instead.
    meta = ScheduledFunction._meta
    columns = [meta.get_field(name) for name in ("cron", "scheduled_time")]
    return (
        ", ".join(
            f"{meta.db_table}.{column.column}" for column in columns if isinstance(column, Field)
        )
        in message
    )
