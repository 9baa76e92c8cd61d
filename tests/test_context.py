"""The ctx of a running function: what ctx.scheduler schedules has it as parent, and
ctx.run_mutation runs a mutation in its own transaction, retrying transient errors only."""

import pytest
from django.db import IntegrityError

from convex_scheduler import scheduler
from convex_scheduler.context import ActionContext, MutationContext
from convex_scheduler.exceptions import SchedulingError
from convex_scheduler.models import ScheduledFunction

from . import functions
from .models import Counter

pytestmark = pytest.mark.django_db(transaction=True)


def running_row():
    return scheduler.run_after(60_000, functions.record, {"label": "me"})


def parent_of(pk):
    return ScheduledFunction.objects.get(pk=pk).parent_id


def test_what_ctx_scheduler_schedules_has_the_running_function_as_parent():
    sid = running_row()
    for ctx in (MutationContext(sid, "m"), ActionContext(sid, "a")):
        child = ctx.scheduler.run_after(0, functions.increment, {"name": "c"})
        assert parent_of(child) == sid
    assert parent_of(scheduler.run_after(0, functions.increment, {"name": "c"})) is None


def test_a_mutation_cannot_cancel_itself_but_an_action_can():
    sid = running_row()
    with pytest.raises(SchedulingError, match="cannot cancel itself"):
        MutationContext(sid, "m").scheduler.cancel(sid)
    ActionContext(sid, "a").scheduler.cancel(sid)
    assert ScheduledFunction.objects.get(pk=sid).state == "canceled"


def test_run_mutation_returns_and_its_children_belong_to_the_action():
    sid = running_row()
    ctx = ActionContext(sid, "a")
    ctx.run_mutation(functions.schedule_children, {"name": "kid", "count": 2})
    assert ScheduledFunction.objects.filter(parent_id=sid).count() == 2


def test_run_mutation_retries_real_conflicts_and_rolls_back_each_failed_attempt():
    ctx = ActionContext(running_row(), "a")
    # Raises a real transient error on its first two attempts.
    ctx.run_mutation(functions.conflict_until, {"name": "c", "failures": 2})
    assert Counter.objects.get(name="c").value == 1


def test_run_mutation_raises_a_developer_error_at_once_and_keeps_nothing():
    ctx = ActionContext(running_row(), "a")
    Counter.objects.create(name="d", value=0)
    with pytest.raises(IntegrityError):
        ctx.run_mutation(functions.developer_error_from_database, {"name": "d"})
    assert Counter.objects.get(name="d").value == 0


def test_run_mutation_refuses_actions_and_bad_arguments():
    ctx = ActionContext(running_row(), "a")
    with pytest.raises(SchedulingError, match="is an action"):
        ctx.run_mutation(functions.record, {"label": "x"})
    with pytest.raises(SchedulingError):
        ctx.run_mutation(functions.increment, {"nme": "typo"})
    assert not Counter.objects.exists()
