"""``manage.py clearscheduledfunctions``: delete finished rows past retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import router
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from convex_scheduler import clock
from convex_scheduler.conf import scheduler_settings
from convex_scheduler.models import ScheduledFunction


class Command(BaseCommand):
    # Lazy: translated into the language active when the help is shown.
    help: str = _(  # type: ignore[assignment]
        "Delete finished scheduled functions whose completed_time is older than the "
        "RETENTION setting (7 days by default), in batches. Pending rows are never deleted."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        self.help = str(self.help)  # argparse needs a str
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than-days",
            type=float,
            default=None,
            help=gettext("Override RETENTION for this run (days, more than 0)."),
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help=gettext("Rows deleted per statement (default: the CLEANUP_BATCH_SIZE setting)."),
        )
        parser.add_argument("--database", default=None, help=gettext("The database alias to use."))

    def handle(self, *args: Any, **options: Any) -> None:
        retention = scheduler_settings.RETENTION
        if options["older_than_days"] is not None:
            if not 0 < options["older_than_days"] < 100_000:
                raise CommandError(gettext("--older-than-days must be more than 0."))
            retention = timedelta(days=options["older_than_days"])
        batch_size = options["batch_size"]
        if batch_size is None:
            batch_size = scheduler_settings.CLEANUP_BATCH_SIZE
        elif batch_size < 1:
            raise CommandError(gettext("--batch-size must be 1 or more."))
        using = options["database"] or router.db_for_write(ScheduledFunction)
        deleted = ScheduledFunction.objects.using(using).delete_expired(
            clock.now(), retention, batch_size
        )
        if options["verbosity"] >= 1:
            self.stdout.write(f"Deleted {deleted} finished scheduled function(s).")
