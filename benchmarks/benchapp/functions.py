"""The functions the benchmark schedules: no-ops, I/O-bound actions, and a probe that
records when it started."""

import asyncio
import time

from convex_scheduler import action, mutation

from .models import Probe


@mutation
def noop_mutation(ctx) -> None:
    pass


@action
def noop_action(ctx) -> None:
    pass


@mutation
def probe(ctx, sample: int) -> None:
    # CLOCK_MONOTONIC is one clock for every process on the machine, and no
    # NTP step can move it between the scheduling commit and this line.
    started = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    Probe.objects.create(sample=sample, started_ns=started)


@action
async def sleep_async_action(ctx) -> None:
    # I/O-bound: waits 100 ms the way an HTTP call would, without a thread.
    await asyncio.sleep(0.1)


@action
def sleep_sync_action(ctx) -> None:
    # I/O-bound in a sync action: holds its thread for 100 ms.
    time.sleep(0.1)


@mutation
def cron_tick(ctx) -> None:
    """What the benchmark's run-time crons run (those that tick during a run at all)."""
