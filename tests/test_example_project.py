"""The example project works: its demo reaches every final state, its own tests pass.

Both run the example project's ``manage.py`` in subprocesses, on a temporary
SQLite file (``CONVEX_EXAMPLE_DB``), whatever database the suite itself uses.
"""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.subprocess


@pytest.fixture
def example_env(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CONVEX_TEST_DB_NAME")
    }
    env.update(
        CONVEX_EXAMPLE_DB=str(tmp_path / "example.sqlite3"),
        CHAT_NOTIFY_LATENCY="0.05",
        CHAT_DIGEST_SECONDS="0.1",
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env, *args, timeout=120):
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_demo_batch_reaches_success_failed_and_canceled(example_env):
    manage(example_env, "migrate", "--noinput", "-v", "0")
    manage(example_env, "demo", "--batch")

    out = manage(example_env, "runscheduler", "--burst")

    assert "Burst done" in out
    manage(example_env, "demo", "--verify", "--timeout", "5")
    with sqlite3.connect(example_env["CONVEX_EXAMPLE_DB"]) as db:
        states = dict(
            db.execute(
                "SELECT state, COUNT(*) FROM convex_scheduler_scheduledfunction GROUP BY state"
            )
        )
        errors = [
            row[0]
            for row in db.execute(
                "SELECT error FROM convex_scheduler_scheduledfunction WHERE state = 'failed'"
            )
        ]
    assert states.get("success", 0) >= 4
    assert states.get("canceled") == 2
    assert states.get("failed") == 2
    assert states.get("inProgress") is None
    assert any("A message cannot be empty" in error for error in errors)
    assert any("no device answers for 'dave'" in error for error in errors)


def test_demo_loop_schedules_and_cancels(example_env):
    manage(example_env, "migrate", "--noinput", "-v", "0")

    out = manage(example_env, "demo", "--ticks", "6", "--interval", "0.01")

    assert out.count("scheduled #") >= 8
    assert "canceled #" in out


def test_example_project_tests_pass(example_env):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--ds=example_project.settings",
            "-p",
            "no:cacheprovider",
            "-q",
            "example_project/chat/tests.py",
        ],
        cwd=ROOT,
        env=example_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
