"""One measurement inside one Django environment; ``run.py`` calls this.

Run with the interpreter of the target being measured (ours or the peer's
virtualenv), with ``BENCH_TARGET`` (``ours`` or ``peer``) and ``DATABASE_URL``
set. Each subcommand prints progress to stderr and, as its last line on
stdout, ``BENCH-RESULT <json>``.

Workers are always real Django subprocesses of the same interpreter, started,
stopped and reaped by the test suite's harness (``tests/harness.py``):
``runscheduler`` for ours, ``db_worker`` for django-tasks-db.
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
        from convex_scheduler.models import ScheduledFunction, SchedulerWorker

        self.functions = functions
        self.scheduler = scheduler
        self.Model = ScheduledFunction
        self.Probe = Probe
        self.tables = [ScheduledFunction, SchedulerWorker, Probe]
        try:  # the interval in force may depend on the database
            from convex_scheduler.conf import poll_interval_for

            self.poll_interval = float(poll_interval_for(connection.vendor))
        except ImportError:
            self.poll_interval = float(scheduler_settings.POLL_INTERVAL)

    def schedule(self, kind: str = "mutation") -> None:
        fn = self.functions.noop_action if kind == "action" else self.functions.noop_mutation
        self.scheduler.run_after(0, fn)

    def worker_command(self, *, burst: bool) -> list[str]:
        return ["runscheduler", "--burst"] if burst else ["runscheduler"]

    def pending(self) -> int:
        return self.Model.objects.filter(state__in=("pending", "inProgress")).count()

    def finished_stats(self) -> dict:
        from django.db.models import Count, Max, Min

        row = self.Model.objects.filter(state="success").aggregate(
            n=Count("id"), first=Min("completed_time"), last=Max("completed_time")
        )
        failed = self.Model.objects.exclude(state__in=("success", "pending")).count()
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
        self.tasks.noop.enqueue()

    def worker_command(self, *, burst: bool) -> list[str]:
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


def target():
    return Peer() if TARGET == "peer" else Ours()


# --------------------------------------------------------------------------
# Helpers


def vendor() -> str:
    return connection.vendor


def clear(t) -> None:
    """Empty the target's tables between workloads."""
    with connection.cursor() as cursor:
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


def start_workers(t, n: int, *, burst: bool, label: str) -> list[harness.Worker]:
    return [
        harness.start(
            *t.worker_command(burst=burst),
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
) -> dict:
    """Pre-scheduled ``count`` no-ops are drained by ``workers`` burst processes."""
    clear(t)
    empty_run = None
    if measure_startup:
        # Process start-up and exit (interpreter, Django, connection) on its own,
        # on the empty table, to tell it apart from the draining.
        started = time.perf_counter()
        wait_all(start_workers(t, workers, burst=True, label=f"{label}-empty"), 120)
        empty_run = time.perf_counter() - started
    schedule_seconds = preschedule(t, count, kind)
    log(f"scheduled {count} {kind}s in {schedule_seconds:.1f}s; draining with {workers} worker(s)")
    started = time.perf_counter()
    codes = wait_all(start_workers(t, workers, burst=True, label=label), timeout)
    elapsed = time.perf_counter() - started
    stats = t.finished_stats()
    pending = t.pending()
    connections.close_all()
    result = {
        "count": count,
        "workers": workers,
        "kind": kind,
        "seconds": elapsed,
        "rate": count / elapsed,
        "empty_run_seconds": empty_run,
        "exit_codes": codes,
        "succeeded": stats["succeeded"],
        "not_succeeded": stats["other"],
        "left_pending": pending,
    }
    if stats["first"] and stats["last"] and stats["succeeded"] > 1:
        span = (stats["last"] - stats["first"]).total_seconds()
        if span > 0:
            result["steady_rate"] = (stats["succeeded"] - 1) / span
    problems = []
    if any(codes):
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
    return drain(
        t,
        count=args.count,
        kind=args.kind,
        workers=args.workers,
        label=label,
        timeout=args.timeout,
        measure_startup=args.measure_startup,
    )


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
    p.add_argument("--kind", default="mutation", choices=("mutation", "action", "task"))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--measure-startup", action="store_true")
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
