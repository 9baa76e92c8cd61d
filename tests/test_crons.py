"""Crons: declarations, schedules and time zones, and the worker's hooks on a real database."""

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, connections, transaction

from convex_scheduler import SchedulingError, crons, scheduler
from convex_scheduler.crons import Schedule, start_due_runs, sync_code_crons
from convex_scheduler.models import CronJob, CronSource, ScheduledFunction, State
from convex_scheduler.testing import FakeClock, run_due

from . import functions
from .models import Counter
from .test_crons_workers import needs_worker_hook

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def code_crons():
    """Declare code crons in a test; whatever it declares is undeclared afterwards."""
    before = {definition.name for definition in crons.declared()}
    yield crons
    for definition in crons.declared():
        if definition.name not in before:
            crons.code_crons.unregister(definition.name)


@pytest.fixture
def fake_clock():
    with FakeClock(START) as clock:
        yield clock


def due(clock):
    """What a worker does on each poll: create the runs of due crons."""
    return start_due_runs(using="default", now=clock.now())


def runs(name):
    return list(
        ScheduledFunction.objects.filter(cron=name)
        .order_by("scheduled_time")
        .values_list("scheduled_time", flat=True)
    )


def count(name):
    counter = Counter.objects.filter(name=name).first()
    return counter.value if counter else 0


# Declarations ------------------------------------------------------------


def test_the_helpers_build_cron_schedules_and_describe_them(code_crons):
    cases = [
        (
            code_crons.interval("t interval", functions.increment, {"name": "a"}, minutes=5),
            "interval",
            timedelta(minutes=5),
            "",
            "every 5 minutes",
        ),
        (
            code_crons.interval(
                "t interval 90", "tests.functions:increment", {"name": "a"}, seconds=30, minutes=1
            ),
            "interval",
            timedelta(seconds=90),
            "",
            "every 1 minute 30 seconds",
        ),
        (
            code_crons.hourly("t hourly", functions.increment, {"name": "a"}, minute=17),
            "cron",
            None,
            "17 * * * *",
            "every hour at minute 17 (UTC)",
        ),
        (
            code_crons.daily(
                "t daily",
                functions.increment,
                {"name": "a"},
                hour=8,
                minute=30,
                timezone="Asia/Tokyo",
            ),
            "cron",
            None,
            "30 8 * * *",
            "every day at 08:30 (Asia/Tokyo)",
        ),
        (
            code_crons.weekly(
                "t weekly", functions.increment, {"name": "a"}, day_of_week="monday", hour=9
            ),
            "cron",
            None,
            "0 9 * * 1",
            "every Monday at 09:00 (UTC)",
        ),
        (
            code_crons.monthly(
                "t monthly",
                functions.increment,
                {"name": "a"},
                day=1,
                hour=3,
                timezone="Europe/Paris",
            ),
            "cron",
            None,
            "0 3 1 * *",
            "on day 1 of every month at 03:00 (Europe/Paris)",
        ),
        (
            code_crons.cron(
                "t cron", functions.increment, "*/5  *  * * *", {"name": "a"}, timezone="UTC"
            ),
            "cron",
            None,
            "*/5 * * * *",
            "every fifth minute of every hour (UTC)",
        ),
    ]
    for definition, kind, every, expression, words in cases:
        schedule = definition.schedule
        assert (schedule.type, schedule.interval, schedule.expression) == (kind, every, expression)
        assert schedule.describe() == words
        assert definition.function == "tests.functions:increment"
        assert definition.kind == "mutation"
    assert {d.name for d in code_crons.declared()} >= {case[0].name for case in cases}


def test_a_declared_action_keeps_its_kind_and_internal_functions_are_allowed(code_crons):
    action = code_crons.interval("t action", functions.record, minutes=1)
    internal = code_crons.interval("t internal", "tests:internal_increment", {"name": "i"}, hours=1)
    assert (action.kind, action.args) == ("action", {})
    assert internal.function == "tests:internal_increment"


@pytest.mark.parametrize(
    ("declare", "field", "words"),
    [
        (lambda: crons.interval("x", "no.such:function", minutes=1), "function", "No function"),
        (lambda: crons.interval("x", len, minutes=1), "function", "not a registered function"),
        (
            lambda: crons.interval("x", functions.increment, {"name": {1, 2}}, minutes=1),
            "args",
            "not a JSON value",
        ),
        (
            lambda: crons.interval("x", functions.increment, {"nmae": "a"}, minutes=1),
            "args",
            "signature",
        ),
        (
            lambda: crons.interval("x", functions.increment, {"name": "a"}, seconds=0.5),
            "interval",
            "at least one second",
        ),
        (
            lambda: crons.interval("x", functions.increment, {"name": "a"}),
            "interval",
            "at least one second",
        ),
        (
            lambda: crons.interval("x", functions.increment, {"name": "a"}, minutes=-1),
            "interval",
            "0 or more",
        ),
        (
            lambda: crons.interval("x", functions.increment, {"name": "a"}, minutes=True),
            "interval",
            "number",
        ),
        (
            lambda: crons.cron("x", functions.increment, "* * * *", {"name": "a"}),
            "cron",
            "5 fields",
        ),
        (
            lambda: crons.cron("x", functions.increment, "0 0 * * * *", {"name": "a"}),
            "cron",
            "5 fields",
        ),
        (
            lambda: crons.cron("x", functions.increment, "61 * * * *", {"name": "a"}),
            "cron",
            "Bad minute",
        ),
        (
            lambda: crons.cron("x", functions.increment, "0 0 30 2 *", {"name": "a"}),
            "cron",
            "day-of-month",
        ),
        (lambda: crons.cron("x", functions.increment, 5, {"name": "a"}), "cron", "string"),
        (
            lambda: crons.daily("x", functions.increment, {"name": "a"}, timezone="Mars/Olympus"),
            "timezone",
            "Unknown time zone",
        ),
        (
            lambda: crons.daily("x", functions.increment, {"name": "a"}, timezone="../../etc"),
            "timezone",
            "Unknown time zone",
        ),
        (
            lambda: crons.daily("x", functions.increment, {"name": "a"}, timezone=3),
            "timezone",
            "IANA",
        ),
        (
            lambda: crons.daily("x", functions.increment, {"name": "a"}, hour=24),
            "hour",
            "from 0 to 23",
        ),
        (
            lambda: crons.daily("x", functions.increment, {"name": "a"}, minute=60),
            "minute",
            "from 0 to 59",
        ),
        (
            lambda: crons.hourly("x", functions.increment, {"name": "a"}, minute=1.5),
            "minute",
            "integer",
        ),
        (
            lambda: crons.monthly("x", functions.increment, {"name": "a"}, day=0),
            "day",
            "from 1 to 31",
        ),
        (
            lambda: crons.monthly("x", functions.increment, {"name": "a"}, day=32),
            "day",
            "from 1 to 31",
        ),
        (
            lambda: crons.weekly("x", functions.increment, {"name": "a"}, day_of_week="someday"),
            "day_of_week",
            "name of a day",
        ),
        (
            lambda: crons.weekly("x", functions.increment, {"name": "a"}, day_of_week=1),
            "day_of_week",
            "name of a day",
        ),
        (
            lambda: crons.interval("", functions.increment, {"name": "a"}, minutes=1),
            "name",
            "non-empty",
        ),
        (
            lambda: crons.interval("a/b", functions.increment, {"name": "a"}, minutes=1),
            "name",
            "'/'",
        ),
        (
            lambda: crons.interval("x" * 201, functions.increment, {"name": "a"}, minutes=1),
            "name",
            "at most 200",
        ),
    ],
)
def test_bad_definitions_are_refused_naming_the_problem(code_crons, declare, field, words):
    with pytest.raises(SchedulingError) as raised:
        declare()
    assert raised.value.field == field
    assert words in str(raised.value)
    assert code_crons.code_crons.get("x") is None


def test_a_duplicate_name_in_code_is_refused_but_the_same_declaration_again_is_not(code_crons):
    code_crons.daily("t dup", functions.increment, {"name": "a"}, hour=1)
    # Importing a crons module twice (autoreload) declares the same thing twice.
    code_crons.daily("t dup", functions.increment, {"name": "a"}, hour=1)
    with pytest.raises(SchedulingError, match="already declared in code") as raised:
        code_crons.daily("t dup", functions.increment, {"name": "a"}, hour=2)
    assert raised.value.field == "name"
    assert code_crons.code_crons.get("t dup").schedule.expression == "0 1 * * *"


def test_crons_modules_are_autodiscovered():
    definition = crons.code_crons.get("tests: leap day")
    assert definition is not None
    assert definition.function == "tests.functions:increment"
    assert definition.schedule.expression == "0 3 29 2 *"


# Schedules and time zones ------------------------------------------------


def test_cron_ticks_are_in_the_zone_of_the_cron():
    tokyo = Schedule("cron", expression="30 8 * * *", timezone="Asia/Tokyo")
    assert tokyo.first_tick(START) == datetime(2026, 6, 1, 23, 30, tzinfo=UTC)
    kolkata = Schedule("cron", expression="17 * * * *", timezone="Asia/Kolkata")
    assert kolkata.first_tick(START) == datetime(2026, 6, 1, 12, 47, tzinfo=UTC)
    # A tick exactly at now is the first one; ticks follow one another.
    assert tokyo.first_tick(datetime(2026, 6, 1, 23, 30, tzinfo=UTC)) == datetime(
        2026, 6, 1, 23, 30, tzinfo=UTC
    )
    assert tokyo.tick_after(datetime(2026, 6, 1, 23, 30, tzinfo=UTC)) == datetime(
        2026, 6, 2, 23, 30, tzinfo=UTC
    )


def test_monthly_skips_months_without_the_day_and_weekly_runs_on_its_day():
    monthly = Schedule("cron", expression="0 0 31 * *", timezone="UTC")
    ticks = [monthly.first_tick(datetime(2026, 1, 1, tzinfo=UTC))]
    for _ in range(3):
        ticks.append(monthly.tick_after(ticks[-1]))
    assert [tick.month for tick in ticks] == [1, 3, 5, 7]
    weekly = Schedule("cron", expression="0 9 * * 1", timezone="Europe/Paris")
    tick = weekly.first_tick(START)
    assert tick.astimezone(weekly.zone()).strftime("%A %H:%M") == "Monday 09:00"
    assert weekly.tick_after(tick) - tick == timedelta(days=7)


# The worker's hook: runs of due ticks -------------------------------------


def test_an_interval_cron_runs_when_first_seen_then_every_interval_from_its_ticks(
    db, code_crons, fake_clock
):
    code_crons.interval("every 5", functions.increment, {"name": "five"}, minutes=5)
    sync_code_crons(using="default")
    assert due(fake_clock) == 1
    assert runs("every 5") == [START]
    run = ScheduledFunction.objects.get(cron="every 5")
    assert (run.name, run.kind, run.args, run.state) == (
        "tests.functions:increment",
        "mutation",
        {"name": "five"},
        State.PENDING,
    )
    assert run_due().succeeded == 1
    assert count("five") == 1
    # Ticks count from the previous tick, not from when the run finished.
    fake_clock.advance(minutes=4, seconds=59)
    assert due(fake_clock) == 0
    fake_clock.advance(minutes=2)  # 12:06:59
    assert due(fake_clock) == 1
    assert runs("every 5") == [START, START + timedelta(minutes=5)]
    run_due()
    job = CronJob.objects.get(name="every 5")
    assert job.next_tick == START + timedelta(minutes=10)
    assert (job.run_count, job.missed_count, job.overlap_count) == (2, 0, 0)
    assert count("five") == 2


def test_each_run_is_an_ordinary_scheduled_function_that_can_be_canceled(
    db, code_crons, fake_clock
):
    code_crons.interval("cancelable", functions.increment, {"name": "c"}, minutes=1)
    sync_code_crons(using="default")
    due(fake_clock)
    run = ScheduledFunction.objects.get(cron="cancelable")
    scheduler.cancel(run.pk)
    assert run_due().succeeded == 0
    assert ScheduledFunction.objects.get(pk=run.pk).state == State.CANCELED
    # A canceled run is finished: the next tick runs.
    fake_clock.advance(minutes=1)
    assert due(fake_clock) == 1
    run_due()
    assert count("c") == 1


def test_missed_ticks_run_once_at_the_latest_and_are_counted_and_logged(
    db, code_crons, fake_clock, caplog
):
    code_crons.interval("minutely", functions.increment, {"name": "m"}, minutes=1)
    code_crons.cron("five past", functions.increment, "*/5 * * * *", {"name": "f"}, timezone="UTC")
    sync_code_crons(using="default")
    due(fake_clock)
    run_due()
    # The workers are down for an hour and a half.
    fake_clock.advance(hours=1, minutes=30, seconds=30)
    with caplog.at_level(logging.WARNING, logger="convex_scheduler"):
        assert due(fake_clock) == 2
    assert runs("minutely") == [START, START + timedelta(minutes=90)]
    # The latest tick of */5 before 13:30:30 is 13:30; 12:05 to 13:25 were missed.
    assert runs("five past") == [START, START + timedelta(minutes=90)]
    minutely = CronJob.objects.get(name="minutely")
    assert (minutely.missed_count, minutely.run_count) == (89, 2)
    assert minutely.next_tick == START + timedelta(minutes=91)
    five = CronJob.objects.get(name="five past")
    assert (five.missed_count, five.run_count) == (17, 2)
    assert five.next_tick == START + timedelta(minutes=95)
    messages = [record.getMessage() for record in caplog.records]
    assert any("skipping 89 missed run(s) cron=minutely" in message for message in messages)
    assert any("skipping 17 missed run(s) cron=five past" in message for message in messages)
    run_due()
    assert (count("m"), count("f")) == (2, 2)


def test_a_very_long_outage_is_estimated_not_walked(db, code_crons, fake_clock):
    code_crons.cron("each minute", functions.increment, "* * * * *", {"name": "e"}, timezone="UTC")
    sync_code_crons(using="default")
    fake_clock.advance(days=120, seconds=30)
    assert due(fake_clock) == 1
    job = CronJob.objects.get(name="each minute")
    assert runs("each minute") == [START + timedelta(days=120)]
    expected = timedelta(days=120) // timedelta(minutes=1)  # 12:00 on day 0 to 11:59 on day 120
    assert expected > crons.MAX_COUNTED_TICKS
    # Counted one by one up to MAX_COUNTED_TICKS, estimated past it.
    assert abs(job.missed_count - expected) <= 2
    assert job.next_tick == START + timedelta(days=120, minutes=1)


def test_no_overlap_a_tick_is_skipped_while_the_previous_run_is_pending_or_running(
    db, code_crons, fake_clock, caplog
):
    code_crons.interval("slow", functions.record, {"label": "slow"}, minutes=1)
    sync_code_crons(using="default")
    assert due(fake_clock) == 1
    first = ScheduledFunction.objects.get(cron="slow")
    # Still pending at the next tick (no worker free): the tick is skipped.
    fake_clock.advance(minutes=1)
    with caplog.at_level(logging.WARNING, logger="convex_scheduler"):
        assert due(fake_clock) == 0
    assert f"previous run id={first.pk} is still pending" in caplog.text
    # Running (an action in progress) at the tick after: skipped again.
    ScheduledFunction.objects.filter(pk=first.pk).start_action("another-worker", fake_clock.now())
    fake_clock.advance(minutes=1)
    assert due(fake_clock) == 0
    assert "is still inProgress" in caplog.text
    job = CronJob.objects.get(name="slow")
    assert (job.run_count, job.overlap_count, job.missed_count) == (1, 2, 0)
    assert runs("slow") == [START]
    # Once it has finished, the next tick runs.
    ScheduledFunction.objects.filter(pk=first.pk).succeed(
        fake_clock.now(), from_state=State.IN_PROGRESS
    )
    fake_clock.advance(minutes=1)
    assert due(fake_clock) == 1
    assert runs("slow") == [START, START + timedelta(minutes=3)]


def test_dst_spring_forward_a_daily_0230_runs_once_at_0300(db, code_crons):
    new_york = "America/New_York"
    start = datetime(2026, 3, 6, 12, tzinfo=UTC)
    with FakeClock(start) as clock:
        code_crons.daily(
            "ny 0230", functions.increment, {"name": "ny"}, hour=2, minute=30, timezone=new_york
        )
        sync_code_crons(using="default")
        while clock.now() < datetime(2026, 3, 11, tzinfo=UTC):
            clock.advance(minutes=10)
            if due(clock):
                run_due()
    ticks = runs("ny 0230")
    assert ticks == [
        datetime(2026, 3, 7, 7, 30, tzinfo=UTC),  # 02:30 EST (-05:00)
        datetime(2026, 3, 8, 7, 0, tzinfo=UTC),  # 02:30 does not exist: 03:00 EDT
        datetime(2026, 3, 9, 6, 30, tzinfo=UTC),  # 02:30 EDT (-04:00)
        datetime(2026, 3, 10, 6, 30, tzinfo=UTC),
    ]
    assert count("ny") == 4
    assert CronJob.objects.get(name="ny 0230").missed_count == 0


def test_dst_fall_back_a_daily_0130_runs_once_at_the_first_0130(db, code_crons):
    start = datetime(2026, 10, 30, 12, tzinfo=UTC)
    with FakeClock(start) as clock:
        code_crons.daily(
            "ny 0130",
            functions.increment,
            {"name": "ny"},
            hour=1,
            minute=30,
            timezone="America/New_York",
        )
        sync_code_crons(using="default")
        while clock.now() < datetime(2026, 11, 3, 12, tzinfo=UTC):
            clock.advance(minutes=10)
            if due(clock):
                run_due()
    assert runs("ny 0130") == [
        datetime(2026, 10, 31, 5, 30, tzinfo=UTC),  # 01:30 EDT (-04:00)
        datetime(2026, 11, 1, 5, 30, tzinfo=UTC),  # the first 01:30, still EDT
        datetime(2026, 11, 2, 6, 30, tzinfo=UTC),  # 01:30 EST (-05:00)
        datetime(2026, 11, 3, 6, 30, tzinfo=UTC),
    ]
    assert count("ny") == 4


def test_nothing_due_costs_one_query(db, code_crons, fake_clock, django_assert_num_queries):
    code_crons.daily("quiet", functions.increment, {"name": "q"}, hour=3)
    sync_code_crons(using="default")
    with django_assert_num_queries(1):
        assert due(fake_clock) == 0


def test_ten_thousand_crons_cost_one_query_when_none_is_due_and_a_few_when_one_is(
    db, fake_clock, django_assert_num_queries, django_assert_max_num_queries
):
    later = START + timedelta(hours=1)
    CronJob.objects.bulk_create(
        CronJob(
            name=f"user {index}",
            function="tests.functions:increment",
            kind="mutation",
            args={"name": "many"},
            schedule_type="interval",
            interval=timedelta(hours=1),
            timezone="UTC",
            source=CronSource.RUNTIME,
            next_tick=later,
        )
        for index in range(10_000)
    )
    with django_assert_num_queries(1):
        assert due(fake_clock) == 0
    CronJob.objects.filter(name="user 7").update(next_tick=START)
    # Exists, then lock, runs, insert and update: none of it grows with the crons.
    with django_assert_max_num_queries(8):
        assert due(fake_clock) == 1
    assert runs("user 7") == [START]


def test_the_database_allows_one_row_per_cron_tick_and_any_number_without_a_cron(db):
    def insert(cron):
        return ScheduledFunction.objects.insert_one(
            args_json='{"name": "x"}',
            name="tests.functions:increment",
            kind="mutation",
            state=State.PENDING,
            scheduled_time=START,
            next_run_time=START,
            creation_time=START,
            cron=cron,
        )

    insert(None)
    insert(None)
    insert("a")
    insert("b")
    with pytest.raises(IntegrityError), transaction.atomic():
        insert("a")
    assert ScheduledFunction.objects.filter(cron__isnull=True).count() == 2
    assert ScheduledFunction.objects.filter(cron="a").count() == 1


def test_a_tick_that_already_has_its_run_gets_no_second_one(db, code_crons, fake_clock, caplog):
    """A worker holding a stale ``next_tick`` (or a re-registered cron) hits the constraint:
    the insert is refused inside a savepoint and the rest of the poll goes on."""
    code_crons.interval("stale", functions.increment, {"name": "s"}, minutes=1)
    code_crons.interval("other", functions.increment, {"name": "o"}, minutes=1)
    sync_code_crons(using="default")
    assert due(fake_clock) == 2
    run_due()
    CronJob.objects.filter(name="stale").update(next_tick=START)
    fake_clock.advance(seconds=30)
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        assert due(fake_clock) == 0
    assert "cron tick already has its run cron=stale" in caplog.text
    assert runs("stale") == [START]
    assert CronJob.objects.get(name="stale").next_tick == START + timedelta(minutes=1)
    # The transaction is still usable, and the next tick runs normally.
    fake_clock.advance(seconds=30)
    assert due(fake_clock) == 2
    assert runs("stale") == [START, START + timedelta(minutes=1)]


def test_a_schedule_that_cannot_be_computed_pauses_its_cron_with_an_error(
    db, code_crons, fake_clock, caplog
):
    code_crons.interval("broken", functions.increment, {"name": "b"}, minutes=1)
    code_crons.interval("fine", functions.increment, {"name": "f"}, minutes=1)
    sync_code_crons(using="default")
    CronJob.objects.filter(name="broken").update(
        schedule_type="cron", interval=None, expression="0 0 * * *", timezone="Mars/Olympus"
    )
    with caplog.at_level(logging.ERROR, logger="convex_scheduler"):
        assert due(fake_clock) == 1
    assert "cron paused: its schedule cannot be computed cron=broken" in caplog.text
    broken = CronJob.objects.get(name="broken")
    assert (broken.paused, broken.next_tick) == (True, None)
    assert runs("fine") == [START]


# Run-time crons ----------------------------------------------------------


def test_register_creates_a_runtime_cron_transactionally(db, fake_clock):
    with pytest.raises(RuntimeError), transaction.atomic():
        crons.register(
            "user 1 digest", functions.increment, {"name": "u1"}, interval=timedelta(hours=1)
        )
        raise RuntimeError("rolled back")
    assert not CronJob.objects.filter(name="user 1 digest").exists()
    job = crons.register(
        "user 1 digest", functions.increment, {"name": "u1"}, interval=timedelta(hours=1)
    )
    assert (job.source, job.next_tick, job.timezone) == (CronSource.RUNTIME, START, "UTC")
    assert due(fake_clock) == 1
    run_due()
    assert count("u1") == 1


def test_register_replaces_and_a_changed_schedule_takes_effect_from_its_next_tick(db, fake_clock):
    crons.register("report", functions.increment, {"name": "r"}, interval=timedelta(hours=1))
    due(fake_clock)
    run_due()
    fake_clock.advance(minutes=20)
    job = crons.register(
        "report", functions.increment, {"name": "r2"}, cron="0 * * * *", timezone="Europe/Paris"
    )
    assert CronJob.objects.runtime().count() == 1
    assert (job.expression, job.timezone, job.args) == ("0 * * * *", "Europe/Paris", {"name": "r2"})
    assert job.next_tick == START + timedelta(hours=1)  # nothing runs now
    assert due(fake_clock) == 0
    fake_clock.advance(minutes=40)
    assert due(fake_clock) == 1
    run_due()
    assert (count("r"), count("r2")) == (1, 1)


def test_register_validates_like_declarations(db, code_crons):
    cases = [
        ({}, None, "exactly one"),
        ({"interval": timedelta(minutes=1), "cron": "* * * * *"}, None, "exactly one"),
        ({"interval": 60}, "interval", "timedelta"),
        ({"interval": timedelta(milliseconds=999)}, "interval", "at least one second"),
        ({"cron": "* * *"}, "cron", "5 fields"),
        ({"cron": "* * * * *", "timezone": "Nowhere/Land"}, "timezone", "Unknown time zone"),
    ]
    for kwargs, field, words in cases:
        with pytest.raises(SchedulingError, match=words) as raised:
            crons.register("bad", functions.increment, {"name": "b"}, **kwargs)
        assert raised.value.field == field
    with pytest.raises(SchedulingError, match="signature") as raised:
        crons.register("bad", functions.increment, {}, interval=timedelta(minutes=1))
    assert raised.value.field == "args"
    assert not CronJob.objects.exists()
    # A name declared in code belongs to the code.
    code_crons.interval("in code", functions.increment, {"name": "c"}, minutes=1)
    with pytest.raises(SchedulingError, match="declared in code") as raised:
        crons.register("in code", functions.increment, {"name": "c"}, interval=timedelta(1))
    assert raised.value.field == "name"


def test_delete_removes_the_cron_and_cancels_its_pending_run(db, code_crons, fake_clock, caplog):
    crons.register("per user", functions.increment, {"name": "p"}, interval=timedelta(minutes=1))
    due(fake_clock)
    run = ScheduledFunction.objects.get(cron="per user")
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        assert crons.delete("per user") is True
    assert "cron deleted cron=per user canceled=1" in caplog.text
    assert not CronJob.objects.filter(name="per user").exists()
    assert ScheduledFunction.objects.get(pk=run.pk).state == State.CANCELED
    assert crons.delete("per user") is False
    fake_clock.advance(minutes=5)
    assert due(fake_clock) == 0
    # Code crons are deleted by removing them from the code.
    code_crons.interval("coded", functions.increment, {"name": "c"}, minutes=1)
    sync_code_crons(using="default")
    with pytest.raises(SchedulingError, match="declared in code"):
        crons.delete("coded")
    assert CronJob.objects.filter(name="coded").exists()


def test_delete_is_transactional_with_the_caller(db, fake_clock):
    crons.register("kept", functions.increment, {"name": "k"}, interval=timedelta(minutes=1))
    due(fake_clock)
    with pytest.raises(RuntimeError), transaction.atomic():
        crons.delete("kept")
        raise RuntimeError("rolled back")
    assert CronJob.objects.filter(name="kept").exists()
    assert ScheduledFunction.objects.get(cron="kept").state == State.PENDING


# Pause and resume --------------------------------------------------------


def test_a_paused_cron_makes_no_rows_and_resuming_does_not_replay(db, fake_clock, caplog):
    crons.register("pausable", functions.increment, {"name": "p"}, interval=timedelta(minutes=10))
    due(fake_clock)
    run_due()
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        assert crons.pause("pausable") is True
    assert crons.pause("pausable") is False
    assert "cron paused cron=pausable" in caplog.text
    fake_clock.advance(hours=2, minutes=5)
    assert due(fake_clock) == 0
    assert crons.resume("pausable") is True
    assert crons.resume("pausable") is False
    job = CronJob.objects.get(name="pausable")
    # The interval keeps its phase: 12:00 + 13 * 10 min, the first tick after 14:05.
    assert job.next_tick == START + timedelta(hours=2, minutes=10)
    assert due(fake_clock) == 0
    fake_clock.advance(minutes=5)
    assert due(fake_clock) == 1
    job.refresh_from_db()
    assert (job.run_count, job.missed_count, job.overlap_count) == (2, 0, 0)
    with pytest.raises(SchedulingError, match="No cron is named 'nope'"):
        crons.pause("nope")
    with pytest.raises(SchedulingError, match="No cron is named 'nope'"):
        crons.resume("nope")


def test_a_paused_cron_stays_paused_when_its_code_changes(db, code_crons, fake_clock):
    code_crons.daily("paused code", functions.increment, {"name": "p"}, hour=1)
    sync_code_crons(using="default")
    crons.pause("paused code")
    code_crons.code_crons.unregister("paused code")
    code_crons.daily("paused code", functions.increment, {"name": "p"}, hour=2)
    sync_code_crons(using="default")
    job = CronJob.objects.get(name="paused code")
    assert (job.paused, job.next_tick, job.expression) == (True, None, "0 2 * * *")
    crons.resume("paused code")
    job.refresh_from_db()
    assert job.next_tick == datetime(2026, 6, 2, 2, tzinfo=UTC)


# Code is the source of truth for code crons -------------------------------


def test_sync_creates_changes_and_removes_code_crons(db, code_crons, fake_clock, caplog):
    code_crons.interval("sync a", functions.increment, {"name": "a"}, minutes=10)
    code_crons.daily("sync b", functions.increment, {"name": "b"}, hour=18)
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        sync_code_crons(using="default")
    assert "cron created from code cron=sync a schedule=every 10 minutes" in caplog.text
    assert set(CronJob.objects.code().values_list("name", flat=True)) >= {"sync a", "sync b"}
    assert due(fake_clock) == 1  # the interval cron, at first sight
    a_run = ScheduledFunction.objects.get(cron="sync a")

    # A new version of the code: "sync a" changed its interval, "sync b" its
    # arguments, and a third appeared.
    fake_clock.advance(minutes=3)
    code_crons.code_crons.unregister("sync a")
    code_crons.code_crons.unregister("sync b")
    code_crons.interval("sync a", functions.increment, {"name": "a"}, minutes=5)
    code_crons.daily("sync b", functions.increment, {"name": "b2"}, hour=18)
    code_crons.interval("sync c", functions.increment, {"name": "c"}, hours=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        sync_code_crons(using="default")
    assert "cron changed from code cron=sync a schedule=every 5 minutes" in caplog.text
    assert "cron changed from code cron=sync b" in caplog.text
    a = CronJob.objects.get(name="sync a")
    assert a.next_tick == START + timedelta(minutes=5)  # from its last tick, not now
    b = CronJob.objects.get(name="sync b")
    assert (b.args, b.next_tick) == ({"name": "b2"}, datetime(2026, 6, 1, 18, tzinfo=UTC))
    # Syncing unchanged code changes and logs nothing.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        sync_code_crons(using="default")
    assert caplog.text == ""

    # "sync a" is removed from the code while its run is still pending.
    code_crons.code_crons.unregister("sync a")
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        sync_code_crons(using="default")
    assert "cron removed from code cron=sync a canceled=1" in caplog.text
    a.refresh_from_db()
    assert (a.removed_time, a.next_tick) == (fake_clock.now(), None)
    assert ScheduledFunction.objects.get(pk=a_run.pk).state == State.CANCELED
    fake_clock.advance(hours=1)
    due(fake_clock)
    assert runs("sync a") == [START]
    # A removed code cron may now be deleted, or come back with the code.
    code_crons.interval("sync a", functions.increment, {"name": "a"}, minutes=5)
    sync_code_crons(using="default")
    a.refresh_from_db()
    assert (a.removed_time, a.next_tick) == (None, fake_clock.now())


def test_a_code_cron_takes_over_a_runtime_cron_of_the_same_name(db, code_crons, caplog):
    crons.register(
        "shared name", functions.increment, {"name": "rt"}, interval=timedelta(minutes=1)
    )
    code_crons.daily("shared name", functions.increment, {"name": "code"}, hour=4)
    with caplog.at_level(logging.WARNING, logger="convex_scheduler"):
        sync_code_crons(using="default")
    assert "replaces the run-time cron of the same name cron=shared name" in caplog.text
    job = CronJob.objects.get(name="shared name")
    assert (job.source, job.args, job.expression) == ("code", {"name": "code"}, "0 4 * * *")


# Several workers at once ---------------------------------------------------


def poll_at_once(now, threads):
    """Call ``start_due_runs`` from ``threads`` threads, each on its own connection,
    released at the same instant; return their results and errors."""
    barrier = threading.Barrier(threads)
    results, errors = [], []

    def poll():
        try:
            barrier.wait(timeout=30)
            results.append(start_due_runs(using="default", now=now))
        except Exception as exc:  # reported by the caller, with the database's words
            errors.append(exc)
        finally:
            connections.close_all()

    workers = [threading.Thread(target=poll) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return results, errors


@pytest.mark.django_db(transaction=True)
def test_threads_on_their_own_connections_create_exactly_one_run_per_tick(code_crons):
    """Real races between connections: every thread polls at the same instant."""
    for index in range(40):
        code_crons.interval(f"race {index}", functions.increment, {"name": "race"}, minutes=1)
    with FakeClock(START) as clock:
        sync_code_crons(using="default")
        connections.close_all()
        totals = []
        for _ in range(3):
            results, errors = poll_at_once(clock.now(), threads=4)
            assert not errors, errors
            totals.append(sum(results))
            # A worker ran them; the next tick is free to run.
            ScheduledFunction.objects.filter(cron__startswith="race ").pending().succeed(
                clock.now(), from_state=State.PENDING
            )
            clock.advance(minutes=1)
    assert totals == [40, 40, 40]
    per_tick = list(
        ScheduledFunction.objects.filter(cron__startswith="race ").values_list(
            "cron", "scheduled_time"
        )
    )
    assert len(per_tick) == len(set(per_tick)) == 120
    jobs = CronJob.objects.filter(name__startswith="race ")
    assert set(jobs.values_list("run_count", "missed_count", "overlap_count")) == {(3, 0, 0)}


# testing.run_due ---------------------------------------------------------


@needs_worker_hook
def test_run_due_applies_code_crons_and_starts_their_due_runs(db, code_crons):
    with FakeClock(START) as clock:
        code_crons.interval("via run_due", functions.increment, {"name": "rd"}, minutes=5)
        code_crons.daily(
            "tokyo", functions.increment, {"name": "tk"}, hour=8, timezone="Asia/Tokyo"
        )
        run_due()
        assert (count("rd"), count("tk")) == (1, 0)
        clock.advance(minutes=5)
        run_due()
        assert count("rd") == 2
        clock.set(datetime(2026, 6, 1, 23, 0, tzinfo=UTC))  # 08:00 in Tokyo
        run_due()
        assert count("tk") == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_registers_of_one_new_name_make_one_cron():
    """Each thread on its own connection; the losers of the insert replace the winner's."""
    barrier = threading.Barrier(8)
    errors = []

    def register(index):
        try:
            barrier.wait(timeout=30)
            crons.register(
                "contended", functions.increment, {"name": f"t{index}"}, interval=timedelta(hours=1)
            )
        except Exception as exc:  # reported below, with the database's words
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=register, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    job = CronJob.objects.get(name="contended")
    assert job.args in [{"name": f"t{index}"} for index in range(8)]
