"""Crons across real processes: exactly one run per tick and no overlap, whatever the workers."""

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

import convex_scheduler.worker
from convex_scheduler import crons
from convex_scheduler.models import CronJob, ScheduledFunction, State

from . import functions
from .harness import ROOT, finish, start_worker, wait_for
from .models import ActionRun, Counter

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.subprocess]

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

# Each process polls the same fake ticks (one a minute) as fast as it can,
# and finishes the runs it finds pending, as a worker would run them.
POLLER = """
import sys, time
from datetime import datetime, timedelta
from pathlib import Path
import django
django.setup()
from convex_scheduler.crons import start_due_runs
from convex_scheduler.models import ScheduledFunction, State
start, ticks, gate = datetime.fromisoformat(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
while not gate.exists():
    time.sleep(0.005)
total = 0
for index in range(ticks):
    now = start + timedelta(minutes=index)
    total += start_due_runs(using="default", now=now)
    ScheduledFunction.objects.filter(cron__startswith="proc ").pending().succeed(
        now, from_state=State.PENDING
    )
print(total)
"""


def _worker_sources():
    package = Path(convex_scheduler.worker.__file__).parent
    return "".join(path.read_text() for path in package.glob("*.py"))


WORKER_STARTS_CRONS = "start_due_runs(" in _worker_sources()
needs_worker_hook = pytest.mark.skipif(
    not WORKER_STARTS_CRONS,
    reason="the worker does not call convex_scheduler.crons.start_due_runs yet",
)


def start_poller(ticks, gate):
    env = dict(os.environ)
    env["CONVEX_TEST_DB_NAME"] = connection.settings_dict["NAME"]
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", POLLER, START.isoformat(), str(ticks), str(gate)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_processes_polling_at_once_settle_each_tick_exactly_once(tmp_path):
    """Every tick of every cron ends as exactly one run, or one counted skip."""
    ticks, cron_count = 8, 10
    for index in range(cron_count):
        crons.register(
            f"proc {index}", functions.increment, {"name": "proc"}, interval=timedelta(minutes=1)
        )
    CronJob.objects.update(next_tick=START)
    gate = tmp_path / "go"
    pollers = [start_poller(ticks, gate) for _ in range(3)]
    gate.touch()
    totals = []
    for poller in pollers:
        code, output = finish(poller, timeout=120)
        assert code == 0, output
        totals.append(int(output.strip().splitlines()[-1]))
    rows = list(
        ScheduledFunction.objects.filter(cron__startswith="proc ").values_list(
            "cron", "scheduled_time"
        )
    )
    assert len(rows) == len(set(rows)) == sum(totals)
    for job in CronJob.objects.all():
        assert ScheduledFunction.objects.filter(cron=job.name).count() == job.run_count
        assert job.run_count + job.missed_count + job.overlap_count == ticks, job.name
        assert job.next_tick == START + timedelta(minutes=ticks)


@needs_worker_hook
def test_runscheduler_workers_start_exactly_one_run_per_tick():
    crons.register(
        "each second", functions.cron_tick, {"name": "tick"}, interval=timedelta(seconds=1)
    )
    workers = [start_worker() for _ in range(3)]
    try:
        wait_for(lambda: CronJob.objects.get(name="each second").run_count >= 5, "five runs", 60)
    finally:
        for worker in workers:
            worker.terminate()
        outputs = [finish(worker) for worker in workers]
    assert all(code == 0 for code, _ in outputs), outputs
    rows = ScheduledFunction.objects.filter(cron="each second")
    ticks = list(rows.values_list("scheduled_time", flat=True))
    assert len(ticks) == len(set(ticks)) == CronJob.objects.get(name="each second").run_count
    succeeded = rows.filter(state=State.SUCCESS)
    assert Counter.objects.get(name="tick").value == succeeded.count()
    runs = list(
        ActionRun.objects.filter(label="tick").values_list("scheduled_function_id", flat=True)
    )
    assert len(runs) == len(set(runs)) == succeeded.count()


@needs_worker_hook
def test_runscheduler_never_runs_two_runs_of_one_cron_at_once(tmp_path):
    gate, entered, log = tmp_path / "gate", tmp_path / "entered", tmp_path / "log"
    gate.touch()
    crons.register(
        "gated",
        functions.blocking_record,
        {"label": "gated", "gate": str(gate), "entered": str(entered), "log": str(log)},
        interval=timedelta(seconds=1),
    )
    workers = [start_worker("--concurrency", "2") for _ in range(3)]
    try:
        wait_for(entered.exists, "the first run to start", 60)
        wait_for(
            lambda: CronJob.objects.get(name="gated").overlap_count >= 2,
            "ticks to come while the first run is running",
            60,
        )
        assert ScheduledFunction.objects.filter(cron="gated").count() == 1
        gate.unlink()
        wait_for(lambda: CronJob.objects.get(name="gated").run_count >= 3, "more runs", 60)
    finally:
        for worker in workers:
            worker.terminate()
        outputs = [finish(worker) for worker in workers]
    assert all(code == 0 for code, _ in outputs), outputs
    rows = list(
        ScheduledFunction.objects.filter(cron="gated", state=State.SUCCESS).order_by(
            "scheduled_time"
        )
    )
    assert len(rows) >= 2
    for before, after in itertools.pairwise(rows):
        assert after.started_time >= before.completed_time
