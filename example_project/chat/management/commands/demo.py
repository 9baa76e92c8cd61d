"""``manage.py demo``: keep scheduling chat functions so they can be watched.

Every tick a member of the room sends a message (``run_after``, with a
self-destruct timer). Now and then someone sets a reminder (``run_at``) and
dismisses every other one before it is due, or asks for a digest and cancels
it while it runs. Some messages mention ``@dave``, whose notifications fail;
some are empty or too long, which fails the ``chat:send`` mutation.

``--batch`` schedules one fixed batch that is due at once and ends in every
final state; ``--verify`` waits until the worker has run it.
"""

from __future__ import annotations

import contextlib
import itertools
import random
import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count
from django.utils import timezone

from convex_scheduler import scheduler
from convex_scheduler.models import ScheduledFunction, State
from example_project.chat.functions import MAX_BODY, digest, remind, send

LINES = [
    ("ann", "morning! who is in today?"),
    ("bob", "here, chasing the flaky test again"),
    ("carol", "@bob which one?"),
    ("bob", "@carol the one that sleeps for five seconds"),
    ("ann", "@dave could you review my pull request?"),
    ("carol", ""),
    ("dave", "sorry, my phone is dead, reading on the laptop"),
    ("ann", "lunch at noon? @bob @carol"),
    ("bob", "pasting the whole log: " + "error " * MAX_BODY),
    ("carol", "this message will self-destruct"),
    ("ann", "notes from the retro: https://example.com/retro-notes"),
]


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(value)
    return number


class Command(BaseCommand):
    help = "Schedule chat functions every second so they can be watched in the admin."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--interval",
            type=positive_float,
            default=1.0,
            help="Seconds between ticks (default 1).",
        )
        parser.add_argument(
            "--ticks",
            type=int,
            default=None,
            help="Stop after this many ticks (default: never).",
        )
        parser.add_argument(
            "--self-destruct",
            type=positive_float,
            default=20.0,
            help="Seconds before a message deletes itself (default 20).",
        )
        parser.add_argument(
            "--batch",
            action="store_true",
            help="Schedule one batch, due now, that reaches success, failed and canceled; exit.",
        )
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Wait until the worker has run everything due and success, failed and "
            "canceled all occur; fail after --timeout seconds.",
        )
        parser.add_argument("--timeout", type=positive_float, default=30.0)

    def handle(self, *args, **options) -> None:
        if options["batch"]:
            self.schedule_batch()
        elif options["verify"]:
            self.verify(options["timeout"])
        else:
            with contextlib.suppress(KeyboardInterrupt):
                self.loop(options["interval"], options["ticks"], options["self_destruct"])

    def say(self, verb: str, sid: int, what: str) -> None:
        self.stdout.write(f"[demo] {verb} #{sid} {what}")

    def loop(self, interval: float, ticks: int | None, self_destruct: float) -> None:
        lines = itertools.cycle(LINES)
        to_cancel: list[tuple[int, str]] = []
        counter = itertools.count(1) if ticks is None else range(1, ticks + 1)
        for tick in counter:
            for sid, what in to_cancel:
                scheduler.cancel(sid)
                self.say("canceled", sid, what)
            to_cancel = []

            author, body = next(lines)
            delay = random.randint(0, 1500)
            sid = scheduler.run_after(
                delay,
                send,
                {"author": author, "body": body, "self_destruct_ms": int(self_destruct * 1000)},
            )
            self.say("scheduled", sid, f"chat:send in {delay} ms: {author}: {body[:50]!r}")

            if tick % 3 == 0:
                when = timezone.now() + timedelta(seconds=random.uniform(3, 6))
                sid = scheduler.run_at(when, remind, {"author": author, "text": "stand-up"})
                self.say("scheduled", sid, f"chat:remind at {when:%H:%M:%S}")
                if tick % 6 == 0:
                    to_cancel.append((sid, "chat:remind (dismissed before it was due)"))

            if tick % 7 == 0:
                sid = scheduler.run_after(0, digest, {"minutes": 1})
                self.say("scheduled", sid, "chat:digest now")
                if tick % 14 == 0:
                    to_cancel.append(
                        (sid, "chat:digest (while it runs: its message is born canceled)")
                    )
            time.sleep(interval)
        for sid, what in to_cancel:
            scheduler.cancel(sid)
            self.say("canceled", sid, what)

    def schedule_batch(self) -> None:
        now = timezone.now()
        ids = [
            scheduler.run_after(0, send, {"author": "ann", "body": "hello @bob"}),
            scheduler.run_after(
                0,
                send,
                {"author": "bob", "body": "self-destructs in a minute", "self_destruct_ms": 60_000},
            ),
            # Notifying dave fails: the action ends ``failed``.
            scheduler.run_after(0, send, {"author": "carol", "body": "@dave ping"}),
            # The mutation raises: ``failed``, and no message is left behind.
            scheduler.run_after(0, send, {"author": "carol", "body": "   "}),
            # A past time is due at once.
            scheduler.run_at(now - timedelta(seconds=5), remind, {"author": "ann", "text": "tea"}),
        ]
        later = scheduler.run_at(now + timedelta(minutes=5), remind, {"author": "bob", "text": "x"})
        never = scheduler.run_after(0, send, {"author": "dave", "body": "never sent"})
        for sid in (later, never):
            scheduler.cancel(sid)
        self.stdout.write(
            f"[demo] scheduled {len(ids) + 2} functions, canceled #{later} and #{never}"
        )

    def verify(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wanted = {State.SUCCESS, State.FAILED, State.CANCELED}
        while True:
            counts = states()
            busy = (
                ScheduledFunction.objects.due(timezone.now()).exists()
                or counts.get(State.IN_PROGRESS, 0) > 0
            )
            if not busy and all(counts.get(state, 0) for state in wanted):
                break
            if time.monotonic() > deadline:
                raise CommandError(
                    f"after {timeout:.0f}s the functions are not all run: {format_counts(counts)}"
                )
            time.sleep(0.2)
        self.stdout.write(f"[demo] ok: {format_counts(counts)}")


def states() -> dict[str, int]:
    """How many scheduled functions are in each state."""
    rows = ScheduledFunction.objects.order_by().values("state").annotate(n=Count("id"))
    return {row["state"]: row["n"] for row in rows}


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{state}={counts.get(state, 0)}" for state in State.values)
