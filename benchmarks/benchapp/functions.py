"""The functions the benchmark schedules: no-ops, and a probe that records when it started."""

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
