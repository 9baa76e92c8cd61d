"""Scheduled functions the tests schedule (discovered like any app's ``functions``)."""

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from django.db import connection
from django.db.models import F

from convex_scheduler import action, internal_action, internal_mutation, mutation, scheduler

from . import completion, poison  # noqa: F401  (register more test functions)
from .models import ActionRun, Counter


def bump(name, by=1):
    Counter.objects.get_or_create(name=name)
    Counter.objects.filter(name=name).update(value=F("value") + by)


@mutation
def increment(ctx, name: str, by: int = 1) -> None:
    bump(name, by)


@internal_mutation(name="tests:internal_increment")
def internal_increment(ctx, name: str) -> None:
    bump(name)


@mutation
def increment_then_fail(ctx, name: str) -> None:
    bump(name)
    raise ValueError(f"boom after incrementing {name}")


@mutation
def schedule_children(ctx, name: str, count: int, delay_ms: int = 0) -> None:
    for _ in range(count):
        ctx.scheduler.run_after(delay_ms, increment, {"name": name})


@mutation
def schedule_then_fail(ctx, name: str) -> None:
    ctx.scheduler.run_after(0, increment, {"name": name})
    raise RuntimeError("failed after scheduling")


@mutation
def schedule_big(ctx, count: int, size: int) -> None:
    for _ in range(count):
        ctx.scheduler.run_after(0, increment, {"name": "x" * size})


@mutation
def cancel_self(ctx) -> None:
    ctx.scheduler.cancel(ctx.scheduled_function_id)


@mutation
def cancel_other(ctx, target: int) -> None:
    ctx.scheduler.cancel(target)


@action
def record(ctx, label: str = "") -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=label)


@internal_action(name="tests:internal_record")
def internal_record(ctx, label: str = "") -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=label)


@action
def failing_action(ctx) -> None:
    raise RuntimeError("the action failed")


@action
def action_canceled_midway(ctx, name: str) -> None:
    """Schedules a child, gets canceled (as another client would), schedules again."""
    ctx.scheduler.run_after(0, increment, {"name": f"{name}-before"})
    scheduler.cancel(ctx.scheduled_function_id)
    ctx.scheduler.run_after(0, increment, {"name": f"{name}-after"})
    ctx.run_mutation(schedule_children, {"name": f"{name}-via-mutation", "count": 1})
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=name)


@action
def action_runs_mutation(ctx, name: str) -> int:
    ctx.run_mutation(increment, {"name": name, "by": 2})
    ctx.run_mutation("tests.functions:schedule_children", {"name": name, "count": 2})
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=name)


@mutation
def conflict_until(ctx, name: str, failures: int) -> None:
    """Fails with a real transient database error on its first ``failures`` attempts."""
    bump(name)
    if ctx.attempt <= failures:
        raise_real_conflict()


def raise_real_conflict() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'forced conflict' "
                "USING ERRCODE = 'serialization_failure'; END $$;"
            )
    elif connection.vendor == "sqlite":
        # The worker holds the write lock; a second connection that wants it
        # gets SQLITE_BUSY from SQLite itself.
        other = sqlite3.connect(connection.settings_dict["NAME"], timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
        finally:
            other.close()
    elif connection.vendor == "mysql":
        with connection.cursor() as cursor:
            cursor.execute(
                "BEGIN NOT ATOMIC SIGNAL SQLSTATE '40001' "
                "SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'forced deadlock'; END"
            )
    raise AssertionError("expected the database to raise a transient error")


@mutation
def developer_error_from_database(ctx, name: str) -> None:
    """An IntegrityError is a developer error: not retried."""
    bump(name)
    Counter.objects.create(name=name)


# Crash tests: these block while a gate file exists so the test can kill the
# worker at a known point, without racing a sleep.


def _wait_at_gate(gate: str, entered: str) -> None:
    Path(entered).touch()
    deadline = time.monotonic() + 120
    while Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


@mutation
def blocking_increment(ctx, name: str, gate: str, entered: str) -> None:
    bump(name)
    if Path(gate).exists():
        _wait_at_gate(gate, entered)


@action
def blocking_record(ctx, label: str, gate: str, entered: str, log: str) -> None:
    with open(log, "a") as handle:
        handle.write(f"{ctx.scheduled_function_id}\n")
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=label)
    if Path(gate).exists():
        _wait_at_gate(gate, entered)


@mutation
def terminate_own_connection_once(ctx, name: str) -> None:
    """The server drops the connection mid-mutation on the first attempt."""
    bump(name)
    if ctx.attempt == 1:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            else:
                cursor.execute("SELECT CONNECTION_ID()")
                cursor.execute(f"KILL {int(cursor.fetchone()[0])}")


# The fault campaign (python -m tests.campaign) schedules these by the thousand
# while it kills workers; each leaves evidence that shows a duplicate or a loss.


@mutation(name="campaign:mutation")
def campaign_mutation(ctx, key: str, child: bool = False, fail: bool = False) -> None:
    bump(key)
    if child:
        ctx.scheduler.run_after(0, "campaign:child", {"key": f"{key}/child"})
    if fail:
        raise ValueError(f"campaign failure {key}")


@mutation(name="campaign:child")
def campaign_child(ctx, key: str) -> None:
    bump(key)


@action(name="campaign:action")
def campaign_action(ctx, key: str, work_ms: int = 0, fail: bool = False) -> None:
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=key)
    if work_ms:
        time.sleep(work_ms / 1000)
    if fail:
        raise RuntimeError(f"campaign failure {key}")


# Crons (tests/crons.py and tests/test_crons*.py).


@mutation
def cron_tick(ctx, name: str) -> None:
    """Counts the runs of a cron and records which tick each one was."""
    bump(name)
    ActionRun.objects.create(scheduled_function_id=ctx.scheduled_function_id, label=name)


@action
async def bump_twice_async(ctx, name: str) -> int:
    """An async action writing through ``arun_mutation`` and scheduling through ``arun_after``."""
    await ctx.arun_mutation(increment, {"name": name})
    return await ctx.scheduler.arun_after(0, increment, {"name": name})


# Actions in flight: these wait for each other, so they succeed only when
# the worker runs them all at once.

ARRIVED: dict[str, int] = {}
ARRIVED_LOCK = threading.Lock()


def _arrive(key: str) -> int:
    with ARRIVED_LOCK:
        ARRIVED[key] = ARRIVED.get(key, 0) + 1
        return ARRIVED[key]


def _arrived(key: str) -> int:
    with ARRIVED_LOCK:
        return ARRIVED.get(key, 0)


def _met(key: str, count: int, deadline: float) -> bool:
    """Whether ``count`` have arrived; ``RuntimeError`` once ``deadline`` passed without them."""
    arrived = _arrived(key)
    if arrived < count and time.monotonic() > deadline:
        raise RuntimeError(f"only {arrived} of {count} ran at once")
    return arrived >= count


@action
async def async_rendezvous(ctx, key: str, count: int) -> int:
    """Waits on the event loop until ``count`` of its kind have started."""
    _arrive(key)
    deadline = time.monotonic() + 60
    while not _met(key, count, deadline):
        await asyncio.sleep(0.005)
    return _arrived(key)


def _meet(key: str, count: int, seconds: float) -> int:
    _arrive(key)
    deadline = time.monotonic() + seconds
    while not _met(key, count, deadline):
        time.sleep(0.005)
    return _arrived(key)


@action
def sync_rendezvous(ctx, key: str, count: int) -> int:
    """Waits on its thread until ``count`` of its kind have started."""
    return _meet(key, count, 60)


@action
async def async_wait_at_gate(ctx, gate: str, entered_dir: str) -> None:
    """Marks that it started (a file named by its id), then waits while ``gate`` exists."""
    Path(entered_dir, str(ctx.scheduled_function_id)).touch()
    deadline = time.monotonic() + 120
    while Path(gate).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


@mutation
def mutation_rendezvous(ctx, key: str, count: int) -> int:
    """Waits, inside its transaction, until ``count`` functions of ``key`` have started."""
    return _meet(key, count, 30)
