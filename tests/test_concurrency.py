"""Several worker processes on one database; wake-up; real conflicts between connections."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from convex_scheduler import scheduler
from convex_scheduler.exceptions import Transience, classify_error
from convex_scheduler.models import ScheduledFunction, State
from convex_scheduler.wakeup import doorbell_dir

from . import functions
from .harness import finish, start_worker, wait_for
from .models import ActionRun, Counter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]


def test_three_workers_never_run_anything_twice():
    for _ in range(150):
        scheduler.run_after(0, functions.increment, {"name": "shared"})
    for index in range(60):
        scheduler.run_after(0, functions.record, {"label": str(index)})
    for _ in range(20):
        scheduler.run_after(0, functions.schedule_children, {"name": "kids", "count": 2})
    workers = [start_worker("--burst", "--concurrency", "2") for _ in range(3)]
    for worker in workers:
        code, output = finish(worker, timeout=120)
        assert code == 0, output
    assert Counter.objects.get(name="shared").value == 150
    assert Counter.objects.get(name="kids").value == 40
    runs = list(ActionRun.objects.values_list("scheduled_function_id", flat=True))
    assert len(runs) == len(set(runs)) == 60
    states = set(ScheduledFunction.objects.values_list("state", flat=True))
    assert states == {State.SUCCESS}
    # A mutation may take a second attempt when the database reports a
    # conflict (InnoDB deadlocks on the shared counter); an action never does.
    assert ScheduledFunction.objects.count() == 150 + 60 + 20 + 40
    assert not ScheduledFunction.objects.filter(attempts=0).exists()
    actions = ScheduledFunction.objects.filter(name__endswith=":record")
    assert set(actions.values_list("attempts", flat=True)) == {1}


def test_an_idle_worker_is_woken_long_before_its_poll():
    """NOTIFY on PostgreSQL; the local doorbell on SQLite and MySQL/MariaDB."""
    worker = start_worker("--interval", "60")
    try:
        if connection.vendor == "postgresql":
            wait_for(_listening, "the worker to LISTEN", timeout=30)
        else:
            wait_for(_doorbell_bound, "the worker's doorbell", timeout=30)
        started = time.monotonic()
        sid = scheduler.run_after(0, functions.increment, {"name": "woken"})
        wait_for(
            lambda: ScheduledFunction.objects.get(pk=sid).state == State.SUCCESS,
            "the function to run",
            timeout=30,
        )
        assert time.monotonic() - started < 30
    finally:
        worker.terminate()
        finish(worker)
    assert not _doorbell_bound()  # removed on exit


def _doorbell_bound():
    directory = doorbell_dir("default")
    return directory.exists() and any(p.suffix == ".sock" for p in directory.iterdir())


def _listening():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query = 'LISTEN convex_scheduler'"
        )
        return cursor.fetchone()[0] > 0


def test_cancel_racing_a_running_mutation_waits_and_exactly_one_commits(tmp_path):
    """The cancel is certainly issued while the mutation holds its lock: the
    mutation waits at a gate file until the cancel's own connection is seen
    blocked (a lock wait on the server; on SQLite, its write statement begun
    while the worker holds the database's write lock)."""
    gate, entered = tmp_path / "gate", tmp_path / "entered"
    gate.touch()
    sid = scheduler.run_after(
        0,
        functions.blocking_increment,
        {"name": "raced", "gate": str(gate), "entered": str(entered)},
    )
    worker = start_worker()
    issued, outcome = threading.Event(), []
    try:
        wait_for(entered.exists, "the mutation to start")
        canceller = threading.Thread(target=_cancel_in_own_connection, args=(sid, issued, outcome))
        canceller.start()
        wait_for(issued.is_set, "the cancel to reach the database", timeout=30)
        if connection.vendor != "sqlite":
            wait_for(_a_connection_waits_for_a_lock, "the cancel to wait for the lock", 30)
        assert canceller.is_alive()  # blocked behind the running mutation
        gate.unlink()
        canceller.join(timeout=60)
        assert not canceller.is_alive()
        assert outcome == ["returned"]
        row = ScheduledFunction.objects.get(pk=sid)
        # The mutation held its lock; the cancel waited and found it done.
        assert row.state == State.SUCCESS
        assert Counter.objects.get(name="raced").value == 1
    finally:
        gate.unlink(missing_ok=True)
        worker.terminate()
        finish(worker)


def _cancel_in_own_connection(sid, issued, outcome):
    """``scheduler.cancel`` on this thread's own connection; ``issued`` is set once
    its first write statement has begun (and so waits for any lock held)."""
    try:
        if connection.vendor == "sqlite":
            connection.ensure_connection()
            connection.connection.set_trace_callback(
                lambda sql: issued.set() if sql.startswith(("BEGIN", "UPDATE")) else None
            )
        else:
            issued.set()  # the lock wait is seen on the server itself
        scheduler.cancel(sid)
        outcome.append("returned")
    except Exception as exc:
        outcome.append(repr(exc))
    finally:
        connections.close_all()


def _a_connection_waits_for_a_lock():
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
        elif connection.mysql_is_mariadb:
            # innodb_trx does not list an autocommit UPDATE's wait; this does. It
            # is a snapshot that InnoDB refreshes only when not read for 0.1 s.
            time.sleep(0.15)
            cursor.execute("SELECT count(*) FROM information_schema.innodb_lock_waits")
        else:
            cursor.execute("SELECT count(*) FROM performance_schema.data_lock_waits")
        return cursor.fetchone()[0] > 0


@pytest.mark.skipif("connection.vendor == 'sqlite'")
def test_a_real_deadlock_between_two_connections_is_a_conflict():
    first, second = Counter.objects.create(name="a"), Counter.objects.create(name="b")
    barrier = threading.Barrier(2, timeout=30)
    errors = []

    def lock(mine, theirs):
        try:
            with transaction.atomic():
                Counter.objects.select_for_update().get(pk=mine.pk)
                barrier.wait()
                Counter.objects.select_for_update().get(pk=theirs.pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=lock, args=(first, second)),
        threading.Thread(target=lock, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(errors) == 1, errors
    assert classify_error(errors[0]) is Transience.CONFLICT
