"""One measurement inside one Django environment; ``run.py`` calls this.

Run with the interpreter of the target being measured (ours or the peer's
virtualenv), with ``BENCH_TARGET`` (``ours`` or ``peer``) and ``DATABASE_URL``
set. Each subcommand prints progress to stderr and, as its last line on
stdout, ``BENCH-RESULT <json>``.

Workers are always real Django subprocesses of the same interpreter, started,
stopped and reaped by the test suite's harness (``tests/harness.py``):
``runscheduler`` for ours, ``db_worker`` for django-tasks-db, ``procrastinate
worker`` for Procrastinate (``BENCH_TARGET=procrastinate``, PostgreSQL only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(HERE), str(REPO)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchproject.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections, transaction  # noqa: E402

from tests import harness  # noqa: E402

TARGET = settings.TARGET
VAR = Path(settings.VAR_DIR)
LOGS = VAR / "logs"
LOGS.mkdir(parents=True, exist_ok=True)
#: db_worker's default --interval (seconds); we run it with its defaults.
PEER_POLL_INTERVAL = 1.0
OWN_DB_PREFIX = "convex_bench"


def log(message: str) -> None:
    print(f"    [{TARGET}] {message}", file=sys.stderr, flush=True)


def mono_ns() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC)


# --------------------------------------------------------------------------
# The two targets behind one interface


class Ours:
    name = "convex_scheduler"

    def __init__(self) -> None:
        from benchapp import functions
        from benchapp.models import Probe

        from convex_scheduler import scheduler
        from convex_scheduler.conf import scheduler_settings
        from convex_scheduler.models import CronJob, ScheduledFunction, SchedulerWorker

        self.functions = functions
        self.scheduler = scheduler
        self.Model = ScheduledFunction
        self.Probe = Probe
        self.tables = [ScheduledFunction, SchedulerWorker, CronJob, Probe]
        try:  # the interval in force may depend on the database
            from convex_scheduler.conf import poll_interval_for

            self.poll_interval = float(poll_interval_for(connection.vendor))
        except ImportError:
            self.poll_interval = float(scheduler_settings.POLL_INTERVAL)

    def schedule(self, kind: str = "mutation") -> None:
        fn = {
            "action": self.functions.noop_action,
            "sleep_async": self.functions.sleep_async_action,
            "sleep_sync": self.functions.sleep_sync_action,
        }.get(kind, self.functions.noop_mutation)
        self.scheduler.run_after(0, fn)

    def worker_command(self, *, burst: bool, concurrency: int | None = None) -> list[str]:
        command = ["runscheduler", "--burst"] if burst else ["runscheduler"]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        return command

    def _measured(self):
        # The runs of crons (the crons workload's every-minute ones) are not
        # part of the count being drained; they are reported on their own.
        return self.Model.objects.filter(cron__isnull=True)

    def pending(self) -> int:
        return self._measured().filter(state__in=("pending", "inProgress")).count()

    def finished_stats(self) -> dict:
        from django.db.models import Count, Max, Min

        row = (
            self._measured()
            .filter(state="success")
            .aggregate(n=Count("id"), first=Min("completed_time"), last=Max("completed_time"))
        )
        failed = self._measured().exclude(state__in=("success", "pending")).count()
        return {"succeeded": row["n"], "other": failed, "first": row["first"], "last": row["last"]}

    def start_probe(self, sample: int):
        self.scheduler.run_after(0, self.functions.probe, {"sample": sample})
        return sample

    def probe_started(self, handle) -> int | None:
        return self.Probe.objects.filter(sample=handle).values_list("started_ns", flat=True).first()

    def worker_ready(self) -> bool:
        from convex_scheduler.models import SchedulerWorker

        return SchedulerWorker.objects.exists()


class Peer:
    name = "django-tasks-db"

    def __init__(self) -> None:
        from django_tasks_db.models import DBTaskResult
        from peerapp import tasks

        self.tasks = tasks
        self.Model = DBTaskResult
        self.tables = [DBTaskResult]
        self.poll_interval = PEER_POLL_INTERVAL

    def schedule(self, kind: str = "task") -> None:
        {
            "sleep_async": self.tasks.sleep_async,
            "sleep_sync": self.tasks.sleep_sync,
        }.get(kind, self.tasks.noop).enqueue()

    def worker_command(self, *, burst: bool, concurrency: int | None = None) -> list[str]:
        # db_worker runs one task at a time: it has no concurrency to set.
        if concurrency not in (None, 1):
            raise ValueError("django-tasks-db's db_worker has no --concurrency")
        command = ["db_worker", "--no-startup-delay", "--no-reload"]
        if burst:
            command.append("--batch")
        return command

    def pending(self) -> int:
        return self.Model.objects.filter(status__in=("READY", "RUNNING")).count()

    def finished_stats(self) -> dict:
        from django.db.models import Count, Max, Min

        row = self.Model.objects.filter(status="SUCCESSFUL").aggregate(
            n=Count("id"), first=Min("finished_at"), last=Max("finished_at")
        )
        other = self.Model.objects.exclude(status__in=("SUCCESSFUL", "READY")).count()
        return {"succeeded": row["n"], "other": other, "first": row["first"], "last": row["last"]}

    def start_probe(self, sample: int):
        return self.tasks.probe.enqueue(sample=sample).id

    def probe_started(self, handle) -> int | None:
        row = self.Model.objects.filter(id=handle).values_list("status", "return_value").first()
        if row is None or row[0] != "SUCCESSFUL":
            return None
        return int(row[1])

    def worker_ready(self) -> bool:
        return True


class Procrastinate:
    """Procrastinate through its Django integration (PostgreSQL only)."""

    name = "procrastinate"
    tables: list = []
    #: Its tables, emptied with one TRUNCATE (events and workers refer to jobs).
    truncate = [
        "procrastinate_jobs",
        "procrastinate_events",
        "procrastinate_periodic_defers",
        "procrastinate_workers",
    ]
    poll_interval = 5.0  # its --fetch-job-polling-interval default; LISTEN/NOTIFY on top

    def __init__(self) -> None:
        from procrastapp import tasks
        from procrastinate.contrib.django.models import ProcrastinateEvent, ProcrastinateJob

        self.tasks = tasks
        self.Model = ProcrastinateJob
        self.Event = ProcrastinateEvent

    def schedule(self, kind: str = "task") -> None:
        {
            "sleep_async": self.tasks.sleep_async,
            "sleep_sync": self.tasks.sleep_sync,
        }.get(kind, self.tasks.noop).defer()

    def worker_command(self, *, burst: bool, concurrency: int | None = None) -> list[str]:
        # --one-shot: stop once no job is left (its documented burst mode).
        command = ["procrastinate", "worker"]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        if burst:
            command.append("--one-shot")
        return command

    def pending(self) -> int:
        return self.Model.objects.filter(status__in=("todo", "doing")).count()

    def finished_stats(self) -> dict:
        from django.db.models import Count, Max, Min

        n = self.Model.objects.filter(status="succeeded").aggregate(n=Count("id"))["n"]
        row = self.Event.objects.filter(type="succeeded").aggregate(first=Min("at"), last=Max("at"))
        other = self.Model.objects.exclude(status__in=("succeeded", "todo")).count()
        return {"succeeded": n, "other": other, "first": row["first"], "last": row["last"]}

    def worker_ready(self) -> bool:
        return True


def target():
    if TARGET == "procrastinate":
        return Procrastinate()
    return Peer() if TARGET == "peer" else Ours()


# --------------------------------------------------------------------------
# Helpers


def vendor() -> str:
    return connection.vendor


def clear(t) -> None:
    """Empty the target's tables between workloads."""
    with connection.cursor() as cursor:
        if getattr(t, "truncate", None):
            cursor.execute(f"TRUNCATE TABLE {', '.join(t.truncate)} CASCADE")
        for model in t.tables:
            table = connection.ops.quote_name(model._meta.db_table)
            if vendor() in ("postgresql", "mysql"):
                # TRUNCATE rather than DELETE: no dead rows or purge backlog
                # from one workload slows the next.
                cursor.execute(f"TRUNCATE TABLE {table}")
            else:
                cursor.execute(f"DELETE FROM {table}")
    if vendor() == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connections.close_all()


def analyze(t) -> None:
    with connection.cursor() as cursor:
        for model in t.tables:
            table = connection.ops.quote_name(model._meta.db_table)
            if vendor() == "postgresql":
                cursor.execute(f"VACUUM ANALYZE {table}")
            elif vendor() == "mysql":
                cursor.execute(f"ANALYZE TABLE {table}")
                cursor.fetchall()
            else:
                cursor.execute("ANALYZE")


def preschedule(t, count: int, kind: str, chunk: int = 1000) -> float:
    """Schedule ``count`` no-ops due now, ``chunk`` per transaction; return seconds taken."""
    started = time.perf_counter()
    done = 0
    while done < count:
        n = min(chunk, count - done)
        with transaction.atomic():
            for _ in range(n):
                t.schedule(kind)
        done += n
    connections.close_all()
    return time.perf_counter() - started


def start_workers(
    t, n: int, *, burst: bool, label: str, concurrency: int | None = None
) -> list[harness.Worker]:
    return [
        harness.start(
            *t.worker_command(burst=burst, concurrency=concurrency),
            settings=os.environ["DJANGO_SETTINGS_MODULE"],
            cwd=HERE,
            pythonpath=[HERE, REPO],
            log=LOGS / f"{label}-{index}.log",
        )
        for index in range(n)
    ]


def wait_all(processes: list[harness.Worker], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    try:
        return [process.wait(max(0.1, deadline - time.monotonic())) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill_now()
        raise TimeoutError(f"workers still running after {timeout:.0f}s") from None


def wait_watching(
    t, processes: list[harness.Worker], *, count: int, timeout: float, exit_grace: float
) -> tuple[list[int], float | None, str | None]:
    """Like :func:`wait_all`, also watching the table: when every function has
    finished and the workers are still running ``exit_grace`` seconds later,
    they are killed and that is reported, instead of waiting out ``timeout``.

    Returns the exit codes, when all functions were seen finished (seconds
    from the start, to 0.25 s), and the problem if the workers had to be killed.
    """
    began = time.perf_counter()
    deadline = time.monotonic() + timeout
    done_at = None
    last_check = 0.0
    while any(process.poll() is None for process in processes):
        now = time.monotonic()
        if now > deadline:
            for process in processes:
                process.kill_now()
            raise TimeoutError(f"workers still running after {timeout:.0f}s")
        if now - last_check >= 0.25:
            last_check = now
            try:
                if done_at is None and t.pending() == 0:
                    stats = t.finished_stats()
                    finished = stats["succeeded"] + stats["other"]
                    done_at = time.perf_counter() - began if finished >= count else None
            except Exception:  # e.g. the server has no connection left for us
                pass
            finally:
                connections.close_all()
        if done_at is not None and time.perf_counter() - began - done_at > exit_grace:
            for process in processes:
                process.kill_now()
            return (
                [process.wait() for process in processes],
                done_at,
                f"every function had finished after {done_at:.1f}s, but the worker had not "
                f"exited {exit_grace:.0f}s later (killed)",
            )
        time.sleep(0.05)
    return [process.returncode for process in processes], done_at, None


def rss_kb(pid: int) -> dict:
    values = {}
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def drain(
    t,
    *,
    count: int,
    kind: str,
    workers: int,
    label: str,
    timeout: float,
    measure_startup: bool = False,
    concurrency: int | None = None,
    keep: bool = False,
    exit_grace: float | None = None,
) -> dict:
    """Pre-scheduled ``count`` functions are drained by ``workers`` burst processes.

    ``keep``: do not empty the tables first (the crons workload sets them up).
    ``exit_grace``: watch the table while draining, and stop a worker that has
    not exited that many seconds after the last function finished.
    """
    if not keep:
        clear(t)
    empty_run = None
    if measure_startup:
        # Process start-up and exit (interpreter, Django, connection) on its own,
        # on the empty table, to tell it apart from the draining.
        started = time.perf_counter()
        wait_all(
            start_workers(t, workers, burst=True, label=f"{label}-empty", concurrency=concurrency),
            120,
        )
        empty_run = time.perf_counter() - started
    schedule_seconds = preschedule(t, count, kind)
    at = f" at concurrency {concurrency}" if concurrency else ""
    log(
        f"scheduled {count} {kind}s in {schedule_seconds:.1f}s; "
        f"draining with {workers} worker(s){at}"
    )
    started = time.perf_counter()
    started_wall = datetime.now(UTC)
    processes = start_workers(t, workers, burst=True, label=label, concurrency=concurrency)
    done_at = stuck = None
    if exit_grace is None:
        codes = wait_all(processes, timeout)
    else:
        codes, done_at, stuck = wait_watching(
            t, processes, count=count, timeout=timeout, exit_grace=exit_grace
        )
    elapsed = time.perf_counter() - started
    stats = t.finished_stats()
    pending = t.pending()
    connections.close_all()
    result = {
        "count": count,
        "workers": workers,
        "kind": kind,
        "concurrency": concurrency,
        "seconds": elapsed,
        "rate": count / elapsed,
        "empty_run_seconds": empty_run,
        "exit_codes": codes,
        "succeeded": stats["succeeded"],
        "not_succeeded": stats["other"],
        "left_pending": pending,
    }
    if done_at is not None:
        result["all_finished_seconds"] = done_at
    if stats["first"] and stats["last"] and stats["succeeded"] > 1:
        span = (stats["last"] - stats["first"]).total_seconds()
        if span > 0:
            result["steady_rate"] = (stats["succeeded"] - 1) / span
        # Where the time went: start-up until the first completion, and the
        # exit after the last one (wall clock of this machine, shared).
        result["first_done_after_s"] = (stats["first"] - started_wall).total_seconds()
        result["exit_after_last_s"] = elapsed - (stats["last"] - started_wall).total_seconds()
    problems = [stuck] if stuck else []
    if any(codes) and not stuck:
        problems.append(f"worker exit codes {codes}")
    if pending:
        problems.append(f"{pending} left pending")
    if stats["succeeded"] != count:
        problems.append(f"{stats['succeeded']} of {count} succeeded")
    if problems:
        result["error"] = "; ".join(problems) + f" (logs: {LOGS}/{label}-*.log)"
    log(
        f"drained {stats['succeeded']}/{count} in {elapsed:.2f}s = {result['rate']:.0f}/s "
        f"(steady {result.get('steady_rate', 0):.0f}/s"
        + (f", start-up {empty_run:.2f}s)" if empty_run is not None else ")")
    )
    return result


# --------------------------------------------------------------------------
# Subcommands


def cmd_setup(args) -> dict:
    """Create (or re-create) the benchmark's own database and migrate it."""
    db = settings.DATABASES["default"]
    name = str(db["NAME"])
    if connection.vendor == "sqlite":
        path = Path(name)
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        _recreate_server_database(name, drop_only=False)
    call_command("migrate", verbosity=0, interactive=False)
    connections.close_all()
    return {"database": name}


def cmd_teardown(args) -> dict:
    db = settings.DATABASES["default"]
    name = str(db["NAME"])
    connections.close_all()
    if connection.vendor == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{name}{suffix}").unlink(missing_ok=True)
    else:
        _recreate_server_database(name, drop_only=True)
    return {"dropped": name}


def _recreate_server_database(name: str, *, drop_only: bool) -> None:
    if not name.startswith(OWN_DB_PREFIX):
        raise SystemExit(f"refusing to touch database {name!r}: not named {OWN_DB_PREFIX}*")
    quoted = connection.ops.quote_name(name)
    with connection._nodb_cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
            if not drop_only:
                cursor.execute(f"CREATE DATABASE {quoted}")
        else:
            cursor.execute(f"DROP DATABASE IF EXISTS {quoted}")
            if not drop_only:
                cursor.execute(
                    f"CREATE DATABASE {quoted} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                )


def cmd_info(args) -> dict:
    import platform
    import sqlite3

    info = {
        "target": TARGET,
        "python": platform.python_version(),
        "django": django.get_version(),
        "sqlite_library": sqlite3.sqlite_version,
        "vendor": connection.vendor,
    }
    if TARGET == "peer":
        from importlib.metadata import version

        info["django_tasks_db"] = version("django-tasks-db")
        info["django_tasks"] = version("django-tasks")
    elif TARGET == "procrastinate":
        from importlib.metadata import version

        info["procrastinate"] = version("procrastinate")
        info["psycopg"] = version("psycopg")
    else:
        import convex_scheduler

        info["convex_scheduler"] = convex_scheduler.__version__
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT version()")
            info["server"] = cursor.fetchone()[0].split(" on ")[0]
            for setting in ("synchronous_commit", "fsync", "shared_buffers"):
                cursor.execute(f"SHOW {setting}")
                info[setting] = cursor.fetchone()[0]
        elif connection.vendor == "mysql":
            cursor.execute("SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@log_bin")
            version, flush, log_bin = cursor.fetchone()
            info["server"] = f"MariaDB/MySQL {version}"
            info["innodb_flush_log_at_trx_commit"] = flush
            info["log_bin"] = log_bin
        else:
            cursor.execute("PRAGMA journal_mode")
            info["journal_mode"] = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            info["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                cursor.fetchone()[0]
            )
            info["server"] = f"SQLite {sqlite3.sqlite_version}"
    return info


def cmd_schedule(args) -> dict:
    """Scheduling throughput: one call per autocommit transaction, and 1,000 per transaction."""
    t = target()
    clear(t)
    for _ in range(10):  # warm up: imports, connection, prepared caches
        t.schedule()
    started = time.perf_counter()
    for _ in range(args.count):
        t.schedule()
    autocommit_seconds = time.perf_counter() - started
    batches = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        with transaction.atomic():
            for _ in range(args.batch):
                t.schedule()
        batches.append(time.perf_counter() - started)
    clear(t)
    result = {
        "autocommit_count": args.count,
        "autocommit_rate": args.count / autocommit_seconds,
        "batch": args.batch,
        "batch_seconds_median": statistics.median(batches),
        "batch_seconds_min": min(batches),
        "batch_seconds_max": max(batches),
        "batch_rate": args.batch / statistics.median(batches),
    }
    log(
        f"autocommit {result['autocommit_rate']:.0f}/s; {args.batch} per transaction "
        f"in {result['batch_seconds_median'] * 1000:.0f} ms (median of {args.repeats})"
    )
    return result


def cmd_dispatch(args) -> dict:
    t = target()
    label = f"{args.label}-dispatch-{args.kind}-{args.workers}w"
    if args.concurrency:
        label += f"-c{args.concurrency}"
    return drain(
        t,
        count=args.count,
        kind=args.kind,
        workers=args.workers,
        label=label,
        timeout=args.timeout,
        measure_startup=args.measure_startup,
        concurrency=args.concurrency,
        exit_grace=args.exit_grace,
    )


def cmd_crons(args) -> dict:
    """Mutation dispatch with ``crons`` run-time crons in the table against none, interleaved.

    Pairs of runs, the order alternating (with/without, then without/with,
    ...) so that a drift in the machine's speed favours neither side. Before
    a run with crons, the crons are created through the public API
    (``crons.register``, 1,000 per transaction); all but ``every_minute`` of
    them are yearly, on a day months away, so the worker has to look past
    them on every poll without running them; the ``every_minute`` others
    (``* * * * *``) tick as a real installation's would, their runs (a no-op
    mutation) counted apart. Both sides are analyzed before the drain.
    """
    from convex_scheduler import crons
    from convex_scheduler.models import CronJob

    t = target()
    now = datetime.now(UTC)
    # A month six months away: the yearly crons cannot come due during the run.
    month = (now.month + 5) % 12 + 1

    def make_crons() -> float:
        started = time.perf_counter()
        done = 0
        while done < args.crons:
            with transaction.atomic():
                for i in range(done, min(done + 1000, args.crons)):
                    if i < args.every_minute:
                        spec = "* * * * *"
                    else:
                        spec = f"{i % 60} {(i // 60) % 24} {1 + (i // 1440) % 28} {month} *"
                    crons.register(f"bench-{i:06d}", t.functions.cron_tick, cron=spec)
            done = min(done + 1000, args.crons)
        seconds = time.perf_counter() - started
        connections.close_all()
        return seconds

    runs: list[dict] = []
    for pair in range(args.pairs):
        order = (True, False) if pair % 2 == 0 else (False, True)
        for with_crons in order:
            clear(t)
            register_seconds = make_crons() if with_crons else None
            present = CronJob.objects.count()
            due_now = CronJob.objects.due(datetime.now(UTC)).count()
            analyze(t)
            side = "with" if with_crons else "without"
            log(
                f"pair {pair + 1}/{args.pairs}, {side} crons: {present} crons "
                f"({due_now} due now)"
                + (f", registered in {register_seconds:.1f}s" if register_seconds else "")
            )
            result = drain(
                t,
                count=args.count,
                kind="mutation",
                workers=1,
                label=f"{args.label}-crons-{pair}-{side}",
                timeout=args.timeout,
                keep=True,
            )
            result.update(
                pair=pair,
                with_crons=with_crons,
                crons_present=present,
                register_seconds=register_seconds,
                cron_runs=t.Model.objects.filter(cron__isnull=False).count(),
            )
            connections.close_all()
            runs.append(result)
    clear(t)
    out: dict = {
        "count": args.count,
        "crons": args.crons,
        "every_minute": args.every_minute,
        "pairs": args.pairs,
        "runs": runs,
    }
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        out["error"] = "; ".join(errors)
        return out
    ratios, steady = [], []
    for pair in range(args.pairs):
        a = next(r for r in runs if r["pair"] == pair and r["with_crons"])
        b = next(r for r in runs if r["pair"] == pair and not r["with_crons"])
        ratios.append(a["rate"] / b["rate"])
        if "steady_rate" in a and "steady_rate" in b:
            steady.append(a["steady_rate"] / b["steady_rate"])
    out["ratios"] = ratios
    out["ratio"] = statistics.median(ratios)
    if steady:
        out["steady_ratios"] = steady
        out["steady_ratio"] = statistics.median(steady)
    out["rate_with"] = statistics.median(r["rate"] for r in runs if r["with_crons"])
    out["rate_without"] = statistics.median(r["rate"] for r in runs if not r["with_crons"])
    out["cron_runs"] = sum(r["cron_runs"] for r in runs)
    log(
        f"with/without crons: median {out['ratio']:.3f}x "
        f"(pairs {', '.join(f'{x:.3f}' for x in ratios)}); "
        f"{out['rate_with']:.0f}/s vs {out['rate_without']:.0f}/s"
    )
    return out


def cmd_latency(args) -> dict:
    """Start latency of a function due now, scheduled into an idle, long-running worker."""
    t = target()
    clear(t)
    worker = start_workers(t, 1, burst=False, label=f"{args.label}-latency")[0]
    try:
        deadline = time.monotonic() + 60
        while not t.worker_ready():
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start (exit code {worker.poll()})")
            time.sleep(0.05)
        samples = []
        rng = random.Random(args.seed)
        for index in range(-args.warmup, args.samples):
            # The worker polls every `poll_interval` seconds, counted from when it
            # last found nothing; a random pause puts each schedule at a random
            # phase of that cycle instead of always right after a poll.
            time.sleep(rng.uniform(0, t.poll_interval))
            with transaction.atomic():
                handle = t.start_probe(index + args.warmup)
            committed = mono_ns()
            wait_until = time.monotonic() + max(30.0, 5 * t.poll_interval)
            while True:
                started_ns = t.probe_started(handle)
                if started_ns is not None:
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                if time.monotonic() > wait_until:
                    raise TimeoutError(f"sample {index} did not run within 30 s")
                time.sleep(0.002)
            if index >= 0:
                samples.append((started_ns - committed) / 1e6)
    finally:
        worker.stop(15)
        connections.close_all()
    ordered = sorted(samples)
    result = {
        "samples": len(samples),
        "poll_interval": t.poll_interval,
        "p50_ms": percentile(ordered, 0.50),
        "p95_ms": percentile(ordered, 0.95),
        "p99_ms": percentile(ordered, 0.99),
        "mean_ms": statistics.fmean(ordered),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
    }
    log(
        f"latency p50 {result['p50_ms']:.1f} ms, p95 {result['p95_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms over {len(samples)} samples"
    )
    return result


def cmd_scale(args) -> dict:
    """Dispatch throughput with a big table (finished + far-future rows) against an empty one.

    The empty table is measured before and after the full one, and the full
    run is compared with their mean, so a drift in the machine's load shows.
    """
    t = target()
    label = f"{args.label}-scale"
    empty = drain(
        t,
        count=args.count,
        kind="mutation",
        workers=1,
        label=f"{label}-empty",
        timeout=args.timeout,
    )
    clear(t)
    started = time.perf_counter()
    _fill(t, finished=args.finished, future=args.future)
    fill_seconds = time.perf_counter() - started
    analyze(t)
    analyze_seconds = time.perf_counter() - started - fill_seconds
    log(
        f"filled {args.finished} finished + {args.future} future rows in {fill_seconds:.1f}s, "
        f"analyzed in {analyze_seconds:.1f}s"
    )
    full = _drain_keeping(t, count=args.count, label=f"{label}-full", timeout=args.timeout)
    clear(t)
    analyze(t)
    empty_after = drain(
        t,
        count=args.count,
        kind="mutation",
        workers=1,
        label=f"{label}-empty-after",
        timeout=args.timeout,
    )
    clear(t)
    result = {
        "count": args.count,
        "finished_rows": args.finished,
        "future_rows": args.future,
        "fill_seconds": fill_seconds,
        "analyze_seconds": analyze_seconds,
        "empty": empty,
        "full": full,
        "empty_after": empty_after,
    }
    parts = (empty, full, empty_after)
    errors = [part["error"] for part in parts if "error" in part]
    if errors:
        result["error"] = "; ".join(errors)
    else:
        baseline = (empty["rate"] + empty_after["rate"]) / 2
        result["empty_rate"] = baseline
        result["ratio"] = full["rate"] / baseline
        if all("steady_rate" in part for part in parts):
            steady = (empty["steady_rate"] + empty_after["steady_rate"]) / 2
            result["steady_ratio"] = full["steady_rate"] / steady
    return result


def _drain_keeping(t, *, count: int, label: str, timeout: float) -> dict:
    """Like :func:`drain`, on a table that already holds rows (not cleared)."""
    from django.db.models import Max, Min

    since = datetime.now(UTC)
    schedule_seconds = preschedule(t, count, "mutation")
    log(f"scheduled {count} mutations in {schedule_seconds:.1f}s into the full table")
    started = time.perf_counter()
    codes = wait_all(start_workers(t, 1, burst=True, label=label), timeout)
    elapsed = time.perf_counter() - started
    mine = t.Model.objects.filter(creation_time__gte=since)
    succeeded = mine.filter(state="success").count()
    bounds = mine.filter(state="success").aggregate(
        first=Min("completed_time"), last=Max("completed_time")
    )
    due_left = t.Model.objects.filter(next_run_time__lte=datetime.now(UTC)).count()
    connections.close_all()
    result = {
        "count": count,
        "workers": 1,
        "seconds": elapsed,
        "rate": count / elapsed,
        "exit_codes": codes,
        "succeeded": succeeded,
        "left_pending": due_left,
    }
    if bounds["first"] and bounds["last"] and succeeded > 1:
        span = (bounds["last"] - bounds["first"]).total_seconds()
        if span > 0:
            result["steady_rate"] = (succeeded - 1) / span
    if any(codes) or due_left or succeeded != count:
        result["error"] = f"exit codes {codes}, {succeeded}/{count} succeeded, {due_left} due left"
    log(
        f"drained {succeeded}/{count} in {elapsed:.2f}s = {result['rate']:.0f}/s "
        f"(steady {result.get('steady_rate', 0):.0f}/s)"
    )
    return result


def _fill(t, *, finished: int, future: int) -> None:
    """Bulk-insert finished and far-future pending rows, generated by the database itself.

    A helper table of 1,000 prepared timestamps is cross-joined with itself
    (up to a million rows per ``INSERT ... SELECT``), so no row passes through
    Python. Columns come from the model, so a field added later gets its
    default. Finished rows completed within the retention period, so
    housekeeping leaves them in place while the benchmark runs.
    """
    from convex_scheduler.registry import registry

    meta = t.Model._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    qn = connection.ops.quote_name
    table = qn(meta.db_table)
    helper = qn("bench_fill")
    time_field = meta.get_field("scheduled_time")
    dt_type = time_field.db_type(connection)
    name = registry.resolve(t.functions.noop_mutation).name
    now = datetime.now(UTC)

    def prep(field, value):
        return field.get_db_prep_save(value, connection)

    times = []
    for i in range(1000):
        done = now - timedelta(minutes=5) - timedelta(days=6) * (i / 1000)
        times.append(
            (
                i,
                prep(time_field, done),
                prep(time_field, done - timedelta(seconds=1)),
                prep(time_field, now + timedelta(days=365, hours=i)),
            )
        )
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # A bigger page cache for this connection only: the fill is set-up,
            # not measured, and the workers keep their defaults.
            cursor.execute("PRAGMA cache_size = -262144")
        cursor.execute(f"DROP TABLE IF EXISTS {helper}")
        cursor.execute(
            f"CREATE TABLE {helper} (i INTEGER PRIMARY KEY, done_time {dt_type}, "
            f"done_created {dt_type}, future_time {dt_type})"
        )
        cursor.executemany(f"INSERT INTO {helper} VALUES (%s, %s, %s, %s)", times)

    def insert(count: int, constants: dict, computed: dict) -> None:
        columns, select, params = [], [], []
        for field in fields:
            columns.append(qn(field.column))
            if field.name in computed:
                select.append(f"v.{computed[field.name]}")
                continue
            if field.name in constants:
                value = constants[field.name]
            elif field.attname in constants:
                value = constants[field.attname]
            else:
                value = field.get_default()
            select.append("%s")
            params.append(prep(field, value))
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(select)} "
            f"FROM {helper} a CROSS JOIN {helper} v WHERE a.i * 1000 + v.i < %s"
        )
        left = count
        while left > 0:
            n = min(left, 1_000_000)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, [*params, n])
            left -= n

    common = {"name": name, "kind": "mutation", "args": {}, "parent_id": None, "owner": ""}
    insert(
        finished,
        {**common, "state": "success", "next_run_time": None, "attempts": 1, "error": ""},
        {
            "scheduled_time": "done_created",
            "creation_time": "done_created",
            "completed_time": "done_time",
        },
    )
    insert(
        future,
        {
            **common,
            "state": "pending",
            "attempts": 0,
            "error": "",
            "completed_time": None,
            "started_time": None,
            "creation_time": now,
        },
        {"scheduled_time": "future_time", "next_run_time": "future_time"},
    )
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE {helper}")
    connections.close_all()


def cmd_memory(args) -> dict:
    """RSS of one long-running worker after ``first`` and after ``total`` functions."""
    t = target()
    clear(t)
    preschedule(t, args.first, "mutation")
    worker = start_workers(t, 1, burst=False, label=f"{args.label}-memory")[0]
    timeline = []
    began = time.monotonic()
    try:
        deadline = began + args.timeout

        def wait_done(scheduled: int) -> None:
            while True:
                pending = t.pending()
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with {worker.returncode}")
                timeline.append(
                    {
                        "seconds": round(time.monotonic() - began, 1),
                        "done": scheduled - pending,
                        "rss_kb": rss_kb(worker.pid)["VmRSS"],
                    }
                )
                if pending == 0:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{pending} functions still pending after {args.timeout}s")
                time.sleep(0.5)

        wait_done(args.first)
        time.sleep(0.2)
        after_first = rss_kb(worker.pid)
        log(f"RSS after {args.first}: {after_first['VmRSS'] / 1024:.1f} MiB")
        # The rest is scheduled while the worker runs, 1,000 per transaction.
        preschedule(t, args.total - args.first, "mutation")
        wait_done(args.total)
        time.sleep(0.2)
        after_total = rss_kb(worker.pid)
        log(f"RSS after {args.total}: {after_total['VmRSS'] / 1024:.1f} MiB")
        stats = t.finished_stats()
    finally:
        worker.stop(15)
        connections.close_all()
    clear(t)
    result = {
        "first": args.first,
        "total": args.total,
        "rss_first_kb": after_first["VmRSS"],
        "rss_total_kb": after_total["VmRSS"],
        "hwm_total_kb": after_total["VmHWM"],
        "growth_mb": (after_total["VmRSS"] - after_first["VmRSS"]) / 1024,
        "succeeded": stats["succeeded"],
        "timeline": timeline[:: max(1, len(timeline) // 50)],
    }
    if stats["succeeded"] != args.total:
        result["error"] = f"{stats['succeeded']} of {args.total} succeeded"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", default=f"{TARGET}")
    parser.add_argument("--timeout", type=float, default=1800)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("setup")
    sub.add_parser("teardown")
    sub.add_parser("info")
    p = sub.add_parser("schedule")
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("dispatch")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument(
        "--kind",
        default="mutation",
        choices=("mutation", "action", "task", "sleep_async", "sleep_sync"),
    )
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=None)
    p.add_argument(
        "--exit-grace",
        type=float,
        default=None,
        help="watch the table; kill workers still running this long after all finished",
    )
    p.add_argument("--measure-startup", action="store_true")
    p = sub.add_parser("crons")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--crons", type=int, default=10_000)
    p.add_argument("--every-minute", type=int, default=5)
    p.add_argument("--pairs", type=int, default=3)
    p = sub.add_parser("latency")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--seed", type=int, default=5)
    p = sub.add_parser("scale")
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--finished", type=int, default=1_000_000)
    p.add_argument("--future", type=int, default=100_000)
    p = sub.add_parser("memory")
    p.add_argument("--first", type=int, default=1000)
    p.add_argument("--total", type=int, default=100_000)
    args = parser.parse_args()
    handler = globals()[f"cmd_{args.command}"]
    try:
        result = handler(args)
    except Exception as exc:
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:500]}
        print("BENCH-RESULT " + json.dumps(result, default=str), flush=True)
        sys.exit(1)
    print("BENCH-RESULT " + json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
