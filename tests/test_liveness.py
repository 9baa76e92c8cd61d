"""Which running actions count as orphaned, and the periodic status line."""

import logging
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.test import override_settings

from convex_scheduler import scheduler
from convex_scheduler.models import ORPHANED_ACTION_ERROR, ScheduledFunction, SchedulerWorker, State
from convex_scheduler.worker import Worker, process_alive
from convex_scheduler.worker.process import log_status

from . import functions

pytestmark = pytest.mark.django_db


def running_action(clock, owner):
    sid = scheduler.run_after(0, functions.record)
    ScheduledFunction.objects.filter(pk=sid).start_action(owner, clock.now())
    return sid


def register(pk, hostname, pid, heartbeat_age=timedelta(0)):
    worker = SchedulerWorker.objects.create(
        id=pk, hostname=hostname, pid=pid, started_time=Now(), last_heartbeat=Now()
    )
    worker.refresh_from_db()
    SchedulerWorker.objects.filter(pk=pk).update(
        last_heartbeat=worker.last_heartbeat - heartbeat_age
    )


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def state(sid):
    return ScheduledFunction.objects.values_list("state", "error").get(pk=sid)


def test_process_alive():
    assert process_alive(dead_pid()) is False
    import os

    assert process_alive(os.getpid()) is True
    assert process_alive(os.getpid(), process_start="not-my-start-time") is False


def test_dead_process_on_this_host_is_detected_at_once(clock):
    worker = Worker(heartbeat=False)
    register("dead-local", worker.liveness.hostname, dead_pid())
    sid = running_action(clock, "dead-local")
    assert worker.liveness.recover() == 1
    assert state(sid) == (State.FAILED, ORPHANED_ACTION_ERROR)
    assert not SchedulerWorker.objects.filter(pk="dead-local").exists()


@override_settings(CONVEX_SCHEDULER={"WORKER_TIMEOUT": 30})
def test_remote_worker_with_a_stale_heartbeat_is_dead_after_the_timeout(clock):
    worker = Worker(heartbeat=False)
    register("remote-stale", "another-machine", 1, heartbeat_age=timedelta(seconds=31))
    register("remote-live", "another-machine", 2, heartbeat_age=timedelta(seconds=5))
    stale = running_action(clock, "remote-stale")
    live = running_action(clock, "remote-live")

    # Just connected (e.g. after an outage): heartbeats are not judged yet.
    assert worker.liveness.recover() == 0
    assert state(stale)[0] == State.IN_PROGRESS

    worker.liveness.healthy_since = time.monotonic() - 31
    assert worker.liveness.recover() == 1
    assert state(stale) == (State.FAILED, ORPHANED_ACTION_ERROR)
    assert state(live) == (State.IN_PROGRESS, "")


def test_a_worker_after_losing_the_database_does_not_judge_others(clock):
    worker = Worker(heartbeat=False)
    worker.liveness.healthy_since = None  # its last heartbeat failed
    register("remote-stale", "another-machine", 1, heartbeat_age=timedelta(days=1))
    sid = running_action(clock, "remote-stale")
    assert worker.liveness.recover() == 0
    assert state(sid)[0] == State.IN_PROGRESS


def test_live_local_worker_keeps_its_action(clock):
    import os

    worker = Worker(heartbeat=False)
    register("live-local", worker.liveness.hostname, os.getppid() or 1)
    sid = running_action(clock, "live-local")
    assert worker.liveness.recover() == 0
    assert state(sid)[0] == State.IN_PROGRESS


def test_status_line(caplog, clock):
    scheduler.run_after(0, functions.increment, {"name": "a"})
    clock.advance(seconds=2.5)
    worker = Worker(heartbeat=False)
    with caplog.at_level(logging.INFO, logger="convex_scheduler"):
        log_status(worker)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status")]
    assert "succeeded=0 failed=0" in line
    assert "lag=2.500s" in line


def leased_mutation(owner):
    sid = scheduler.run_after(0, functions.increment, {"name": "a"})
    ScheduledFunction.objects.filter(pk=sid).update(owner=owner)
    return sid


def crash_count(sid):
    return ScheduledFunction.objects.values_list("state", "crashes", "owner").get(pk=sid)


def test_a_lease_cleared_under_a_running_worker_is_no_longer_its_to_run(clock):
    """Taken for dead, its leases counted and cleared: running one anyway would
    be a death nobody counts, if it is the poison."""
    worker = Worker(heartbeat=False)
    sid = leased_mutation(worker.id)
    assert [c.id for c in worker.executor.lock([sid], clock.now())] == [sid]
    ScheduledFunction.objects.filter(pk=sid).update(owner="")
    assert worker.executor.lock([sid], clock.now()) == []


def test_leases_of_a_worker_without_registration_are_counted_as_a_crash(clock):
    worker = Worker(heartbeat=False)
    sid = leased_mutation("gone-without-registration")
    worker.liveness.recover()
    assert crash_count(sid) == (State.PENDING, 1, "")


def test_a_forced_stop_that_abandons_leases_stays_registered_until_they_are_counted(clock):
    worker = Worker(heartbeat=False)
    worker.liveness.register()
    sid = leased_mutation(worker.id)
    worker.liveness.deregister(forced=True)
    assert SchedulerWorker.objects.filter(pk=worker.id).exists()

    other = Worker(heartbeat=False)
    SchedulerWorker.objects.filter(pk=worker.id).update(pid=dead_pid())
    other.liveness.recover()
    assert crash_count(sid) == (State.PENDING, 1, "")
    assert not SchedulerWorker.objects.filter(pk=worker.id).exists()


def test_a_clean_stop_gives_its_leases_back_and_unregisters(clock):
    worker = Worker(heartbeat=False)
    worker.liveness.register()
    sid = leased_mutation(worker.id)
    worker.liveness.deregister(forced=False)
    assert not SchedulerWorker.objects.filter(pk=worker.id).exists()
    assert crash_count(sid) == (State.PENDING, 0, "")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor == "sqlite", reason="SQLite locks the database, not rows")
def test_a_dead_workers_rows_still_locked_are_counted_on_a_later_pass(clock):
    """The server may not have ended the dead worker's transaction yet: its
    rows are skipped, and its registration must stay until a pass counts them."""
    import threading

    from django.db import connections, transaction

    worker = Worker(heartbeat=False)
    register("dead-local", worker.liveness.hostname, dead_pid())
    sid = leased_mutation("dead-local")
    locked, release = threading.Event(), threading.Event()

    def hold_the_row_lock():
        try:
            with transaction.atomic():
                list(ScheduledFunction.objects.select_for_update().filter(pk=sid))
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_row_lock)
    holder.start()
    try:
        assert locked.wait(30)
        worker.liveness.recover()
        assert crash_count(sid) == (State.PENDING, 0, "dead-local")
        assert SchedulerWorker.objects.filter(pk="dead-local").exists()
    finally:
        release.set()
        holder.join()
    worker.liveness.recover()
    assert crash_count(sid) == (State.PENDING, 1, "")
    assert not SchedulerWorker.objects.filter(pk="dead-local").exists()
