import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from convex_scheduler import SchedulingError, scheduler
from convex_scheduler.models import ScheduledFunction, State

from . import functions

pytestmark = pytest.mark.django_db


def test_run_after_creates_pending_row(clock):
    sid = scheduler.run_after(5000, functions.increment, {"name": "a"})
    row = ScheduledFunction.objects.get(pk=sid)
    assert row.state == State.PENDING
    assert row.name == "tests.functions:increment"
    assert row.kind == "mutation"
    assert row.args == {"name": "a"}
    assert row.scheduled_time == clock.now() + timedelta(seconds=5)
    assert row.next_run_time == row.scheduled_time
    assert row.creation_time == clock.now()
    assert row.attempts == 0
    assert row.parent_id is None
    assert row.completed_time is None


def test_run_after_accepts_a_registered_name_and_no_args(clock):
    sid = scheduler.run_after(0, "tests.functions:record")
    row = ScheduledFunction.objects.get(pk=sid)
    assert (row.kind, row.args, row.scheduled_time) == ("action", {}, clock.now())


def test_fractional_delay_is_kept_to_the_microsecond(clock):
    sid = scheduler.run_after(1.5, functions.increment, {"name": "a"})
    row = ScheduledFunction.objects.get(pk=sid)
    assert row.scheduled_time == clock.now() + timedelta(microseconds=1500)


def test_run_at_datetime_and_epoch_ms(clock):
    when = clock.now() + timedelta(hours=1)
    first = scheduler.run_at(when, functions.increment, {"name": "a"})
    second = scheduler.run_at(when.timestamp() * 1000, functions.increment, {"name": "a"})
    rows = ScheduledFunction.objects.in_bulk([first, second])
    assert rows[first].scheduled_time == when
    assert abs(rows[second].scheduled_time - when) < timedelta(milliseconds=1)


def test_run_at_in_the_past_is_due_at_once(clock):
    sid = scheduler.run_at(clock.now() - timedelta(days=30), functions.increment, {"name": "a"})
    assert ScheduledFunction.objects.due(clock.now()).filter(pk=sid).exists()


@override_settings(TIME_ZONE="Asia/Tokyo")
def test_naive_datetime_is_read_in_the_current_time_zone(clock):
    clock.set(datetime(2026, 11, 26, 0, 0, tzinfo=UTC))
    sid = scheduler.run_at(datetime(2026, 11, 26, 9, 0), functions.increment, {"name": "a"})
    expected = datetime(2026, 11, 26, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert ScheduledFunction.objects.get(pk=sid).scheduled_time == expected


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        (-1, "0 or more"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (-math.inf, "finite"),
        (True, "not bool"),
        ("5", "not str"),
        (None, "not NoneType"),
        (Decimal("1"), "not Decimal"),
        (5 * 366 * 24 * 3600 * 1000 + 1, "more than five years"),
    ],
)
def test_bad_delays_are_rejected_and_write_nothing(delay, message):
    with pytest.raises(SchedulingError, match=message):
        scheduler.run_after(delay, functions.increment, {"name": "a"})
    assert not ScheduledFunction.objects.exists()


def test_five_years_is_allowed_but_not_more(clock):
    limit = timedelta(days=5 * 366)
    scheduler.run_at(clock.now() + limit, functions.increment, {"name": "a"})
    scheduler.run_at(clock.now() - limit, functions.increment, {"name": "a"})
    for when in (clock.now() + limit + timedelta(seconds=1), clock.now() - limit - timedelta(1)):
        with pytest.raises(SchedulingError, match="more than five years"):
            scheduler.run_at(when, functions.increment, {"name": "a"})
    assert ScheduledFunction.objects.count() == 2


@pytest.mark.parametrize(
    ("when", "message"),
    [
        ("2026-01-01", "not str"),
        (True, "not bool"),
        (math.nan, "finite"),
        (1e300, "out of range"),
        (0, "more than five years"),
    ],
)
def test_bad_timestamps_are_rejected(when, message):
    with pytest.raises(SchedulingError, match=message):
        scheduler.run_at(when, functions.increment, {"name": "a"})
    assert not ScheduledFunction.objects.exists()


def unregistered(ctx):
    pass


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("tests.functions:nope", "No function is registered under the name 'tests.functions:nope'"),
        ("os:system", "No function is registered"),
        (unregistered, "unregistered is not a registered function"),
        (functions.bump, "bump is not a registered function"),
        (42, "not int"),
    ],
)
def test_unknown_functions_are_rejected(ref, message):
    with pytest.raises(SchedulingError, match=message):
        scheduler.run_after(0, ref, {})
    assert not ScheduledFunction.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"name": math.nan}, "'name' is nan"),
        ({"name": {"deep": [1, math.inf]}}, r"name.deep\[1\]"),
        ({"name": {1: "x"}}, "keys must be strings"),
        ({"name": object()}, "'name' is a object, which is not a JSON value"),
        ({"name": b"bytes"}, "bytes"),
        ({"name": datetime(2026, 1, 1)}, "datetime"),
        ({"name": "a", "extra": 1}, "unexpected keyword argument 'extra'"),
        ({}, "missing a required argument: 'name'"),
        (["name"], "must be a dict"),
        ({"name": "\ud800"}, "not valid Unicode"),
    ],
)
def test_bad_args_are_rejected_naming_the_problem(args, message):
    with pytest.raises(SchedulingError, match=message):
        scheduler.run_after(0, functions.increment, args)
    assert not ScheduledFunction.objects.exists()


def test_too_deeply_nested_args_are_rejected():
    value = "leaf"
    for _ in range(70):
        value = [value]
    with pytest.raises(SchedulingError, match="nested more than 64"):
        scheduler.run_after(0, functions.increment, {"name": value})


@override_settings(CONVEX_SCHEDULER={"MAX_ARGS_BYTES": 100})
def test_oversize_args_are_rejected():
    scheduler.run_after(0, functions.increment, {"name": "x" * 80})
    with pytest.raises(SchedulingError, match=r"are 1\d\d bytes; at most 100"):
        scheduler.run_after(0, functions.increment, {"name": "x" * 100})
    assert ScheduledFunction.objects.count() == 1


def test_default_argument_limit_is_four_mib():
    with pytest.raises(SchedulingError, match="at most 4194304 bytes"):
        scheduler.run_after(0, functions.increment, {"name": "x" * (4 * 1024 * 1024)})


def test_json_values_round_trip():
    args = {"name": "a", "by": 3}
    sid = scheduler.run_after(0, functions.increment, args)
    assert ScheduledFunction.objects.get(pk=sid).args == args
    nested = {"label": "ünïcode ✓"}
    sid = scheduler.run_after(0, functions.record, nested)
    assert ScheduledFunction.objects.get(pk=sid).args == nested


@pytest.mark.django_db(transaction=True)
def test_scheduling_in_a_rolled_back_transaction_leaves_nothing():
    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic():
        scheduler.run_after(0, functions.increment, {"name": "a"})
        raise Rollback
    assert not ScheduledFunction.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_scheduling_in_autocommit_commits_at_once():
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    transaction.rollback()  # nothing open: the row is already committed
    assert ScheduledFunction.objects.filter(pk=sid).exists()


def test_cancel_pending(clock):
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    scheduler.cancel(sid)
    row = ScheduledFunction.objects.get(pk=sid)
    assert (row.state, row.completed_time, row.next_run_time) == (
        State.CANCELED,
        clock.now(),
        None,
    )


def test_cancel_accepts_a_string_of_digits():
    sid = scheduler.run_after(1000, functions.increment, {"name": "a"})
    scheduler.cancel(str(sid))
    assert ScheduledFunction.objects.get(pk=sid).state == State.CANCELED


def test_cancel_of_finished_or_unknown_ids_is_a_no_op(clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    ScheduledFunction.objects.filter(pk=sid).update(
        state=State.SUCCESS, next_run_time=None, completed_time=clock.now()
    )
    scheduler.cancel(sid)
    scheduler.cancel(sid + 1000)
    assert ScheduledFunction.objects.get(pk=sid).state == State.SUCCESS


@pytest.mark.parametrize("bad", ["abc", "", "1.5", -1, 0, 2**63, 1.0, None, True, "١٢"])
def test_cancel_of_a_malformed_id_is_an_error(bad):
    with pytest.raises(SchedulingError, match="positive integer"):
        scheduler.cancel(bad)


def test_internal_functions_can_be_scheduled_from_python():
    sid = scheduler.run_after(0, "tests:internal_increment", {"name": "a"})
    assert ScheduledFunction.objects.get(pk=sid).name == "tests:internal_increment"


def test_timezone_of_stored_times_is_utc(clock):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    assert timezone.is_aware(ScheduledFunction.objects.get(pk=sid).scheduled_time)


@pytest.mark.skipif("connection.vendor != 'postgresql'")
def test_database_errors_while_scheduling_are_djangos_exceptions():
    """The INSERT bypasses Django's cursor on PostgreSQL; errors must still be Django's."""
    from django.db import DatabaseError, InternalError

    with transaction.atomic():
        with pytest.raises(DatabaseError), connection.cursor() as cursor:
            cursor.execute("SELECT no_such_column FROM convex_scheduler_scheduledfunction")
        # PostgreSQL has aborted the transaction: the insert is refused.
        with pytest.raises(InternalError, match="current transaction is aborted"):
            scheduler.run_after(0, functions.increment, {"name": "a"})
        transaction.set_rollback(True)


# scheduler.schedule(): the one entry of the REST API and the admin form.


def test_schedule_with_a_delay_or_a_time(clock):
    first = scheduler.schedule(
        "tests.functions:increment", {"name": "a"}, delay_ms=5000, allow_internal=False
    )
    when = clock.now() + timedelta(hours=1)
    second = scheduler.schedule(
        functions.increment, {"name": "b"}, run_at=when, allow_internal=False
    )
    rows = ScheduledFunction.objects.in_bulk([first, second])
    assert rows[first].scheduled_time == clock.now() + timedelta(seconds=5)
    assert rows[second].scheduled_time == when


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"delay_ms": 0, "run_at": 0}, None, "not both"),
        ({}, None, "Give delay_ms"),
        ({"delay_ms": -1}, "delay_ms", "0 or more"),
        ({"delay_ms": True}, "delay_ms", "not bool"),
        ({"delay_ms": "5"}, "delay_ms", "not str"),
        ({"delay_ms": 10**400}, "delay_ms", "too large"),
        ({"run_at": "soon"}, "run_at", "not str"),
        ({"run_at": 1e300}, "run_at", "out of range"),
        ({"run_at": datetime(9999, 1, 1, tzinfo=UTC)}, "run_at", "five years"),
    ],
)
def test_schedule_names_the_field_at_fault(kwargs, field, message):
    with pytest.raises(SchedulingError, match=message) as info:
        scheduler.schedule(
            "tests.functions:increment", {"name": "a"}, allow_internal=False, **kwargs
        )
    assert info.value.field == field
    assert not ScheduledFunction.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([1], "must be a dict"),
        ({"nope": 1}, "do not match the signature"),
        ({"name": "\x00"}, "NUL"),
        ({"name": "\ud800"}, "not valid Unicode"),
        ({"name": math.nan}, "finite"),
    ],
)
def test_schedule_puts_argument_errors_on_args(args, message):
    with pytest.raises(SchedulingError, match=message) as info:
        scheduler.schedule("tests.functions:increment", args, delay_ms=0, allow_internal=False)
    assert info.value.field == "args"


def test_schedule_refuses_internal_functions_as_if_unknown():
    with pytest.raises(SchedulingError) as internal:
        scheduler.schedule(
            "tests:internal_increment", {"name": "a"}, delay_ms=0, allow_internal=False
        )
    with pytest.raises(SchedulingError) as unknown:
        scheduler.schedule("tests:nothing", {"name": "a"}, delay_ms=0, allow_internal=False)
    assert internal.value.field == unknown.value.field == "function"
    assert str(internal.value).replace("internal_increment", "X") == str(unknown.value).replace(
        "nothing", "X"
    )
    assert not ScheduledFunction.objects.exists()


def test_schedule_with_allow_internal_schedules_internal_functions():
    sid = scheduler.schedule(
        "tests:internal_increment", {"name": "a"}, delay_ms=0, allow_internal=True
    )
    assert ScheduledFunction.objects.get(pk=sid).name == "tests:internal_increment"
    with pytest.raises(SchedulingError, match="No function is registered") as info:
        scheduler.schedule("tests:nothing", {"name": "a"}, delay_ms=0, allow_internal=True)
    assert info.value.field == "function"


def test_run_after_run_at_and_cancel_report_fields_too():
    with pytest.raises(SchedulingError) as delay:
        scheduler.run_after(-1, functions.increment, {"name": "a"})
    with pytest.raises(SchedulingError) as args:
        scheduler.run_after(0, functions.increment, {"nope": 1})
    with pytest.raises(SchedulingError) as ident:
        scheduler.cancel(2**64)
    assert (delay.value.field, args.value.field, ident.value.field) == ("delay_ms", "args", "id")


def test_scheduling_errors_keep_their_field_when_pickled():
    import pickle

    error = pickle.loads(pickle.dumps(SchedulingError("bad", field="args")))
    assert (str(error), error.field) == ("bad", "args")


@pytest.mark.parametrize(
    ("text", "limit", "deeper"),
    [
        ("[[[]]]", 3, False),
        ("[[[]]]", 2, True),
        ('["[[[[[[[[[["]', 1, False),
        ('{"a": "\\"[[[[[[["}', 1, False),
        ("[]" * 1000, 1, False),
        ("[" * 100_000, 64, True),
        ('{"a": [' + "{}," * 100 + "{}]}", 3, False),
        ('{"a": [' + "{}," * 100 + "[[]]]}", 3, True),
    ],
)
def test_json_nesting_is_measured_without_parsing(text, limit, deeper):
    from convex_scheduler.scheduler import json_nesting_exceeds

    assert json_nesting_exceeds(text, limit) is deeper
    assert json_nesting_exceeds(text.encode(), limit) is deeper
