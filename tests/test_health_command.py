"""``manage.py schedulerhealth``: exit status and the one line saying why (issue 15)."""

import io
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from convex_scheduler import scheduler
from convex_scheduler.management.commands.schedulerhealth import Command
from convex_scheduler.models import SchedulerWorker

from . import functions

ROOT = Path(__file__).resolve().parent.parent


def health(*args):
    """Run the command in-process; return (exit status, the stdout line, the stderr line)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("schedulerhealth", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    return code, out.getvalue().strip(), err.getvalue().strip()


def worker(pk, seconds_ago):
    now = timezone.now()
    return SchedulerWorker.objects.create(
        id=pk,
        hostname="host",
        pid=1,
        started_time=now - timedelta(hours=1),
        last_heartbeat=now - timedelta(seconds=seconds_ago),
    )


def due(seconds_ago):
    return scheduler.run_at(
        timezone.now() - timedelta(seconds=seconds_ago), functions.increment, {"name": "h"}
    )


@pytest.mark.django_db
def test_healthy_with_nothing_due_and_no_worker_required():
    assert health() == (0, "OK: lag 0.0s, 0 live worker(s) (min 0)", "")


@pytest.mark.django_db
def test_live_workers_are_those_with_a_recent_heartbeat():
    worker("fresh", 1)
    worker("stale", 600)
    assert health("--min-workers", "1") == (0, "OK: lag 0.0s, 1 live worker(s) (min 1)", "")
    code, out, err = health("--min-workers", "2")
    assert (code, out) == (1, "")
    assert err == "UNHEALTHY: 1 live worker(s) (min 2)"
    with override_settings(CONVEX_SCHEDULER={"WORKER_TIMEOUT": 900}):
        assert health("--min-workers", "2")[0] == 0


@pytest.mark.django_db
def test_lag_is_measured_from_the_oldest_due_row():
    worker("fresh", 0)
    due(5)
    due(120)
    scheduler.run_after(3_600_000, functions.increment, {"name": "later"})  # not due
    code, out, err = health("--max-lag", "60", "--min-workers", "1")
    assert code == 1 and out == ""
    assert err.startswith("UNHEALTHY: the oldest due function has waited 12")
    assert err.endswith("s (max 60s)")
    code, out, _ = health("--max-lag", "600", "--min-workers", "1")
    assert code == 0
    assert out.startswith("OK: lag 12") and out.endswith("s (max 600s), 1 live worker(s) (min 1)")


@pytest.mark.django_db
def test_both_reasons_on_one_line():
    due(300)
    code, _, err = health("--max-lag", "10", "--min-workers", "3")
    assert code == 1
    assert err.count("\n") == 0
    assert "waited 3" in err and "; 0 live worker(s) (min 3)" in err


@pytest.mark.django_db
def test_finished_and_canceled_rows_do_not_count_as_lag():
    pk = due(300)
    scheduler.cancel(pk)
    assert health("--max-lag", "1")[0] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-lag", "soon"], "not a number of seconds"),
        (["--max-lag", "-1"], "0 or more"),
        (["--max-lag", "nan"], "finite"),
        (["--min-workers", "1.5"], "not a whole number"),
        (["--min-workers", "-1"], "0 or more"),
    ],
)
def test_usage_errors_are_command_errors(args, message):
    with pytest.raises(CommandError, match=message):
        call_command("schedulerhealth", *args)


def test_usage_errors_exit_2_from_the_command_line(capsys):
    with pytest.raises(SystemExit) as info:
        Command().run_from_argv(["manage.py", "schedulerhealth", "--max-lag", "soon"])
    assert info.value.code == 2
    assert "not a number of seconds" in capsys.readouterr().err


def test_an_unknown_database_is_a_command_error():
    with pytest.raises(CommandError, match="'nope' is not in DATABASES") as info:
        call_command("schedulerhealth", "--database", "nope")
    assert info.value.returncode == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.subprocess
def test_exit_status_of_the_real_command():
    env = {
        **os.environ,
        "CONVEX_TEST_DB_NAME": connection.settings_dict["NAME"],
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "django", "schedulerhealth", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    worker("fresh", 0)
    ok = run("--min-workers", "1")
    assert (ok.returncode, ok.stdout, ok.stderr) == (
        0,
        "OK: lag 0.0s, 1 live worker(s) (min 1)\n",
        "",
    )
    sick = run("--min-workers", "2")
    assert (sick.returncode, sick.stdout, sick.stderr) == (
        1,
        "",
        "UNHEALTHY: 1 live worker(s) (min 2)\n",
    )
    usage = run("--min-workers", "many")
    assert usage.returncode == 2 and "not a whole number" in usage.stderr


@pytest.mark.subprocess
def test_an_unreachable_database_is_unhealthy_in_one_line():
    env = {
        **os.environ,
        "DATABASE_URL": "postgres://postgres@127.0.0.1:9/unreachable",
        "CONVEX_TEST_DB_NAME": "",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    result = subprocess.run(
        [sys.executable, "-m", "django", "schedulerhealth"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith("UNHEALTHY: database 'default' unavailable: ")
    assert result.stderr.count("\n") == 1
