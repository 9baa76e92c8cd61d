"""convex_scheduler.testing: a clock that moves only when told, and run_due in the test's thread."""

from datetime import UTC, datetime, timedelta

import pytest

from convex_scheduler import clock, scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.testing import FakeClock, run_due

from . import functions
from .models import Counter

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_fake_clock_moves_only_forward_and_only_when_told():
    fake = FakeClock(START)
    assert fake.now() == START
    assert fake.advance(seconds=5, milliseconds=250) == START + timedelta(seconds=5.25)
    assert fake.advance(timedelta(hours=1)) == START + timedelta(hours=1, seconds=5.25)
    with pytest.raises(ValueError, match="only moves forward"):
        fake.advance(seconds=-1)
    fake.set(START)
    assert fake.now() == START
    with pytest.raises(ValueError, match="aware"):
        fake.set(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        FakeClock(datetime(2026, 1, 1))


def test_an_installed_fake_clock_is_the_apps_clock_until_it_is_removed():
    before = clock.now()
    with FakeClock(START) as fake:
        assert clock.now() == START
        fake.advance(minutes=1)
        assert clock.now() == START + timedelta(minutes=1)
    assert clock.now() >= before  # the real clock is back
    assert abs(clock.now() - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.django_db
def test_run_due_runs_what_is_due_and_what_it_schedules_for_now_but_not_later():
    with FakeClock(START) as fake:
        parent = scheduler.run_after(0, functions.schedule_children, {"name": "kid", "count": 2})
        later = scheduler.run_after(10_000, functions.increment, {"name": "later"})
        stats = run_due()
        assert (stats.succeeded, stats.failed) == (3, 0)  # the parent and its two children
        assert ScheduledFunction.objects.filter(parent_id=parent, state=State.SUCCESS).count() == 2
        assert ScheduledFunction.objects.get(pk=later).state == State.PENDING
        assert ScheduledFunction.objects.get(pk=parent).completed_time == START
        fake.advance(seconds=10)
        assert run_due().succeeded == 1
        assert Counter.objects.get(name="later").value == 1


@pytest.mark.django_db
def test_run_due_stops_after_max_functions():
    for _ in range(3):
        scheduler.run_after(0, functions.increment, {"name": "n"})
    assert run_due(max_functions=2).succeeded == 2
    assert ScheduledFunction.objects.filter(state=State.PENDING).count() == 1
    assert run_due().succeeded == 1
    assert Counter.objects.get(name="n").value == 3
