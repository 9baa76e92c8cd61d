"""The ``a``-prefixed API for async callers: async views and ``async def`` actions."""

import asyncio

import pytest

from convex_scheduler import SchedulingError, clock, scheduler
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.testing import run_due

from . import functions
from .models import Counter

# sync_to_async runs the ORM on another thread, with its own connection: the
# rows must be committed for this test's connection to see them.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("close_thread_sensitive_connections"),
]


def test_arun_after_arun_at_astatus_and_acancel():
    async def from_an_async_view():
        soon = await scheduler.arun_after(0, functions.increment, {"name": "a"})
        later = await scheduler.arun_at(
            in_an_hour(), functions.increment, {"name": "b"}, pool=None
        )
        await scheduler.acancel(later)
        return soon, await scheduler.astatus(later)

    soon, status = asyncio.run(from_an_async_view())
    assert status == {"state": State.CANCELED, "attempts": 0}
    assert ScheduledFunction.objects.get(pk=soon).state == State.PENDING
    assert run_due().succeeded == 1
    assert Counter.objects.get(name="a").value == 1


def test_async_callers_get_the_same_errors():
    with pytest.raises(SchedulingError, match="delay_ms"):
        asyncio.run(scheduler.arun_after(-1, functions.increment, {"name": "a"}))
    assert not ScheduledFunction.objects.exists()


def test_an_async_action_writes_and_schedules_through_the_a_methods():
    sid = scheduler.run_after(0, functions.bump_twice_async, {"name": "kids"})
    assert run_due().succeeded == 2  # the action, then the child it scheduled
    row = ScheduledFunction.objects.get(pk=sid)
    child = ScheduledFunction.objects.get(parent_id=sid)
    assert (row.state, row.result, child.state) == (State.SUCCESS, child.pk, State.SUCCESS)
    assert Counter.objects.get(name="kids").value == 2  # arun_mutation's, and the child's


def in_an_hour():
    """Milliseconds since the epoch, as ``run_at`` accepts them."""
    return clock.now().timestamp() * 1000 + 3_600_000
