"""The fault campaign's short version, on the database this suite runs on.

``python -m tests.campaign --quick`` schedules a few hundred functions, among
them a poison mix (functions that raise what cannot be stored, raise
``SystemExit``/``KeyboardInterrupt``, kill their process, sleep, or are
``async``), SIGKILLs worker processes while they run them (and, on PostgreSQL,
restarts the server of a throwaway cluster of its own), then checks that no
mutation applied twice, no action started twice, nothing was lost and every
poison row ended with its exact error. It makes its own
database, so this test needs none: it only reads which vendor to use.
Set ``CONVEX_FAULTS_SEED`` to replay another seed.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

pytestmark = pytest.mark.subprocess

ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("CONVEX_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _mysql_server_url() -> str:
    settings = connection.settings_dict
    auth = settings.get("USER") or "root"
    if settings.get("PASSWORD"):
        auth += f":{settings['PASSWORD']}"
    return f"mysql://{auth}@{settings.get('HOST') or '127.0.0.1'}:{settings.get('PORT') or 3306}"


def test_quick_fault_campaign_has_no_duplicates_and_no_losses(tmp_path):
    vendor = connection.vendor
    if vendor not in ("sqlite", "postgresql", "mysql"):
        pytest.skip(f"no fault campaign for {vendor}")
    if vendor == "postgresql" and not (PG_BIN / "initdb").exists():
        pytest.skip(f"the campaign's own cluster needs initdb in {PG_BIN}")
    summary_file = tmp_path / "summary.json"
    seed = os.environ.get("CONVEX_FAULTS_SEED", "20261126")
    command = [
        sys.executable,
        "-m",
        "tests.campaign",
        "--database",
        vendor,
        "--quick",
        "--seed",
        seed,
        "--json",
        str(summary_file),
    ]
    if vendor == "mysql":
        command += ["--mysql-server", _mysql_server_url()]

    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=170, stdin=subprocess.DEVNULL
    )

    report = f"{result.stdout}\n{result.stderr[-6000:]}"
    assert result.returncode == 0, report
    summary = json.loads(summary_file.read_text())
    assert summary["passed"], report
    assert summary["duplicates"] == 0, report
    assert summary["lost"] == 0, report
    assert summary["violations"] == [], report
    assert summary["kills"] > 0, report
    assert summary["rows"] > summary["functions"], report  # children ran
    # Each kind of poison was there, and each ended as it must; the workers
    # that poison:exit_process killed (three deaths each) were replaced.
    poison = summary["poison"]
    assert set(poison) == {
        "poison_async",
        "poison_exit",
        "poison_raise",
        "poison_raise_action",
        "poison_sleep",
    }, report
    assert summary["poison_as_expected"] == sum(poison.values()), report
    # Every process-killing row killed at least one worker and at most
    # MAX_CRASHES (3 in the campaign): no death goes uncounted, even under
    # random SIGKILLs and a database restart.
    assert poison["poison_exit"] <= summary["poison_exits"] <= 3 * poison["poison_exit"], report
    if vendor == "postgresql":
        assert summary["db_restarts"] == 1, report
