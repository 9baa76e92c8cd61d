"""The fault campaign: thousands of functions, a poison mix, several workers, repeated SIGKILLs.

It proves the worker's promises under faults, on a real database of its own:
a mutation's effect is applied exactly once however often its worker dies; an
action starts at most once (one whose worker died ends ``failed`` with exactly
``Transient error while executing action``); a function that raises anything,
kills its process, sleeps or is ``async`` ends in its own terminal state and
stops nothing else. docs/faults.rst describes the workload, the faults and the
checks; the summary is printed, and the exit status is 0 when every check
passed, 1 on a violation, 2 when the campaign itself could not run::

    python -m tests.campaign --database sqlite
    python -m tests.campaign --database postgresql --seed 7 --json out.json
    python -m tests.campaign --database mysql --quick

The same seed gives the same workload and the same kill schedule; the
interleavings themselves are up to the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests import harness

ROOT = harness.ROOT
PG_BIN = Path(os.environ.get("CONVEX_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEFAULT_MYSQL_SERVER = "mysql://root@127.0.0.1:3306"
DEFAULT_DB_NAME = "convex_faults"
DEFAULT_PG_PORT = 55432

# How the workload is mixed (shares of --functions; plain mutations take the
# rest), and the least of each plan however few functions there are.
MIX = {
    "mutation_fail": 0.08,
    "action": 0.20,
    "action_work": 0.14,
    "action_fail": 0.08,
    "cancel_pending": 0.06,
    "cancel_running": 0.015,
    # The poison mix (tests/poison.py): none may stop the queue.
    "poison_raise": 0.02,
    "poison_raise_action": 0.02,
    "poison_exit": 0.0015,
    "poison_sleep": 0.01,
    "poison_async": 0.03,
}
AT_LEAST = {"poison_raise": 5, "poison_raise_action": 5}
# What poison:raise and poison:raise_action raise, and the first line of the
# error each must end with (NUL and the surrogate escaped, never dropped).
POISON_ERRORS = {
    "nul": "ValueError: before\\x00after",
    "surrogate": "ValueError: lone \\ud800 surrogate",
    "unprintable": "UnprintableError: <UnprintableError whose message could not be read>",
    "system_exit": "SystemExit: 2",
    "keyboard_interrupt": "KeyboardInterrupt",
}
# The exit status of a worker that ran poison:exit_process (os._exit(13)).
POISON_EXIT_CODE = 13
# A canceled-while-pending function is canceled at least this long before it
# is due; a cancel that comes later than that (the campaign was busy) is
# skipped and the function is checked like any other.
CANCEL_MARGIN = 0.5


class CampaignError(Exception):
    """The campaign could not run (not a finding about the worker)."""


def log(message: str) -> None:
    print(f"[campaign {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Databases -----------------------------------------------------------------


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _free_port(preferred: int) -> int:
    for port in range(preferred, preferred + 200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CampaignError(f"no free TCP port in {preferred}-{preferred + 199}")


class SqliteDatabase:
    vendor = "sqlite"
    restartable = False

    def __init__(self, workdir: Path, name: str) -> None:
        self.path = workdir / f"{name}.sqlite3"

    def start(self) -> str:
        return f"sqlite:///{self.path}"

    def describe(self) -> str:
        return f"sqlite (file {self.path})"

    def close(self, success: bool) -> None:
        pass  # the file goes with the work folder


class MysqlDatabase:
    vendor = "mysql"
    restartable = False

    def __init__(self, server_url: str, name: str) -> None:
        parts = urlsplit(server_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 3306
        self.user = parts.username or "root"
        self.password = parts.password or ""
        self.name = name
        self.lock_name = f"convex_scheduler_fault_campaign:{name}"
        self._conn = None

    def start(self) -> str:
        import MySQLdb

        try:
            self._conn = MySQLdb.connect(
                host=self.host, port=self.port, user=self.user, password=self.password
            )
        except MySQLdb.Error as exc:
            raise CampaignError(
                f"cannot reach MySQL/MariaDB at {self.host}:{self.port}: {exc}"
            ) from exc
        cursor = self._conn.cursor()
        # Two campaigns on one server would drop each other's database.
        cursor.execute("SELECT GET_LOCK(%s, 900)", [self.lock_name])
        if cursor.fetchone()[0] != 1:
            raise CampaignError(f"another campaign holds the lock {self.lock_name!r}")
        cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
        cursor.execute(
            f"CREATE DATABASE `{self.name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        )
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"mysql://{auth}@{self.host}:{self.port}/{self.name}"

    def describe(self) -> str:
        return f"mysql (database {self.name} at {self.host}:{self.port})"

    def close(self, success: bool) -> None:
        if self._conn is None:
            return
        with contextlib.suppress(Exception):
            cursor = self._conn.cursor()
            if success:
                cursor.execute(f"DROP DATABASE IF EXISTS `{self.name}`")
            cursor.execute("SELECT RELEASE_LOCK(%s)", [self.lock_name])
        with contextlib.suppress(Exception):
            self._conn.close()
        self._conn = None


class PostgresCluster:
    """A PostgreSQL cluster of the campaign's own, in a temporary folder."""

    vendor = "postgresql"
    restartable = True

    def __init__(self, name: str, port: int | None) -> None:
        self.name = name
        self.requested_port = port
        self.port: int | None = None
        self.dir: Path | None = None
        self.running = False

    @property
    def data(self) -> Path:
        return self.dir / "data"

    def _run(self, *command: str, timeout: float = 120) -> None:
        # Output goes to a file, not a pipe: a server started by pg_ctl keeps
        # the descriptors it inherited, and reading a pipe would never end.
        output = self.dir / "commands.log"
        with open(output, "ab") as out:
            start = out.tell()
            try:
                result = subprocess.run(
                    [*_as_postgres_user(), *command],
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                raise CampaignError(f"{' '.join(command)} took more than {timeout}s") from None
        if result.returncode:
            with open(output, "rb") as out:
                out.seek(start)
                text = out.read().decode(errors="replace")
            raise CampaignError(
                f"{' '.join(command)} failed ({result.returncode}):\n{text}"
                + self.server_log_tail()
            )

    def pg_ctl(self, *command: str) -> None:
        log_file = str(self.dir / "server.log")
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", log_file, "-w", "-t", "60", *command
        )

    def server_log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.dir / "server.log").read_text(errors="replace")
        except (OSError, TypeError):
            return ""
        return "\nserver log:\n" + "\n".join(text.splitlines()[-lines:])

    def start(self) -> str:
        if not (PG_BIN / "initdb").exists():
            raise CampaignError(f"no PostgreSQL binaries in {PG_BIN} (set CONVEX_PG_BIN)")
        self.dir = Path(tempfile.mkdtemp(prefix="convex-faults-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"),
            *f"-D {self.data} -U postgres -A trust -E UTF8".split(),
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        )
        candidate = self.requested_port or DEFAULT_PG_PORT
        for attempt in range(5):
            # Another campaign may take the port between our probe and our start.
            self.port = self.requested_port or _free_port(candidate)
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
            )
            try:
                self.pg_ctl("-o", options, "start")
            except CampaignError:
                if self.requested_port or attempt == 4:
                    raise
                candidate = self.port + 1
                continue
            break
        self.running = True
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def restart(self) -> float:
        """Crash-restart the server (``-m immediate``); return the seconds it took."""
        started = time.monotonic()
        self.pg_ctl("-m", "immediate", "restart")
        return time.monotonic() - started

    def describe(self) -> str:
        return f"postgresql (own cluster in {self.dir}, port {self.port})"

    def close(self, success: bool) -> None:
        if self.dir is None:
            return
        if self.running:
            with contextlib.suppress(Exception):
                self.pg_ctl("-m", "immediate", "stop")
            self.running = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


# The workload ----------------------------------------------------------------


@dataclass
class Spec:
    """One function the campaign schedules, and what it expects of it."""

    index: int
    plan: str
    name: str  # the registered function
    key: str
    args: dict
    offset: float  # seconds after the campaign's time zero when it is due
    cancel_at: float | None = None  # cancel-while-pending: when to cancel
    id: int | None = None
    due_time: Any = None  # datetimes, set when scheduled
    cancel_time: Any = None
    # What happened to it during the run.
    canceled_pending: bool = False
    cancel_late: bool = False
    canceled_running: bool = False
    cancel_missed: bool = False

    @property
    def kind(self) -> str:
        mutations = ("campaign:mutation", "poison:raise", "poison:exit_process")
        return "mutation" if self.name in mutations else "action"

    @property
    def fails(self) -> bool:
        return bool(self.args.get("fail"))


def plan_workload(count: int, spread: float, rng: random.Random, trace: Path) -> list[Spec]:
    plans: list[str] = []
    for plan, share in MIX.items():
        plans += [plan] * max(AT_LEAST.get(plan, 2), round(count * share))
    plans += ["mutation"] * max(0, count - len(plans))
    plans = plans[:count]
    rng.shuffle(plans)
    ways = Counter()

    def due_offset() -> float:
        # A quarter due at once, the rest over the spread.
        return 0.0 if rng.random() < 0.25 else rng.uniform(0, spread)

    def how(plan: str) -> dict:
        ways[plan] += 1
        return {"how": list(POISON_ERRORS)[ways[plan] % len(POISON_ERRORS)]}

    specs = []
    for index, plan in enumerate(plans):
        cancel_at = None
        offset = due_offset()
        if plan == "mutation":
            name, args = "campaign:mutation", {"child": rng.random() < 0.8}
        elif plan == "mutation_fail":
            name, args = "campaign:mutation", {"child": True, "fail": True}
        elif plan == "action":
            name, args = "campaign:action", {}
        elif plan == "action_work":
            name, args = "campaign:action", {"work_ms": rng.randint(10, 80)}
        elif plan == "action_fail":
            name, args = "campaign:action", {"fail": True}
            if rng.random() < 0.5:
                args["work_ms"] = rng.randint(5, 40)
        elif plan == "cancel_pending":
            if rng.random() < 0.5:
                name, args = "campaign:mutation", {"child": True}
            else:
                name, args = "campaign:action", {"work_ms": rng.randint(0, 30)}
            cancel_at = rng.uniform(0, spread * 0.8)
            offset = cancel_at + rng.uniform(2.0, 4.0)
        elif plan == "cancel_running":
            name, args = "campaign:action", {"work_ms": rng.randint(600, 1200)}
            offset = rng.uniform(0, spread * 0.8)
        elif plan == "poison_raise":
            name, args = "poison:raise", how(plan)
        elif plan == "poison_raise_action":
            name, args = "poison:raise_action", how(plan)
        elif plan == "poison_exit":
            name, args = "poison:exit_process", {}
        elif plan == "poison_sleep":
            name, args = "poison:sleep", {"ms": rng.randint(200, 1500), "trace": str(trace)}
        elif plan == "poison_async":
            name, args = "poison:async_trace", {"ms": rng.randint(0, 50), "trace": str(trace)}
        else:  # pragma: no cover
            raise AssertionError(plan)
        key = f"{name.split(':')[0][0]}{index}"
        if name.startswith("campaign:"):
            args = {"key": key, **args}
        specs.append(Spec(index, plan, name, key, args, round(offset, 3), cancel_at))
    return specs


# Workers ---------------------------------------------------------------------


class Fleet:
    """The worker processes (tests/harness.py), and the faults inflicted on them."""

    def __init__(self, settings: str, pythonpath: list, logdir: Path, rng, flags) -> None:
        self.settings, self.pythonpath, self.logdir = settings, pythonpath, logdir
        self.rng = rng
        self.flags = flags
        self.procs: list[harness.Worker] = []
        self.started: list[harness.Worker] = []
        self.kills = 0
        self.poison_exits = 0
        self.unexpected_exits: list[str] = []

    def start(self) -> harness.Worker:
        log_file = self.logdir / f"worker-{len(self.started):03d}.log"
        worker = harness.start(
            "runscheduler",
            *self.flags,
            settings=self.settings,
            pythonpath=self.pythonpath,
            log=log_file,
        )
        self.procs.append(worker)
        self.started.append(worker)
        return worker

    def kill_random(self, eligible: set[int]) -> bool:
        """SIGKILL a random worker among ``eligible`` pids and start a replacement."""
        candidates = [proc for proc in self.procs if proc.pid in eligible]
        if not candidates:
            return False
        victim = self.rng.choice(candidates)
        self.procs.remove(victim)
        victim.kill_now()
        self.kills += 1
        self.start()
        return True

    def check(self) -> None:
        """Replace workers that exited by themselves: poison:exit_process kills its
        worker (counted); any other exit is a finding."""
        for proc in list(self.procs):
            code = proc.poll()
            if code is None:
                continue
            self.procs.remove(proc)
            if code == POISON_EXIT_CODE:
                self.poison_exits += 1
            else:
                self.unexpected_exits.append(
                    f"{proc.log.name} (pid {proc.pid}) exited by itself with code {code}:\n"
                    + proc.tail()
                )
            self.start()

    def pids(self) -> set[int]:
        return {proc.pid for proc in self.procs}

    def terminate(self, timeout: float) -> list[str]:
        """SIGTERM every worker and wait; return what went wrong."""
        problems = []
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                code = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                problems.append(f"{proc.log.name} did not exit within {timeout}s of SIGTERM")
                continue
            if code != 0:
                problems.append(f"{proc.log.name} exited with {code} after SIGTERM:\n{proc.tail()}")
        self.kill_all()
        return problems

    def kill_all(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill_now()
        self.procs = []


# The campaign ----------------------------------------------------------------


@dataclass
class Result:
    database: str
    seed: int
    functions: int
    workers: int
    concurrency: int
    spread: float
    settings_overrides: dict = field(default_factory=dict)
    children: int = 0
    rows: int = 0
    kills: int = 0
    poison_exits: int = 0
    worker_starts: int = 0
    db_restarts: int = 0
    db_outage_seconds: float = 0.0
    reconnect_seconds: float | None = None
    states: dict = field(default_factory=dict)
    states_by_kind: dict = field(default_factory=dict)
    poison: dict = field(default_factory=dict)
    poison_as_expected: int = 0
    duplicates: int = 0
    lost: int = 0
    orphaned_actions: int = 0
    actions_failed_by_outage: int = 0
    failed_on_purpose: int = 0
    canceled_pending: int = 0
    canceled_running: int = 0
    cancels_late: int = 0
    cancels_missed: int = 0
    mutation_retries: int = 0
    violations: list = field(default_factory=list)
    wall_seconds: float = 0.0
    fault_seconds: float = 0.0
    drain_seconds: float = 0.0
    passed: bool = False


class Campaign:
    def __init__(self, options: argparse.Namespace, db, workdir: Path) -> None:
        self.options = options
        self.db = db
        self.workdir = workdir
        self.trace = workdir / "trace"
        self.result = Result(
            database=db.vendor,
            seed=options.seed,
            functions=options.functions,
            workers=options.workers,
            concurrency=options.concurrency,
            spread=options.spread,
        )
        self.fleet: Fleet | None = None
        self.specs: list[Spec] = []
        #: Registration id -> pid of every worker seen registered.
        self.worker_pids: dict[str, int] = {}

    # Database access from the campaign itself, through the restarts.

    def _retry(self, function, what: str, attempts: int = 120):
        from django.db import DatabaseError, connection

        for attempt in range(attempts):
            try:
                return function()
            except DatabaseError as exc:
                if attempt == attempts - 1:
                    raise CampaignError(f"{what}: {exc}") from exc
                with contextlib.suppress(Exception):
                    connection.close()
                time.sleep(0.25)

    def run(self) -> Result:
        started = time.monotonic()
        options = self.options
        url = self.db.start()
        log(f"database: {self.db.describe()}")
        os.environ["DATABASE_URL"] = url
        os.environ["DJANGO_SETTINGS_MODULE"] = settings = "tests.settings"
        os.environ["CONVEX_TEST_VAR"] = str(self.workdir / "var")
        os.environ.pop("CONVEX_TEST_DB_NAME", None)
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        pythonpath = [ROOT]
        overrides = {
            name: value
            for name, value in (
                ("HEARTBEAT_INTERVAL", options.heartbeat_interval),
                ("WORKER_TIMEOUT", options.worker_timeout),
            )
            if value is not None
        }
        if overrides:
            # tests/settings.py with liveness settings of the campaign's own.
            (self.workdir / "campaign_settings.py").write_text(
                "from tests.settings import *  # noqa: F403\n\n"
                f"CONVEX_SCHEDULER = {{**CONVEX_SCHEDULER, **{overrides!r}}}  # noqa: F405\n"
            )
            os.environ["DJANGO_SETTINGS_MODULE"] = settings = "campaign_settings"
            sys.path.insert(0, str(self.workdir))
            pythonpath.insert(0, self.workdir)
        self.result.settings_overrides = overrides

        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        log("migrated")

        rng = random.Random(options.seed)
        self.specs = plan_workload(options.functions, options.spread, rng, self.trace)
        self.result.poison = dict(
            sorted(Counter(s.plan for s in self.specs if s.plan.startswith("poison")).items())
        )
        t0 = self._schedule()
        log(f"scheduled {len(self.specs)} functions over {options.spread}s")

        logdir = self.workdir / "workers"
        logdir.mkdir()
        flags = ("--concurrency", str(options.concurrency), "--interval", str(options.interval))
        self.fleet = Fleet(settings, pythonpath, logdir, random.Random(options.seed + 1), flags)
        for _ in range(options.workers):
            self.fleet.start()

        self._faults(t0, started)
        fault_end = time.monotonic()
        self._drain(started)
        drain_end = time.monotonic()
        self.result.fault_seconds = round(fault_end - started, 1)
        self.result.drain_seconds = round(drain_end - fault_end, 1)
        log("drained; stopping the workers with SIGTERM")
        # A worker still starting up has no SIGTERM handler yet.
        self._wait_registered()
        survivors = {pk for pk, pid in self.worker_pids.items() if pid in self.fleet.pids()}
        for problem in self.fleet.terminate(timeout=60):
            self.result.violations.append(f"shutdown: {problem}")
        for exit_text in self.fleet.unexpected_exits:
            self.result.violations.append(f"worker exit: {exit_text}")
        self.result.kills = self.fleet.kills
        self.result.poison_exits = self.fleet.poison_exits
        self.result.worker_starts = len(self.fleet.started)
        self._check(survivors)
        self.result.wall_seconds = round(time.monotonic() - started, 1)
        self.result.passed = not self.result.violations
        return self.result

    def _schedule(self):
        from django.db import transaction

        from convex_scheduler import clock, scheduler

        t0 = clock.now() + timedelta(seconds=0.5)
        # Those to cancel while pending go last, timed from their own
        # scheduling, so a slow start cannot make their cancel late.
        ordered = sorted(self.specs, key=lambda spec: spec.cancel_at is not None)
        batch = 250
        for start in range(0, len(ordered), batch):
            with transaction.atomic():
                for spec in ordered[start : start + batch]:
                    base = t0 if spec.cancel_at is None else clock.now()
                    spec.due_time = base + timedelta(seconds=spec.offset)
                    if spec.cancel_at is not None:
                        spec.cancel_time = base + timedelta(seconds=spec.cancel_at)
                    spec.id = scheduler.run_at(spec.due_time, spec.name, spec.args)
        return t0

    def _unfinished(self) -> tuple[int, int]:
        """(unfinished, succeeded) rows; only workers make rows succeed."""
        from convex_scheduler.models import ScheduledFunction, State

        def count():
            open_ = ScheduledFunction.objects.filter(
                state__in=(State.PENDING, State.IN_PROGRESS)
            ).count()
            return open_, ScheduledFunction.objects.filter(state=State.SUCCESS).count()

        return self._retry(count, "counting unfinished functions")

    def _cancels(self) -> None:
        """Cancel what is due to be canceled: pending ones by time, running ones when seen."""
        from convex_scheduler import clock, scheduler
        from convex_scheduler.models import ScheduledFunction, State

        def state_of(pk):
            return self._retry(lambda: ScheduledFunction.objects.get(pk=pk).state, "reading")

        now = clock.now()
        for spec in self._cancel_pending:
            if now < spec.cancel_time:
                continue
            due = spec.due_time
            if now > due - timedelta(seconds=CANCEL_MARGIN):
                spec.cancel_late = True  # checked like an ordinary function
                continue
            self._retry(lambda spec=spec: scheduler.cancel(spec.id), "canceling")
            state = state_of(spec.id)
            if state != State.CANCELED:
                self.result.violations.append(
                    f"cancel of pending #{spec.id} ({spec.plan}, due in "
                    f"{(due - now).total_seconds():.2f}s) left it {state}"
                )
            spec.canceled_pending = True
        self._cancel_pending = [
            s for s in self._cancel_pending if not (s.canceled_pending or s.cancel_late)
        ]

        waiting = {spec.id: spec for spec in self._cancel_running}
        if not waiting:
            return
        rows = self._retry(
            lambda: list(
                ScheduledFunction.objects.filter(pk__in=list(waiting)).values_list("pk", "state")
            ),
            "reading",
        )
        for pk, state in rows:
            spec = waiting[pk]
            if state == State.PENDING:
                continue
            if state == State.IN_PROGRESS:
                self._retry(lambda pk=pk: scheduler.cancel(pk), "canceling")
                # Canceled: the cancel won. Failed: its worker was killed and
                # the orphan sweep got there first; checked as an orphan.
                spec.canceled_running = state_of(pk) == State.CANCELED
                spec.cancel_missed = not spec.canceled_running
            else:
                spec.cancel_missed = True  # finished before we saw it running
            self._cancel_running.remove(spec)

    def _tick(self) -> None:
        self.fleet.check()
        self._registered_pids()
        self._cancels()

    def _faults(self, t0, started: float) -> None:
        from convex_scheduler import clock

        options = self.options
        rng = self.fleet.rng
        self._cancel_pending = sorted(
            (s for s in self.specs if s.plan == "cancel_pending"), key=lambda s: s.cancel_at
        )
        self._cancel_running = [s for s in self.specs if s.plan == "cancel_running"]
        last_due = max(spec.due_time for spec in self.specs)
        threshold = max(3, options.functions // 100)
        restart_at = None
        if self.db.restartable and not options.no_db_restart:
            restart_at = t0 + timedelta(seconds=options.spread * rng.uniform(0.3, 0.6))
        next_kill = time.monotonic() + rng.uniform(options.kill_min, options.kill_max)
        next_report = time.monotonic() + 2
        hold_kills_until_progress = None  # (finished count at restart, deadline)
        while True:
            now_mono = time.monotonic()
            self._tick()
            open_, done = self._unfinished()
            if now_mono - started > options.duration_limit:
                raise CampaignError(
                    f"gave up after --duration-limit {options.duration_limit}s with {open_} "
                    "functions unfinished"
                )
            if hold_kills_until_progress is not None:
                before, deadline = hold_kills_until_progress
                if done > before:
                    self.result.reconnect_seconds = round(now_mono - self._restarted_at, 2)
                    log(f"workers made progress {self.result.reconnect_seconds}s after the restart")
                    hold_kills_until_progress = None
                elif open_ == 0 or now_mono > deadline:
                    if open_:
                        self.result.violations.append(
                            "no worker ran anything successfully within 30s of the database "
                            f"restart ({open_} functions unfinished)"
                        )
                    hold_kills_until_progress = None
            elif now_mono >= next_kill:
                # Kill only workers that are up (registered): killing one that
                # is still importing Django proves nothing.
                registered = self._registered_pids()
                starting = len(self.fleet.procs) - len(registered)
                if starting < options.max_starting and self.fleet.kill_random(registered):
                    next_kill = now_mono + rng.uniform(options.kill_min, options.kill_max)
                else:
                    next_kill = now_mono + 0.05
            if restart_at is not None and clock.now() >= restart_at:
                restart_at = None
                self._restart_database()
                _, done_then = self._unfinished()
                self._restarted_at = time.monotonic()
                hold_kills_until_progress = (done_then, self._restarted_at + 30)
            if now_mono >= next_report:
                next_report = now_mono + 2
                log(
                    f"{done} succeeded, {open_} unfinished, {self.fleet.kills} kills, "
                    f"{self.fleet.poison_exits} poison exits"
                )
            if (
                clock.now() > last_due
                and open_ <= threshold
                and restart_at is None
                and hold_kills_until_progress is None
            ):
                log(f"stopping the faults: {open_} open, {self.fleet.kills} kills")
                return
            time.sleep(0.05)

    def _registered_pids(self) -> set[int]:
        """Pids of the live workers that registered; remembers every registration seen."""
        from convex_scheduler.models import SchedulerWorker

        rows = self._retry(
            lambda: list(SchedulerWorker.objects.values_list("pk", "pid")), "reading"
        )
        live = self.fleet.pids()
        for pk, pid in rows:
            if pid in live:
                self.worker_pids.setdefault(pk, pid)
        return live & {pid for _, pid in rows}

    def _wait_registered(self, timeout: float = 30) -> None:
        """Wait until every live worker has registered (is past its start-up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.fleet.check()
            if self._registered_pids() == self.fleet.pids():
                return
            time.sleep(0.05)

    def _restart_database(self) -> None:
        # Workers still importing Django would meet a dead server at their
        # first query and exit; wait until every live one has registered.
        self._wait_registered()
        from django.db import connection

        connection.close()
        log("restarting the database server (pg_ctl restart -m immediate)")
        took = self.db.restart()
        self.result.db_restarts += 1
        self.result.db_outage_seconds = round(took, 2)
        log(f"database back after {took:.2f}s")

    def _drain(self, started: float) -> None:
        while True:
            self._tick()
            open_, _ = self._unfinished()
            if open_ == 0:
                for spec in self._cancel_running:
                    spec.cancel_missed = True
                return
            if time.monotonic() - started > self.options.duration_limit:
                raise CampaignError(
                    f"gave up after --duration-limit {self.options.duration_limit}s with "
                    f"{open_} functions unfinished"
                )
            time.sleep(0.05)

    # Checking ------------------------------------------------------------

    def _check(self, survivors: set[str]) -> None:
        from convex_scheduler.conf import scheduler_settings
        from convex_scheduler.models import (
            CRASHED_ERROR,
            ORPHANED_ACTION_ERROR,
            ScheduledFunction,
            State,
        )
        from tests.models import ActionRun
        from tests.models import Counter as CounterRow

        result = self.result
        rows = {
            row["id"]: row
            for row in ScheduledFunction.objects.values(
                "id", "name", "kind", "state", "error", "parent_id", "attempts", "crashes", "owner"
            )
        }
        counters = dict(CounterRow.objects.values_list("name", "value"))
        runs = Counter(ActionRun.objects.values_list("scheduled_function_id", flat=True))
        # One line per start of a poison:sleep or poison:async_trace action.
        text = self.trace.read_text() if self.trace.exists() else ""
        traced = Counter(int(line) for line in text.split())
        children = defaultdict(list)
        for row in rows.values():
            if row["name"] == "campaign:child":
                children[row["parent_id"]].append(row)
        by_id = {spec.id: spec for spec in self.specs}
        crashed = CRASHED_ERROR.format(crashes=scheduler_settings.MAX_CRASHES)

        result.rows = len(rows)
        result.children = sum(len(kids) for kids in children.values())
        result.states = dict(sorted(Counter(row["state"] for row in rows.values()).items()))
        result.states_by_kind = {
            kind: dict(
                sorted(Counter(r["state"] for r in rows.values() if r["kind"] == kind).items())
            )
            for kind in ("mutation", "action")
        }
        duplicates = lost = 0

        def bad(kind: str, message: str) -> None:
            nonlocal duplicates, lost
            if kind == "duplicate":
                duplicates += 1
            elif kind == "lost":
                lost += 1
            result.violations.append(f"{kind}: {message}")

        terminal = {State.SUCCESS, State.FAILED, State.CANCELED}
        for pk, row in rows.items():
            if row["state"] not in terminal:
                bad(
                    "lost", f"#{pk} {row['name']} ended {row['state']} (attempts {row['attempts']})"
                )
            if row["kind"] == "mutation" and row["attempts"] > 1:
                result.mutation_retries += 1
            if row["name"] == "campaign:child":
                if row["parent_id"] not in by_id:
                    bad("wrong", f"child #{pk} has an unknown parent #{row['parent_id']}")
                elif row["state"] != State.SUCCESS and row["state"] in terminal:
                    bad("lost", f"child #{pk} ended {row['state']}: {row['error'][:200]}")
            elif pk not in by_id:
                bad("wrong", f"unexpected row #{pk} {row['name']}")
            if (
                row["error"]
                and ORPHANED_ACTION_ERROR in row["error"]
                and (row["error"] != ORPHANED_ACTION_ERROR or row["kind"] != "action")
            ):
                bad("wrong", f"#{pk} {row['kind']} has error {row['error'][:200]!r}")
            if row["error"] == crashed and row["name"] != "poison:exit_process":
                bad("wrong", f"#{pk} {row['name']} failed as a poison: {row['error']!r}")

        for name, value in counters.items():
            if value > 1:
                bad("duplicate", f"counter {name} = {value}")
            elif name.startswith("poison-ran-"):
                bad("wrong", f"counter {name}: a failed mutation's write was kept")

        for pk, count in runs.items():
            spec = by_id.get(pk)
            if spec is None or spec.name != "campaign:action":
                bad("wrong", f"an action run recorded for #{pk}, which is not a campaign action")
            elif count > 1:
                bad("duplicate", f"action #{pk} ({spec.plan}) started {count} times")
        for pk, count in traced.items():
            if count > 1:
                bad("duplicate", f"action #{pk} ({by_id[pk].plan}) started {count} times")

        def orphaned(spec: Spec, row: dict) -> bool:
            """Failed as orphaned: fine once its worker died (never a live one's)."""
            if row["error"] != ORPHANED_ACTION_ERROR:
                return False
            result.orphaned_actions += 1
            if row["owner"] in survivors or not row["owner"]:
                bad(
                    "wrong",
                    f"#{spec.id} ({spec.plan}) was failed as orphaned, but its worker "
                    f"{row['owner'] or '(none)'} was alive",
                )
            return True

        for spec in self.specs:
            row = rows.get(spec.id)
            if row is None:
                bad("lost", f"#{spec.id} ({spec.plan}) vanished from the table")
                continue
            state, error = row["state"], row["error"]
            headline = error.split("\n", 1)[0]
            where = f"#{spec.id} ({spec.plan})"
            result.canceled_pending += spec.canceled_pending
            result.cancels_late += spec.cancel_late
            result.canceled_running += spec.canceled_running
            result.cancels_missed += spec.cancel_missed
            if state not in terminal:
                continue  # already reported
            if spec.plan.startswith("poison"):
                ok = False
                if spec.plan == "poison_exit":
                    ok = (state, error, row["crashes"]) == (State.FAILED, crashed, 3)
                elif spec.plan.startswith("poison_raise"):
                    expected = POISON_ERRORS[spec.args["how"]]
                    ok = state == State.FAILED and headline == expected
                    ok = ok or (spec.kind == "action" and orphaned(spec, row))
                elif state == State.SUCCESS:  # sleeping and async actions
                    ok = traced[spec.id] == 1
                    if not ok:
                        bad("lost", f"{where} succeeded without running")
                        continue
                else:
                    ok = orphaned(spec, row)
                if ok:
                    result.poison_as_expected += 1
                else:
                    crashes = row["crashes"]
                    bad("wrong", f"{where} ended {state} ({crashes} crashes): {error[:300]!r}")
                continue
            if spec.kind == "mutation":
                value = counters.get(spec.key, 0)
                kids = children.get(spec.id, [])
                child_value = counters.get(f"{spec.key}/child", 0)
                if spec.canceled_pending:
                    expect_state, expect_value, expect_kids = State.CANCELED, 0, 0
                elif spec.fails:
                    expect_state, expect_value, expect_kids = State.FAILED, 0, 0
                else:
                    expect_state, expect_value = State.SUCCESS, 1
                    expect_kids = 1 if spec.args.get("child") else 0
                if state != expect_state:
                    kind = "lost" if expect_state == State.SUCCESS else "wrong"
                    bad(kind, f"{where} ended {state}, expected {expect_state}: {error[:300]}")
                    continue
                if state == State.FAILED:
                    result.failed_on_purpose += 1
                    if not headline.startswith("ValueError: campaign failure"):
                        bad("wrong", f"{where} failed with {error[:300]!r}")
                if value < expect_value:
                    bad("lost", f"{where} is {state} but its counter is {value}")
                elif value > expect_value and value <= 1:
                    bad("wrong", f"{where} is {state} but its counter is {value}")
                if len(kids) != expect_kids:
                    kind = (
                        "lost"
                        if len(kids) < expect_kids
                        else ("duplicate" if expect_kids else "wrong")
                    )
                    bad(kind, f"{where} has {len(kids)} children, expected {expect_kids}")
                if expect_kids and child_value == 0:
                    bad("lost", f"{where}: its child's counter is 0")
                if not expect_kids and child_value:
                    bad("wrong", f"{where}: its child's counter is {child_value}")
                continue

            count = runs.get(spec.id, 0)
            if orphaned(spec, row):
                continue  # its worker died; at most one run (checked above)
            if spec.canceled_pending:
                if state != State.CANCELED or count:
                    bad("wrong", f"{where} ended {state} after {count} runs")
            elif spec.canceled_running:
                if state != State.CANCELED:
                    bad("wrong", f"{where} was canceled while running but ended {state}")
            elif state == State.SUCCESS:
                if spec.fails:
                    bad("wrong", f"{where} meant to fail but succeeded")
                if count == 0:
                    bad("lost", f"{where} succeeded without running")
            elif state == State.FAILED:
                if spec.fails and headline.startswith("RuntimeError: campaign failure"):
                    result.failed_on_purpose += 1
                    if count == 0:
                        bad("lost", f"{where} failed on purpose without running")
                elif result.db_restarts and count == 0 and _is_connection_error(error):
                    # Its own write met the restarted server: the action
                    # raised, as any action would; it is not retried.
                    result.actions_failed_by_outage += 1
                else:
                    bad("wrong", f"{where} failed with {error[:300]!r}")
            else:
                bad("wrong", f"{where} ended {state}, but nobody canceled it")
        result.duplicates = duplicates
        result.lost = lost


def _is_connection_error(error: str) -> bool:
    first = error.split("\n", 1)[0]
    return first.startswith(("OperationalError", "InterfaceError")) and any(
        word in error for word in ("connection", "server", "terminating", "closed")
    )


def print_summary(result: Result) -> None:
    verdict = "PASSED" if result.passed else "FAILED"
    states = ", ".join(f"{state} {count}" for state, count in result.states.items())
    poison = ", ".join(f"{plan[7:]} {count}" for plan, count in result.poison.items())
    lines = [
        f"Fault campaign {verdict}",
        f"  database          {result.database}",
        f"  seed              {result.seed}",
        f"  functions         {result.functions} scheduled + {result.children} children "
        f"= {result.rows} rows",
        f"  workers           {result.workers} x concurrency {result.concurrency}; "
        f"{result.worker_starts} started"
        + (f"; settings {result.settings_overrides}" if result.settings_overrides else ""),
        f"  kills (SIGKILL)   {result.kills}",
        f"  poison exits      {result.poison_exits} workers died running poison:exit_process "
        "(restarted)",
        f"  restarts (db)     {result.db_restarts}"
        + (
            f" (down {result.db_outage_seconds}s; "
            + (
                f"survivors busy again after {result.reconnect_seconds}s)"
                if result.reconnect_seconds is not None
                else "nothing was left to run after it)"
            )
            if result.db_restarts
            else ""
        ),
        f"  final states      {states}",
        f"    mutations       {result.states_by_kind.get('mutation')}",
        f"    actions         {result.states_by_kind.get('action')}",
        f"  failed on purpose {result.failed_on_purpose}"
        + (
            f" (and {result.actions_failed_by_outage} actions whose own write met the restart)"
            if result.actions_failed_by_outage
            else ""
        ),
        f"  poison mix        {poison}",
        f"    as expected     {result.poison_as_expected} of {sum(result.poison.values())} "
        "(failed with their exact error, or ran once)",
        f"  orphaned actions  {result.orphaned_actions} (failed, '{_orphan_message()}')",
        f"  canceled          {result.canceled_pending} while pending, "
        f"{result.canceled_running} while running "
        f"({result.cancels_late} pending cancels skipped as late, "
        f"{result.cancels_missed} running cancels missed)",
        f"  mutation retries  {result.mutation_retries} rows with attempts > 1",
        f"  duplicates        {result.duplicates}",
        f"  lost              {result.lost}",
        f"  violations        {len(result.violations)}",
        f"  wall time         {result.wall_seconds}s (faults until {result.fault_seconds}s, "
        f"drain {result.drain_seconds}s)",
    ]
    for violation in result.violations[:30]:
        lines.append(f"  ! {violation}")
    if len(result.violations) > 30:
        lines.append(f"  ! ... and {len(result.violations) - 30} more")
    print("\n".join(lines), flush=True)


def _orphan_message() -> str:
    from convex_scheduler.models import ORPHANED_ACTION_ERROR

    return ORPHANED_ACTION_ERROR


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Kill workers at random under a mixed workload and check that nothing "
        "ran twice and nothing was lost.",
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql", "mysql"), required=True)
    parser.add_argument(
        "--functions",
        type=int,
        default=None,
        help="functions to schedule (default 2000, --quick 300)",
    )
    parser.add_argument("--workers", type=int, default=3, help="worker processes (default 3)")
    parser.add_argument("--concurrency", type=int, default=2, help="threads per worker")
    parser.add_argument("--interval", type=float, default=0.05, help="worker poll interval")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--spread",
        type=float,
        default=None,
        help="seconds over which due times are spread (default 30, --quick 8)",
    )
    parser.add_argument("--kill-min", type=float, default=0.3)
    parser.add_argument("--kill-max", type=float, default=1.0)
    parser.add_argument(
        "--max-starting",
        type=int,
        default=None,
        help="kill only while fewer workers than this are still starting up "
        "(default: --workers minus 1, so one worker is always up)",
    )
    parser.add_argument(
        "--duration-limit",
        type=float,
        default=None,
        help="give up (and fail) after this many seconds (default 600, --quick 120)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=None,
        help="workers' HEARTBEAT_INTERVAL (default: tests/settings.py's)",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=None,
        help="workers' WORKER_TIMEOUT (default: tests/settings.py's)",
    )
    parser.add_argument("--quick", action="store_true", help="a short version for the test suite")
    parser.add_argument("--json", type=Path, help="also write the summary here as JSON")
    parser.add_argument(
        "--no-db-restart", action="store_true", help="PostgreSQL: do not restart the server mid-run"
    )
    parser.add_argument(
        "--mysql-server",
        default=DEFAULT_MYSQL_SERVER,
        help=f"MySQL/MariaDB server URL (default {DEFAULT_MYSQL_SERVER})",
    )
    parser.add_argument(
        "--db-name", default=DEFAULT_DB_NAME, help=f"database name (default {DEFAULT_DB_NAME})"
    )
    parser.add_argument(
        "--pg-port",
        type=int,
        default=None,
        help=f"port of the throwaway cluster (default: the first free one from {DEFAULT_PG_PORT})",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the work folder (worker logs, SQLite file) even on success",
    )
    options = parser.parse_args(argv)
    if options.functions is None:
        options.functions = 300 if options.quick else 2000
    if options.spread is None:
        options.spread = 8.0 if options.quick else 30.0
    if options.duration_limit is None:
        options.duration_limit = 120.0 if options.quick else 600.0
    if options.max_starting is None:
        options.max_starting = max(1, options.workers - 1)
    if options.seed is None:
        options.seed = random.SystemRandom().randrange(1, 10**6)
    if options.functions < 20 or options.workers < 1 or options.concurrency < 1:
        parser.error("need at least 20 functions, 1 worker and a concurrency of 1")
    if not 0 < options.kill_min <= options.kill_max:
        parser.error("need 0 < --kill-min <= --kill-max")
    return options


def main(argv=None) -> int:
    options = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="convex-faults-"))
    if options.database == "sqlite":
        db = SqliteDatabase(workdir, options.db_name)
    elif options.database == "mysql":
        db = MysqlDatabase(options.mysql_server, options.db_name)
    else:
        db = PostgresCluster(options.db_name, options.pg_port)

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    campaign = Campaign(options, db, workdir)
    log(f"seed {options.seed}, {options.functions} functions, {options.workers} workers")
    success = False
    code = 2
    try:
        result = campaign.run()
        success = result.passed
        print_summary(result)
        if options.json:
            options.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
        code = 0 if success else 1
    except CampaignError as exc:
        print(f"Fault campaign could not finish: {exc}", flush=True)
        if campaign.fleet is not None:
            for worker in campaign.fleet.started[-3:]:
                print(f"  {worker.log.name}:\n{worker.tail()}", flush=True)
    except KeyboardInterrupt:
        print("Fault campaign interrupted", flush=True)
        code = 130
    finally:
        if campaign.fleet is not None:
            campaign.fleet.kill_all()
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        db.close(success)
        if success and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work folder kept: {workdir}")
    return code


if __name__ == "__main__":
    sys.exit(main())
