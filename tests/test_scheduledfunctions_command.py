"""``manage.py scheduledfunctions list|show|cancel``."""

from __future__ import annotations

import json
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from convex_scheduler import scheduler
from convex_scheduler.models import Kind, ScheduledFunction, State

from . import functions

pytestmark = pytest.mark.django_db

WHEN = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


def run(*args: str) -> str:
    out = StringIO()
    call_command("scheduledfunctions", *args, stdout=out)
    return out.getvalue()


def row(name="tests.functions:increment", state=State.PENDING, when=WHEN, **fields):
    """A row as a worker would have left it (``state``, ``error``, ``attempts``...)."""
    finished = state in (State.SUCCESS, State.FAILED, State.CANCELED)
    defaults = {
        "kind": Kind.MUTATION,
        "args": {"name": "k"},
        "next_run_time": None if finished or state == State.IN_PROGRESS else when,
        "completed_time": when if finished else None,
    }
    defaults.update(fields)
    return ScheduledFunction.objects.create(name=name, state=state, scheduled_time=when, **defaults)


def table(output: str) -> list[str]:
    """The data rows of a ``list`` table (not the header or the footer)."""
    return [line for line in output.splitlines() if line.split() and line.split()[0].isdigit()]


def _forget_the_largest_id():
    """Delete the row with the largest id and wind the id counter back.

    Both InnoDB's auto-increment counter and SQLite's ``sqlite_sequence``
    (an AUTOINCREMENT key) follow the largest id ever inserted and survive
    the flush between tests: after a row with id 2**63-1, every later insert
    of the suite would fail (SQLite says "database or disk is full").
    """
    from django.db import connection

    ScheduledFunction.objects.filter(pk=2**63 - 1).delete()
    table = ScheduledFunction._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "mysql":
            cursor.execute(f"ALTER TABLE {connection.ops.quote_name(table)} AUTO_INCREMENT = 1")
        elif connection.vendor == "sqlite":
            cursor.execute(
                "UPDATE sqlite_sequence SET seq = "
                f"(SELECT COALESCE(MAX(id), 0) FROM {connection.ops.quote_name(table)}) "
                "WHERE name = %s",
                [table],
            )


# list


# The layouts below depend on the width of the id column, so these tests give
# their rows small ids: deep in a long suite on PostgreSQL the sequence is at
# six digits.


def test_list_is_newest_first_with_every_column():
    old = row(when=WHEN - timedelta(days=1), state=State.SUCCESS, attempts=1, id=11)
    new = row(
        id=12,
        name="tests.functions:increment_then_f",
        state=State.FAILED,
        attempts=2,
        error="ValueError\nTraceback (most recent call last):\n  ...",
    )

    lines = run("list").splitlines()

    assert lines[0].split() == ["ID", "STATE", "NAME", "SCHEDULED", "TRIES", "ERROR"]
    assert lines[1].split() == [
        str(new.pk),
        "failed",
        "tests.functions:increment_then_f",
        "2026-05-01",
        "12:00",
        "2",
        "ValueError",
    ]
    assert lines[2].split() == [
        str(old.pk),
        "success",
        "tests.functions:increment",
        "2026-04-30",
        "12:00",
        "1",
    ]
    assert lines[3] == "Showing 2 (times in UTC)."
    assert "Traceback" not in "\n".join(lines)


def test_list_times_are_in_the_current_time_zone():
    row()
    with timezone.override(zoneinfo.ZoneInfo("Asia/Tokyo")):
        out = run("list")
    assert "2026-05-01 21:00" in out
    assert "times in Asia/Tokyo" in out


@pytest.mark.django_db(transaction=True)
def test_list_fits_80_columns_and_truncates_with_an_ellipsis():
    long_name = "tests.functions:" + "very_long_function_name_" * 6
    row(name=long_name, state=State.FAILED, error="RuntimeError: " + "x" * 300 + "\nmore")
    row(name="短い名前で幅の広い文字" * 5, state=State.FAILED, error="エラー" * 40)
    row(id=2**63 - 1, state=State.FAILED, attempts=123456, error="E" * 100, name=long_name)
    try:
        lines = run("list").splitlines()
    finally:
        _forget_the_largest_id()

    from convex_scheduler.management.commands.scheduledfunctions import _display_width

    assert all(_display_width(line) <= 80 for line in lines), lines
    assert sum("…" in line for line in lines) >= 3
    assert str(2**63 - 1) in lines[1]
    assert "…" in lines[1].split()[-1]  # even the widest id leaves room for some error


def test_list_long_error_gets_at_least_a_third():
    row(state=State.FAILED, error="RuntimeError: " + "x" * 300, id=13)
    (line,) = table(run("list"))
    assert "RuntimeError: xx" in line


def test_list_without_errors_gives_the_name_the_room():
    name = "tests.functions:" + "n" * 20
    row(name=name, id=14)
    assert name in run("list")


def test_list_escapes_control_characters_in_names_and_errors():
    row(state=State.FAILED, name="evil\x1b[2Jname", error="bad\x1b]0;owned\x07 news\r\nline2")
    out = run("list")
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "evil\\x1b[2Jname" in out
    assert "line2" not in out


@pytest.mark.parametrize("spelling", ["failed", "FAILED", "Failed"])
def test_list_filters_by_state(spelling):
    failed = row(state=State.FAILED, error="E")
    row(state=State.SUCCESS)
    lines = table(run("list", "--state", spelling))
    assert [line.split()[0] for line in lines] == [str(failed.pk)]


@pytest.mark.parametrize("spelling", ["inProgress", "in_progress", "in-progress", "INPROGRESS"])
def test_list_state_in_progress_spellings(spelling):
    running = row(state=State.IN_PROGRESS, kind=Kind.ACTION)
    row()
    lines = table(run("list", "--state", spelling))
    assert [line.split()[0] for line in lines] == [str(running.pk)]


def test_list_rejects_an_unknown_state():
    with pytest.raises(CommandError, match=r"'done' is not a state; choose from pending, "):
        run("list", "--state", "done")


def test_list_filters_by_name_exactly_or_by_prefix():
    one = row(name="chat:send")
    two = row(name="chat:notify", when=WHEN - timedelta(hours=1))
    row(name="billing:charge")
    assert [line.split()[0] for line in table(run("list", "--name", "chat:send"))] == [str(one.pk)]
    assert [line.split()[0] for line in table(run("list", "--name", "chat:"))] == []
    assert [line.split()[0] for line in table(run("list", "--name", "chat:*"))] == [
        str(one.pk),
        str(two.pk),
    ]


def test_list_since_and_until():
    rows = {day: row(when=WHEN + timedelta(days=day)) for day in range(4)}

    def ids(*args):
        return {int(line.split()[0]) for line in table(run("list", *args))}

    assert ids("--since", "2026-05-02") == {rows[1].pk, rows[2].pk, rows[3].pk}
    # A date for --until includes that day.
    assert ids("--until", "2026-05-02") == {rows[0].pk, rows[1].pk}
    assert ids("--since", "2026-05-02T12:00:00Z", "--until", "2026-05-03T12:00") == {rows[1].pk}
    # Naive datetimes are in the current time zone.
    with timezone.override(zoneinfo.ZoneInfo("Asia/Tokyo")):
        assert ids("--since", "2026-05-04T20:59") == {rows[3].pk}
        assert ids("--since", "2026-05-04T21:01") == set()
    assert ids("--since", "2026-05-04T13:00+02:00") == {rows[3].pk}
    everything = {r.pk for r in rows.values()}
    assert ids("--since", "0001-01-01", "--until", "9999-12-31") == everything
    with timezone.override(zoneinfo.ZoneInfo("Asia/Tokyo")):
        assert ids("--since", "0001-01-01", "--until", "9999-12-31") == everything
        with pytest.raises(CommandError, match="is not a valid date or time"):
            ids("--since", "0001-01-01T01:00")


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--since", "yesterday", "'yesterday' is not an ISO 8601 date or datetime"),
        ("--since", "2026-13-01", "'2026-13-01' is not a valid date or time"),
        ("--until", "2026-05-01T25:00", "is not a valid date or time"),
        ("--until", "", "is not an ISO 8601"),
        ("--limit", "0", "must be from 1 to 10000, not 0"),
        ("--limit", "10001", "must be from 1 to 10000, not 10001"),
        ("--limit", "ten", "'ten' is not a whole number"),
    ],
)
def test_list_rejects_bad_values(flag, value, message):
    with pytest.raises(CommandError, match=message):
        run("list", flag, value)


def test_list_rejects_since_after_until():
    with pytest.raises(CommandError, match="--since must be earlier than --until"):
        run("list", "--since", "2026-05-03", "--until", "2026-05-01")


def test_list_limit_keeps_the_newest_and_says_there_are_more():
    made = [row(when=WHEN + timedelta(minutes=minute)) for minute in range(5)]
    out = run("list", "--limit", "2")
    assert [int(line.split()[0]) for line in table(out)] == [made[4].pk, made[3].pk]
    assert "Showing the newest 2 (times in UTC); narrow with filters or raise --limit" in out


def test_list_default_limit_is_50():
    ScheduledFunction.objects.bulk_create(
        ScheduledFunction(
            name="tests.functions:increment",
            kind=Kind.MUTATION,
            state=State.PENDING,
            scheduled_time=WHEN,
            next_run_time=WHEN,
        )
        for _ in range(51)
    )
    assert len(table(run("list"))) == 50


def test_list_empty():
    assert run("list") == "No scheduled functions match.\n"


# show


def test_show_prints_every_field_pretty_args_and_the_full_error():
    parent = row(state=State.SUCCESS)
    error = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: ü\x1b[2J'

    shown = row(
        state=State.FAILED,
        parent=parent,
        args={"name": "k", "nested": {"b": [1, 2], "a": "ü"}},
        error=error,
        attempts=3,
        owner="host:1",
    )
    children = [row(parent=shown) for _ in range(2)]

    out = run("show", str(shown.pk))

    lines = out.splitlines()
    for field in ScheduledFunction._meta.concrete_fields:
        assert any(line.startswith(field.attname) for line in lines), field.attname
    for expected in [
        rf"parent_id +{parent.pk}",
        r"state +failed",
        r"scheduled_time +2026-05-01 12:00:00\.000000\+00:00",
        r"started_time +-",
        r"owner +host:1",
        rf"children +{children[0].pk}, {children[1].pk}",
    ]:
        assert re.search(f"^{expected}$", out, re.MULTILINE), expected
    args_text = out.split("\nargs\n", 1)[1].split("\nerror\n", 1)[0]
    assert json.loads(args_text) == shown.args
    assert '    "a": "ü",' in args_text  # indented, sorted, not ASCII-escaped
    error_text = out.split("\nerror\n", 1)[1]
    assert error_text.splitlines() == [
        "  Traceback (most recent call last):",
        '    File "x.py", line 1',
        "  ValueError: ü\\x1b[2J",
    ]


def test_show_unknown_id():
    with pytest.raises(CommandError, match=r"^no scheduled function with id 12345$"):
        run("show", "12345")


@pytest.mark.parametrize("command", ["show", "cancel"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "'abc' is not a scheduled function id; ids are whole numbers from 1"),
        ("-1", "'-1' is not a scheduled function id"),
        ("0", "'0' is not a scheduled function id"),
        ("1.5", "'1.5' is not a scheduled function id"),
        ("٣", "is not a scheduled function id"),
        (
            "99999999999999999999999",
            "99999999999999999999999 is too large to be a scheduled function id "
            r"\(at most 9223372036854775807\)",
        ),
    ],
)
def test_malformed_ids_are_command_errors(command, value, message):
    with pytest.raises(CommandError, match=message):
        run(command, value)


def test_a_subcommand_is_required():
    with pytest.raises(CommandError, match=r"required: \{list,show,cancel\}"):
        run()


# cancel


def test_cancel_pending_through_the_scheduler():
    sid = scheduler.run_after(60_000, functions.increment, {"name": "k"})
    out = run("cancel", str(sid))
    assert out == (
        f"Canceled the scheduled function {sid} (tests.functions:increment). It will not run.\n"
    )
    canceled = ScheduledFunction.objects.get(pk=sid)
    assert canceled.state == State.CANCELED
    assert canceled.completed_time is not None
    assert canceled.next_run_time is None


def test_cancel_running_action_says_it_keeps_running():
    running = row(name="tests.functions:record", kind=Kind.ACTION, state=State.IN_PROGRESS)
    out = run("cancel", str(running.pk))
    assert "The running action keeps running" in out
    assert ScheduledFunction.objects.get(pk=running.pk).state == State.CANCELED


@pytest.mark.parametrize("state", [State.SUCCESS, State.FAILED, State.CANCELED])
def test_cancel_finished_says_so_and_changes_nothing(state):
    done = row(state=state)
    out = run("cancel", str(done.pk))
    assert out == (
        f"The scheduled function {done.pk} (tests.functions:increment) already finished: "
        f"{state}. Nothing to cancel.\n"
    )
    after = ScheduledFunction.objects.get(pk=done.pk)
    assert (after.state, after.completed_time) == (state, WHEN)


def test_cancel_unknown_id_fails():
    with pytest.raises(CommandError, match=r"^no scheduled function with id 777$"):
        run("cancel", "777")


def test_cancel_quiet_at_verbosity_0():
    pending = row()
    # Django's own options come before the subcommand.
    assert run("-v", "0", "cancel", str(pending.pk)) == ""
    assert ScheduledFunction.objects.get(pk=pending.pk).state == State.CANCELED


class WritesElsewhere:
    def db_for_write(self, model, **hints):
        return "replica"


def test_cancel_on_an_explicit_database_that_the_router_does_not_pick():
    pending = row()
    with override_settings(DATABASE_ROUTERS=[WritesElsewhere()]):
        # scheduler.cancel would write to the router's "replica", which does not exist.
        out = run("cancel", str(pending.pk), "--database", "default")
    assert "It will not run." in out
    after = ScheduledFunction.objects.get(pk=pending.pk)
    assert (after.state, after.next_run_time) == (State.CANCELED, None)
    assert after.completed_time is not None


# --database


@pytest.mark.parametrize(
    "args", [["list"], ["show", "1"], ["cancel", "1"]], ids=["list", "show", "cancel"]
)
def test_unknown_database_is_a_command_error(args):
    with pytest.raises(CommandError, match=r"--database 'bogus' is not in DATABASES \(known: "):
        run(*args, "--database", "bogus")


def test_known_database_is_used():
    pending = row()
    assert str(pending.pk) in run("list", "--database", "default")
    assert "state" in run("show", str(pending.pk), "--database", "default")


@pytest.mark.parametrize(
    "args", [["list"], ["show", "1"], ["cancel", "1"]], ids=["list", "show", "cancel"]
)
def test_before_migrate_says_run_migrate(args, monkeypatch):
    from django.db import connection

    monkeypatch.setattr(connection.introspection, "table_names", lambda *a, **k: ["auth_user"])
    with pytest.raises(
        CommandError,
        match=r"^Database 'default' has no scheduled functions table; "
        r"run `python manage.py migrate` first\.$",
    ):
        run(*args)
