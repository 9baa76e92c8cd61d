"""``manage.py schedulerhealth``: exit 0 or 1 with one line saying why, for probes."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from typing import Any, NoReturn

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, router
from django.db.models.functions import Now
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from convex_scheduler.models import ScheduledFunction, SchedulerWorker

#: The exit status of an unhealthy scheduler (0 is healthy; usage errors are 2).
UNHEALTHY = 1


def seconds(value: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a number of seconds") % {"value": repr(value)}
        ) from None
    if not math.isfinite(number) or number < 0:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s must be a finite number, 0 or more") % {"value": repr(value)}
        )
    return number


def count(value: str) -> int:
    """An argparse type: a whole number, 0 or more."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a whole number") % {"value": repr(value)}
        ) from None
    if number < 0:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s must be 0 or more") % {"value": repr(value)}
        )
    return number


@dataclass(frozen=True)
class Health:
    """What the probe measured, in the database's clock."""

    #: Seconds the oldest due pending function has waited past its due time (0: none due).
    lag: float
    #: Workers whose heartbeat is within ``WORKER_TIMEOUT`` (``SchedulerWorker.objects.alive()``).
    live_workers: int


def measure(using: str) -> Health:
    """Read the lag of the oldest due row and the number of live workers from ``using``."""
    oldest = (
        ScheduledFunction.objects.using(using)
        .filter(next_run_time__lte=Now())
        .annotate(db_now=Now())
        .order_by("next_run_time")
        .values_list("next_run_time", "db_now")
        .first()
    )
    lag = 0.0
    if oldest is not None and oldest[0] is not None:
        lag = max(0.0, (oldest[1] - oldest[0]).total_seconds())
    return Health(lag=lag, live_workers=SchedulerWorker.objects.using(using).alive().count())


class Command(BaseCommand):
    # Lazy: translated into the language active when the help is shown.
    help: str = _(  # type: ignore[assignment]
        "Check the scheduler for a liveness or readiness probe: exit 0 when the oldest due "
        "function has waited at most --max-lag seconds and at least --min-workers workers are "
        "alive, else 1; either way print one line saying why."
    )
    requires_system_checks: list[str] = []

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        self.help = str(self.help)  # argparse needs a str
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--max-lag",
            type=seconds,
            default=None,
            metavar="SECONDS",
            help=gettext(
                "Unhealthy when the oldest due function has waited longer than this "
                "(default: not checked)."
            ),
        )
        parser.add_argument(
            "--min-workers",
            type=count,
            default=0,
            metavar="N",
            help=gettext("Unhealthy when fewer workers than this are alive (default: 0)."),
        )
        parser.add_argument(
            "--database",
            default=None,
            metavar="ALIAS",
            help=gettext(
                "The database alias to read (default: the router's for scheduled functions)."
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"] or router.db_for_write(ScheduledFunction)
        if using not in connections:
            raise CommandError(
                gettext("--database %(alias)s is not in DATABASES.") % {"alias": repr(using)},
                returncode=2,
            )
        try:
            health = measure(using)
        except DatabaseError as exc:
            self._unhealthy(f"database {using!r} unavailable: {' '.join(str(exc).split())}")
        max_lag: float | None = options["max_lag"]
        min_workers: int = options["min_workers"]
        problems = []
        if max_lag is not None and health.lag > max_lag:
            problems.append(
                f"the oldest due function has waited {health.lag:.1f}s (max {max_lag:g}s)"
            )
        if health.live_workers < min_workers:
            problems.append(f"{health.live_workers} live worker(s) (min {min_workers})")
        if problems:
            self._unhealthy("; ".join(problems))
        lag_limit = "" if max_lag is None else f" (max {max_lag:g}s)"
        self.stdout.write(
            f"OK: lag {health.lag:.1f}s{lag_limit}, "
            f"{health.live_workers} live worker(s) (min {min_workers})"
        )

    def _unhealthy(self, why: str) -> NoReturn:
        self.stderr.write(f"UNHEALTHY: {why}")
        raise SystemExit(UNHEALTHY)
