"""One bad function never stops the queue, and nothing fails silently.

Each case here stopped or silently corrupted the scheduler once: error text a
database cannot store, ``SystemExit`` from a function, a function that kills
its process, ``async def``, names only a newer deploy knows, silence at the
default verbosity, bad command lines, and a slow forced stop on SQLite. The
cases that are about processes run real ``runscheduler`` subprocesses.
"""

import signal
import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from convex_scheduler import mutation, scheduler
from convex_scheduler.models import CRASHED_ERROR, ScheduledFunction, State
from convex_scheduler.testing import run_due
from convex_scheduler.worker import format_error, storable

from . import functions
from .harness import finish, start_worker, wait_for
from .harness import peek as _peek
from .models import Counter

HOW = ["nul", "surrogate", "unprintable", "system_exit", "keyboard_interrupt"]


def row(sid):
    return ScheduledFunction.objects.get(pk=sid)


def counter(name):
    return Counter.objects.filter(name=name).values_list("value", flat=True).first() or 0


# Error text ------------------------------------------------------------------


def test_storable_escapes_nul_and_lone_surrogates_and_keeps_the_rest():
    assert storable("a\x00b \ud800 é ✓") == "a\\x00b \\ud800 é ✓"


def test_format_error_survives_an_exception_whose_str_raises():
    from .poison import UnprintableError

    text = format_error(UnprintableError())
    assert text.startswith("UnprintableError: <UnprintableError whose message could not be read>")


@pytest.mark.django_db
@pytest.mark.parametrize("how", HOW)
def test_whatever_a_mutation_raises_is_its_failure_and_the_queue_goes_on(how):
    bad = scheduler.run_after(0, "poison:raise", {"how": how})
    good = scheduler.run_after(0, functions.increment, {"name": "after"})
    stats = run_due()
    failed = row(bad)
    assert failed.state == State.FAILED
    assert failed.attempts == 1
    assert failed.error.splitlines()[0].split(":")[0] in (
        "ValueError",
        "UnprintableError",
        "SystemExit",
        "KeyboardInterrupt",
    )
    assert "\x00" not in failed.error
    # Its writes rolled back with it; the row behind it ran.
    assert counter(f"poison-ran-{bad}") == 0
    assert row(good).state == State.SUCCESS
    assert (stats.failed, stats.succeeded) == (1, 1)


@pytest.mark.django_db
@pytest.mark.parametrize("how", HOW)
def test_whatever_an_action_raises_is_its_failure_not_an_orphan(how):
    bad = scheduler.run_after(0, "poison:raise_action", {"how": how})
    good = scheduler.run_after(0, functions.record, {"label": "after"})
    run_due()
    failed = row(bad)
    assert failed.state == State.FAILED
    assert "Transient error" not in failed.error
    assert row(good).state == State.SUCCESS


# async -----------------------------------------------------------------------


@pytest.mark.django_db
def test_an_async_action_is_awaited(tmp_path):
    marker = tmp_path / "ran"
    sid = scheduler.run_after(0, "poison:async_action", {"marker": str(marker)})
    run_due()
    assert row(sid).state == State.SUCCESS
    assert marker.read_text() == str(sid)


def test_an_async_mutation_is_refused_when_registered():
    with pytest.raises(TypeError, match="async def mutation"):

        @mutation(name="tests:async_mutation")
        async def not_allowed(ctx):
            pass


@pytest.mark.django_db
def test_a_mutation_returning_a_coroutine_fails_saying_why(recwarn):
    sid = scheduler.run_after(0, "poison:returns_coroutine")
    run_due()
    failed = row(sid)
    assert failed.state == State.FAILED
    assert "returned an awaitable" in failed.error
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# Real workers ---------------------------------------------------------------

@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_unstorable_errors_and_exits_from_functions_never_stop_a_real_worker(tmp_path):
    bad = [scheduler.run_after(0, "poison:raise", {"how": how}) for how in HOW]
    bad += [scheduler.run_after(0, "poison:raise_action", {"how": how}) for how in HOW]
    good = [scheduler.run_after(0, functions.increment, {"name": "good"}) for _ in range(20)]
    markers = [tmp_path / f"async-{index}" for index in range(4)]
    good += [
        scheduler.run_after(0, "poison:async_action", {"marker": str(marker), "ms": 20})
        for marker in markers
    ]
    code, output = finish(start_worker("--burst", "--concurrency", "2"), timeout=120)
    assert code == 0, output
    assert all(marker.exists() for marker in markers)  # async bodies really ran
    assert {row(sid).state for sid in bad} == {State.FAILED}
    assert {row(sid).state for sid in good} == {State.SUCCESS}
    assert counter("good") == 20
    # Loud by default: each failure at WARNING with its name, id and traceback.
    for sid in bad:
        assert f"function failed id={sid} " in output
    assert "Traceback (most recent call last)" in output
    assert "A worker thread crashed" not in output


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_a_mutation_that_kills_its_process_fails_after_max_crashes_and_others_run():
    poison = scheduler.run_after(0, "poison:exit_process")
    good = [scheduler.run_after(0, functions.increment, {"name": "good"}) for _ in range(5)]
    codes = []
    for _ in range(12):
        if row(poison).state == State.FAILED:
            break
        wait_for(
            lambda: ScheduledFunction.objects.due(timezone.now()).exists(),
            "a function to become due",
        )
        code, output = finish(start_worker("--burst"), timeout=120)
        codes.append(code)
        assert code in (0, 13), output
    failed = row(poison)
    assert failed.state == State.FAILED
    assert failed.error == CRASHED_ERROR.format(crashes=3)
    assert (failed.crashes, failed.attempts) == (3, 3)
    assert codes.count(13) == 3  # it ran three times, always alone after the first
    # The others ran exactly once, between the poison's attempts.
    assert {row(sid).state for sid in good} == {State.SUCCESS}
    assert counter("good") == 5
    final_code, output = finish(start_worker("--burst"))
    assert final_code == 0, output


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_rolling_deploy_older_worker_leaves_new_functions_for_newer_ones():
    sid = ScheduledFunction.objects.create(
        name="deploy:new_feature",
        kind="mutation",
        args={"name": "deployed"},
        scheduled_time=timezone.now(),
        next_run_time=timezone.now(),
    ).pk
    other = scheduler.run_after(0, functions.increment, {"name": "old"})
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    assert row(sid).state == State.PENDING
    assert row(other).state == State.SUCCESS
    assert "'deploy:new_feature' are due, but this worker has not registered it" in output
    code, output = finish(start_worker("--burst", CONVEX_TEST_NEWER_DEPLOY="1"))
    assert code == 0, output
    assert row(sid).state == State.SUCCESS
    assert counter("deployed") == 1


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
def test_forced_stop_during_a_long_mutation_exits_promptly_and_rolls_it_back(gate, tmp_path):
    entered = tmp_path / "entered"
    sid = scheduler.run_after(
        0, functions.blocking_increment, {"name": "m", "gate": str(gate), "entered": str(entered)}
    )
    worker = start_worker()
    wait_for(entered.exists, "the mutation to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "finishing running functions" in _peek(worker), "the first signal", 30)
    worker.send_signal(signal.SIGTERM)
    # Before: on SQLite, deregistering waited out the 20 s busy timeout behind
    # the abandoned mutation's own write lock.
    code, output = finish(worker, timeout=10)
    assert code == 0, output
    assert row(sid).state == State.PENDING
    assert counter("m") == 0


@pytest.fixture
def gate(tmp_path):
    gate = tmp_path / "gate"
    gate.touch()
    return gate


# The command line ----------------------------------------------------------


@pytest.mark.django_db
def test_unknown_database_is_a_usage_error():
    with pytest.raises(CommandError, match="'bogus' is not a database alias"):
        call_command("runscheduler", "--burst", "--database", "bogus", stdout=StringIO())


@pytest.mark.parametrize("value", ["0", "1025", "100000000"])
def test_concurrency_is_bounded(value):
    with pytest.raises(CommandError, match="between 1 and 1024"):
        call_command("runscheduler", "--burst", "--concurrency", value, stdout=StringIO())


@pytest.mark.subprocess
def test_before_migrate_the_worker_says_to_run_migrate_in_one_line(tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("uses a fresh SQLite file; the message does not depend on the vendor")
    empty = tmp_path / "empty.sqlite3"
    code, output = finish(start_worker("--burst", CONVEX_TEST_DB_NAME=str(empty)))
    assert code != 0
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "python manage.py migrate" in lines[0]


@pytest.mark.subprocess
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(
    "connection.vendor == 'sqlite'",
    reason="SQLite runs one write transaction at a time: the threads cannot overlap there",
)
def test_a_suspect_runs_only_when_no_other_thread_of_its_worker_holds_a_lease(gate, tmp_path):
    # An innocent mutation is leased and blocked at a gate by one runner
    # thread; a suspect that kills its process is due behind it. Leased beside
    # the innocent one, the suspect's death would count against the innocent
    # mutation too (three such deaths failed an innocent mutation as a poison
    # in a fault campaign). It must wait until the innocent batch is done.
    entered = tmp_path / "entered"
    innocent = scheduler.run_after(
        0, functions.blocking_increment, {"name": "m", "gate": str(gate), "entered": str(entered)}
    )
    suspect = scheduler.run_after(0, "poison:exit_process")
    ScheduledFunction.objects.filter(pk=suspect).update(crashes=1)
    worker = start_worker("--concurrency", "2")
    wait_for(entered.exists, "the innocent mutation to start")
    # While the innocent mutation holds its lease, the suspect must not run:
    # its exit would end this worker. (Without the isolation it dies in
    # well under a second.)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert worker.poll() is None, _peek(worker)
        time.sleep(0.05)
    gate.unlink()
    code, output = finish(worker, timeout=60)
    assert code == 13, output  # the suspect ran, alone, and killed it
    code, output = finish(start_worker("--burst"))
    assert code == 0, output
    assert (row(innocent).state, row(innocent).crashes) == (State.SUCCESS, 0)
    assert counter("m") == 1
    assert row(suspect).crashes == 2
