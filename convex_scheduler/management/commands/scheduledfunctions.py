"""``manage.py scheduledfunctions``: list, show and cancel scheduled functions."""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, router
from django.utils import dateparse, timezone
from django.utils.connection import ConnectionDoesNotExist
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from convex_scheduler import clock
from convex_scheduler.exceptions import SchedulingError
from convex_scheduler.models import FINISHED_STATES, ScheduledFunction, State
from convex_scheduler.scheduler import parse_id, scheduler

#: The terminal width the ``list`` table fits in.
WIDTH = 80
MAX_LIMIT = 10_000
ELLIPSIS = "…"
_STATE_WIDTH = max(len(value) for value in State.values)
_TIME_FORMAT = "%Y-%m-%d %H:%M"


def state(value: str) -> str:
    """A state by its value (``inProgress``), in any case, with or without ``_``/``-``."""
    key = value.replace("_", "").replace("-", "").replace(" ", "").lower()
    for choice in State.values:
        if choice.lower() == key:
            return choice
    raise argparse.ArgumentTypeError(
        gettext("%(value)s is not a state; choose from %(states)s")
        % {"value": repr(value), "states": ", ".join(State.values)}
    )


def limit(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a whole number") % {"value": repr(value)}
        ) from None
    if not 1 <= number <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            gettext("must be from 1 to %(max)d, not %(number)d")
            % {"max": MAX_LIMIT, "number": number}
        )
    return number


def moment(value: str) -> datetime | date:
    """An ISO 8601 datetime (aware, or naive in the current time zone) or a date."""
    text = value.strip()
    try:
        # A date first: parse_datetime would read one as midnight.
        day = dateparse.parse_date(text)
        if day is not None:
            return day
        parsed = dateparse.parse_datetime(text)
        if parsed is not None:
            if timezone.is_naive(parsed):
                parsed = timezone.make_aware(parsed)
            # Times that do not exist in UTC (the database's) surface here
            # rather than in a query.
            parsed.astimezone(UTC)
            return parsed
    except (ValueError, OverflowError) as exc:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a valid date or time: %(error)s")
            % {"value": repr(value), "error": exc}
        ) from None
    raise argparse.ArgumentTypeError(
        gettext(
            "%(value)s is not an ISO 8601 date or datetime, such as 2026-05-01 or "
            "2026-05-01T09:30 (naive times are in the current time zone) or 2026-05-01T09:30Z"
        )
        % {"value": repr(value)}
    )


def scheduled_function_id(value: str) -> int:
    """A row id, with the same rules as ``scheduler.cancel``, and a message naming the problem."""
    text = value.strip()
    try:
        return parse_id(text)
    except SchedulingError:
        pass
    if text.isascii() and text.isdigit() and int(text) > 0:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is too large to be a scheduled function id (at most %(max)d)")
            % {"value": text, "max": 2**63 - 1}
        )
    raise argparse.ArgumentTypeError(
        gettext("%(value)s is not a scheduled function id; ids are whole numbers from 1")
        % {"value": repr(value)}
    )


def _start_of(day: date) -> datetime | None:
    """Midnight at the start of ``day`` in the current time zone; None if not in UTC's range."""
    try:
        start = timezone.make_aware(datetime.combine(day, time.min))
        start.astimezone(UTC)
    except OverflowError:
        return None
    return start


def _printable(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with control and format characters escaped, safe to print to a terminal.

    Names and error texts come from user code (and attackers' input): an
    escape sequence in them must not drive the operator's terminal.
    """
    kept = "\n\t" if keep_newlines else ""
    out = []
    for char in text:
        if char in kept or unicodedata.category(char)[0] != "C":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _char_width(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def _display_width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` terminal columns (ending in … when cut), padded to it."""
    if _display_width(text) > width:
        used = 0
        kept = []
        for char in text:
            if used + _char_width(char) > width - 1:
                break
            kept.append(char)
            used += _char_width(char)
        text = "".join(kept) + ELLIPSIS
    return text + " " * (width - _display_width(text))


def _first_line(error: str) -> str:
    lines = error.strip().splitlines()
    return lines[0] if lines else ""


def _local(value: datetime | None) -> str:
    if value is None:
        return "-"
    return timezone.localtime(value).isoformat(sep=" ", timespec="microseconds")


class Command(BaseCommand):
    # Lazy: translated into the language active when the help is shown.
    help: str = _(  # type: ignore[assignment]
        "List, show and cancel scheduled functions: "
        "'list' the newest (with filters), 'show ID' one in full, 'cancel ID'."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        self.help = str(self.help)  # argparse needs a str
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        common = CommandParser(add_help=False)
        common.add_argument(
            "--database",
            default=None,
            help=gettext("The database alias to use (default: the router's choice for the model)."),
        )
        subcommands = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{list,show,cancel}"
        )

        listing = subcommands.add_parser(
            "list",
            parents=[common],
            help=gettext("A table of scheduled functions, newest scheduled time first."),
        )
        listing.add_argument(
            "--state",
            type=state,
            help=gettext("Only this state: %(states)s.") % {"states": ", ".join(State.values)},
        )
        listing.add_argument(
            "--name",
            help=gettext(
                "Only this function name; a trailing * matches names that start with the rest."
            ),
        )
        listing.add_argument(
            "--since",
            type=moment,
            help=gettext("Only those scheduled at or after this ISO 8601 date or datetime."),
        )
        listing.add_argument(
            "--until",
            type=moment,
            help=gettext(
                "Only those scheduled before this datetime (a date includes that whole day)."
            ),
        )
        listing.add_argument(
            "--limit",
            type=limit,
            default=50,
            help=gettext("Show at most this many rows, 1 to %(max)d (default: 50).")
            % {"max": MAX_LIMIT},
        )

        show = subcommands.add_parser(
            "show", parents=[common], help=gettext("Every field of one scheduled function.")
        )
        show.add_argument("id", type=scheduled_function_id, help=gettext("Its id."))

        cancel = subcommands.add_parser(
            "cancel",
            parents=[common],
            help=gettext("Cancel one scheduled function, with the rules of scheduler.cancel."),
        )
        cancel.add_argument("id", type=scheduled_function_id, help=gettext("Its id."))

    def handle(self, *args: Any, **options: Any) -> None:
        subcommand = options["subcommand"]
        if subcommand == "list":
            using = self._database(options["database"], router.db_for_read(ScheduledFunction))
            self._list(using, options)
        elif subcommand == "show":
            using = self._database(options["database"], router.db_for_read(ScheduledFunction))
            self._show(using, options["id"])
        else:
            using = self._database(options["database"], router.db_for_write(ScheduledFunction))
            self._cancel(using, options["id"], options["verbosity"])

    def _database(self, alias: str | None, default: str) -> str:
        using = default if alias is None else alias
        try:
            connection = connections[using]
        except ConnectionDoesNotExist:
            known = ", ".join(repr(name) for name in connections)
            raise CommandError(
                gettext("--database %(alias)s is not in DATABASES (known: %(known)s).")
                % {"alias": repr(using), "known": known}
            ) from None
        if ScheduledFunction._meta.db_table not in connection.introspection.table_names():
            raise CommandError(
                gettext(
                    "Database %(alias)s has no scheduled functions table; "
                    "run `python manage.py migrate` first."
                )
                % {"alias": repr(using)}
            )
        return using

    def _list(self, using: str, options: dict[str, Any]) -> None:
        rows = ScheduledFunction.objects.using(using).order_by("-scheduled_time", "-id")
        if options["state"]:
            rows = rows.filter(state=options["state"])
        name = options["name"]
        if name:
            rows = (
                rows.filter(name__startswith=name[:-1])
                if name.endswith("*")
                else rows.filter(name=name)
            )
        since, until = options["since"], options["until"]
        # A date is the whole day. Days at the edge of the calendar, whose
        # midnight is not a time in UTC, put no bound.
        if isinstance(since, date) and not isinstance(since, datetime):
            since = _start_of(since)
        if isinstance(until, date) and not isinstance(until, datetime):
            until = None if until == date.max else _start_of(until + timedelta(days=1))
        if since is not None and until is not None and since >= until:
            raise CommandError(gettext("--since must be earlier than --until."))
        if since is not None:
            rows = rows.filter(scheduled_time__gte=since)
        if until is not None:
            rows = rows.filter(scheduled_time__lt=until)
        found = list(
            rows.values_list("id", "state", "name", "scheduled_time", "attempts", "error")[
                : options["limit"] + 1
            ]
        )
        more = len(found) > options["limit"]
        found = found[: options["limit"]]
        for line in self._table(found):
            self.stdout.write(line)
        if options["verbosity"] >= 1:
            zone = timezone.get_current_timezone_name()
            if not found:
                self.stdout.write("No scheduled functions match.")
            elif more:
                self.stdout.write(
                    f"Showing the newest {len(found)} (times in {zone}); "
                    "narrow with filters or raise --limit for more."
                )
            else:
                self.stdout.write(f"Showing {len(found)} (times in {zone}).")

    def _table(self, found: list[tuple[Any, ...]]) -> Iterable[str]:
        if not found:
            return []
        cells = [
            (
                str(pk),
                state_,
                _printable(name),
                timezone.localtime(scheduled).strftime(_TIME_FORMAT),
                str(attempts),
                _printable(_first_line(error)),
            )
            for pk, state_, name, scheduled, attempts, error in found
        ]
        headers = ("ID", "STATE", "NAME", "SCHEDULED", "TRIES", "ERROR")
        id_width = max(len(headers[0]), *(len(row[0]) for row in cells))
        tries_width = max(len(headers[4]), *(len(row[4]) for row in cells))
        time_width = len(cells[0][3])
        gaps = len(headers) - 1
        free = WIDTH - gaps - id_width - _STATE_WIDTH - time_width - tries_width
        longest_name = max(len(headers[2]), *(_display_width(row[2]) for row in cells))
        longest_error = max(_display_width(row[5]) for row in cells)
        # The name comes first: the error column gets what the names leave, but
        # at least a third (the first line of a traceback is in ``show``).
        error_width = max(len(headers[5]), free - longest_name, min(longest_error, free // 3))
        name_width = free - error_width
        widths = (id_width, _STATE_WIDTH, name_width, time_width, tries_width, error_width)
        aligns = (str.rjust, str.ljust, None, str.ljust, str.rjust, None)

        def line(row: tuple[str, ...]) -> str:
            parts = []
            for text, width, align in zip(row, widths, aligns, strict=True):
                parts.append(_fit(text, width) if align is None else align(text, width))
            return " ".join(parts).rstrip()

        return [line(headers), *(line(row) for row in cells)]

    def _show(self, using: str, pk: int) -> None:
        row = ScheduledFunction.objects.using(using).filter(pk=pk).first()
        if row is None:
            raise CommandError(gettext("no scheduled function with id %(id)d") % {"id": pk})
        fields = [
            field
            for field in ScheduledFunction._meta.concrete_fields
            if field.name not in ("args", "error")
        ]
        label_width = max(len(field.attname) for field in fields) + 2
        for field in fields:
            value = getattr(row, field.attname)
            if isinstance(value, datetime):
                text = _local(value)
            elif value is None or value == "":
                text = "-"
            else:
                text = _printable(str(value))
            self.stdout.write(f"{field.attname:<{label_width}}{text}")
        children = list(
            ScheduledFunction.objects.using(using)
            .filter(parent_id=pk)
            .order_by("id")
            .values_list("id", flat=True)[:21]
        )
        shown = ", ".join(str(child) for child in children[:20])
        self.stdout.write(
            f"{'children':<{label_width}}{shown or '-'}{', …' if len(children) > 20 else ''}"
        )
        self.stdout.write("args")
        pretty = json.dumps(row.args, indent=2, sort_keys=True, ensure_ascii=False)
        for text in _printable(pretty, keep_newlines=True).splitlines():
            self.stdout.write(f"  {text}")
        self.stdout.write("error")
        for text in _printable(row.error, keep_newlines=True).splitlines() or ["-"]:
            self.stdout.write(f"  {text}")

    def _cancel(self, using: str, pk: int, verbosity: int) -> None:
        rows = ScheduledFunction.objects.using(using).filter(pk=pk)
        before = rows.values_list("state", "name", "kind").first()
        if before is None:
            raise CommandError(gettext("no scheduled function with id %(id)d") % {"id": pk})
        previous, name, kind = before
        label = f"scheduled function {pk} ({_printable(name)})"
        if previous in FINISHED_STATES:
            self.stdout.write(f"The {label} already finished: {previous}. Nothing to cancel.")
            return
        if using == router.db_for_write(ScheduledFunction):
            scheduler.cancel(pk)
        else:
            # scheduler.cancel writes where the router says; this is the same
            # transition on the alias asked for.
            rows.cancel(clock.now())
        after = rows.values_list("state", flat=True).first()
        if after != State.CANCELED:
            # A worker finished it between the two reads.
            self.stdout.write(f"The {label} already finished: {after}. Nothing to cancel.")
        elif verbosity >= 1 and previous == State.IN_PROGRESS:
            self.stdout.write(
                f"Canceled the {label}. The running {kind} keeps running, but its outcome "
                "will not be recorded and what it schedules from now on is born canceled."
            )
        elif verbosity >= 1:
            self.stdout.write(f"Canceled the {label}. It will not run.")
