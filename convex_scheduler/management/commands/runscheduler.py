"""``manage.py runscheduler``: run the dispatch loop until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from convex_scheduler.models import ScheduledFunction, SchedulerWorker
from convex_scheduler.worker import Worker

logger = logging.getLogger("convex_scheduler")

VERBOSITY_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG, 3: logging.DEBUG}


def positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a whole number") % {"value": repr(value)}
        ) from None
    if number < 1:
        raise argparse.ArgumentTypeError(
            gettext("must be 1 or more, not %(number)d") % {"number": number}
        )
    return number


MAX_CONCURRENCY = 1024


def concurrency(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a whole number") % {"value": repr(value)}
        ) from None
    if not 1 <= number <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(
            gettext("must be between 1 and %(max)d, not %(number)d")
            % {"max": MAX_CONCURRENCY, "number": number}
        )
    return number


def port_number(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a port number") % {"value": repr(value)}
        ) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(
            gettext("must be between 0 and 65535, not %(number)d") % {"number": number}
        )
    return number


def positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            gettext("%(value)s is not a number of seconds") % {"value": repr(value)}
        ) from None
    if not 0 < number < float("inf"):
        raise argparse.ArgumentTypeError(
            gettext("must be more than 0 seconds, not %(value)s") % {"value": value}
        )
    return number


class Command(BaseCommand):
    # Lazy: translated into the language active when the help is shown.
    help: str = _(  # type: ignore[assignment]
        "Run scheduled functions as they become due. Stop with SIGTERM or Ctrl-C: "
        "the first signal finishes what is running, a second one exits at once."
    )

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        self.help = str(self.help)  # argparse needs a str
        return super().create_parser(prog_name, subcommand, **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--concurrency",
            type=concurrency,
            default=None,
            help=gettext("How many functions run at once (default: the CONCURRENCY setting)."),
        )
        parser.add_argument(
            "--interval",
            "--poll-interval",
            dest="interval",
            type=positive_seconds,
            default=None,
            help=gettext(
                "The longest an idle worker waits before looking for due functions, "
                "in seconds (default: the POLL_INTERVAL setting)."
            ),
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help=gettext(
                "Run everything due now, including what those runs schedule for now, then exit."
            ),
        )
        parser.add_argument(
            "--max-functions",
            type=positive_int,
            default=None,
            help=gettext("Exit after this many functions have run."),
        )
        parser.add_argument(
            "--metrics-port",
            type=port_number,
            default=None,
            help=gettext(
                "Serve this worker's Prometheus metrics on this port (needs the 'metrics' "
                "extra: prometheus-client); 0 picks a free port."
            ),
        )
        parser.add_argument(
            "--metrics-address",
            default="127.0.0.1",
            help=gettext(
                "The address the metrics port listens on (default 127.0.0.1, this machine "
                "only; 0.0.0.0 for a scraper on another machine)."
            ),
        )
        parser.add_argument(
            "--database",
            default=None,
            help=gettext("The database alias to use (default: the router's choice for writes)."),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        if using is not None and using not in settings.DATABASES:
            raise CommandError(
                gettext("%(alias)s is not a database alias; DATABASES has %(known)s.")
                % {"alias": repr(using), "known": ", ".join(map(repr, settings.DATABASES))}
            )
        self._configure_logging(options["verbosity"])
        worker = Worker(
            concurrency=options["concurrency"],
            poll_interval=options["interval"],
            burst=options["burst"],
            max_functions=options["max_functions"],
            using=using,
        )
        metrics = None
        if options["metrics_port"] is not None:
            metrics = self._start_metrics(worker, options)
        previous = self._install_signal_handlers(worker)
        try:
            stats = worker.run()
        except DatabaseError as exc:
            missing = _missing_tables(worker.using)
            if missing:
                raise CommandError(
                    gettext(
                        "The scheduler's tables (%(tables)s) are missing from database "
                        "%(alias)s: run `python manage.py migrate`."
                    )
                    % {"tables": ", ".join(missing), "alias": repr(worker.using)}
                ) from exc
            raise
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            if metrics is not None:
                server, collected = metrics
                server.shutdown()
                collected.disconnect()
        if worker.crashed:
            raise CommandError(gettext("A worker thread crashed; the log has the traceback."))
        if options["verbosity"] >= 1 and options["burst"]:
            self.stdout.write(
                f"Burst done: {stats.succeeded} succeeded, {stats.failed} failed, "
                f"{stats.canceled} canceled."
            )

    def _start_metrics(self, worker: Worker, options: dict[str, Any]) -> tuple[Any, Any]:
        try:
            from convex_scheduler.metrics import WorkerMetrics, serve

            collected = WorkerMetrics(stats=worker.stats)
        except ImportError as exc:
            raise CommandError(
                gettext(
                    "--metrics-port needs prometheus-client: pip install "
                    "'django-convex-scheduler[metrics]' (%(error)s)."
                )
                % {"error": exc}
            ) from None
        try:
            server = serve(options["metrics_port"], collected, addr=options["metrics_address"])
        except OSError as exc:
            raise CommandError(
                gettext("Cannot serve metrics on %(address)s:%(port)s: %(error)s.")
                % {
                    "address": options["metrics_address"],
                    "port": options["metrics_port"],
                    "error": exc,
                }
            ) from None
        collected.connect()
        worker.on_claim = collected.observe_claim
        logger.info("metrics on http://%s:%s/", options["metrics_address"], server.port)
        return server, collected

    def _configure_logging(self, verbosity: int) -> None:
        logger.setLevel(VERBOSITY_LEVELS.get(verbosity, logging.DEBUG))
        # Respect a project's LOGGING: only print ourselves when nobody routes
        # the logger anywhere.
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(self.stdout)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(handler)
            logger.propagate = False

    def _install_signal_handlers(self, worker: Worker) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if worker.stopping:
                logger.warning("second signal: exiting now")
                worker.stop(force=True)
            else:
                logger.info("received %s: finishing running functions", signal.Signals(signum).name)
                worker.stop()

        previous = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.getsignal(signum)
            signal.signal(signum, on_signal)
        if sys.platform != "win32":
            previous[signal.SIGQUIT] = signal.getsignal(signal.SIGQUIT)
            signal.signal(signal.SIGQUIT, lambda signum, frame: worker.stop(force=True))
        return previous


def _missing_tables(using: str) -> list[str]:
    try:
        existing = set(connections[using].introspection.table_names())
    except DatabaseError:
        return []
    tables = (ScheduledFunction._meta.db_table, SchedulerWorker._meta.db_table)
    return [table for table in tables if table not in existing]
