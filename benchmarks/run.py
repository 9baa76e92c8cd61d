#!/usr/bin/env python3
"""The benchmark suite of convex_scheduler, side by side with django-tasks-db and
(on PostgreSQL) Procrastinate.

    python benchmarks/run.py [--databases sqlite,postgresql,mysql] [--quick]
                             [--json out.json] [--write-docs]

Only the standard library is used here. The measurements themselves run in
``driver.py`` under two interpreters: ours (``--python``, else the repository's
``.venv``, which ``scripts/test`` makes, else this interpreter) and the peer's
(``benchmarks/.venv-peers`` with django-tasks-db and Procrastinate, created on
first use). See
``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import collections
import fcntl
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# BENCH_VAR_DIR: another directory for the SQLite files, logs, results and the
# run lock (e.g. a smoke run on SQLite while a PostgreSQL run holds the lock).
VAR = Path(os.environ.get("BENCH_VAR_DIR") or HERE / "var").resolve()
DOCS = REPO / "docs"
DRIVER = HERE / "driver.py"

DEFAULT_URLS = {
    "sqlite": {
        "ours": f"sqlite:///{VAR / 'bench-ours.sqlite3'}",
        "peer": f"sqlite:///{VAR / 'bench-peer.sqlite3'}",
    },
    "postgresql": {
        "ours": "postgres://postgres@127.0.0.1:5432/convex_bench",
        "peer": "postgres://postgres@127.0.0.1:5432/convex_bench_peer",
        "procrastinate": "postgres://postgres@127.0.0.1:5432/convex_bench_procrastinate",
    },
    "mysql": {
        "ours": "mysql://root@127.0.0.1:3306/convex_bench",
        "peer": "mysql://root@127.0.0.1:3306/convex_bench_peer",
    },
}
DB_TITLES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mysql": "MariaDB"}
PEER_REQUIREMENTS = [
    "django-tasks-db",
    "django-tasks",
    "procrastinate",
    "psycopg[binary]",
    "psycopg-pool",
    "dj-database-url",
]
WORKLOADS = ("schedule", "dispatch", "latency", "memory", "scale", "crons", "actions", "io")
#: What each system drains in the I/O-bound workload, and at which concurrencies
#: (one worker process each): ours runs async actions on --concurrency 500 and
#: sync ones on 50; db_worker runs one task at a time (async ones too);
#: Procrastinate's is tried at several. The best of each is reported.
IO_PLAN = (
    ("async", "ours", "sleep_async", (500,)),
    ("async", "peer", "sleep_async", (1,)),
    ("async", "procrastinate", "sleep_async", (50, 200, 500)),
    ("sync", "ours", "sleep_sync", (50,)),
    ("sync", "procrastinate", "sleep_sync", (50,)),
)
#: A worker still running this long after its last function finished is
#: stopped and reported (the actions and I/O workloads watch the table).
EXIT_GRACE = 10

FULL = {
    "schedule_count": 2000,
    "schedule_repeats": 5,
    "dispatch_count": 10_000,
    "latency_samples": 200,
    "memory_first": 1000,
    "memory_total": 100_000,
    "scale_finished": 1_000_000,
    "scale_future": 100_000,
    "scale_count": 10_000,
    "crons_count": 10_000,
    "crons_total": 10_000,
    "crons_every_minute": 5,
    "crons_pairs": 3,
    "actions_count": 5_000,
    "actions_concurrency": [1, 10, 50],
    "io_count": 2_000,
}
QUICK = {
    "schedule_count": 200,
    "schedule_repeats": 2,
    "dispatch_count": 300,
    "latency_samples": 15,
    "memory_first": 100,
    "memory_total": 1000,
    "scale_finished": 0,
    "scale_future": 0,
    "scale_count": 0,
    "crons_count": 300,
    "crons_total": 1_000,
    "crons_every_minute": 5,
    "crons_pairs": 2,
    "actions_count": 200,
    "actions_concurrency": [1, 10, 50],
    "io_count": 50,
}


def say(message: str = "") -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------
# Environments


def _has_modules(python: str, modules: list[str]) -> bool:
    code = "; ".join(f"import {m}" for m in modules)
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def _ensure_venv(path: Path, requirements: list[str], *, reinstall: bool) -> str:
    """A virtualenv at ``path`` with ``requirements`` (and, if it builds, mysqlclient)."""
    python = path / "bin" / "python"
    stamp = path / ".bench-requirements"
    wanted = "\n".join(requirements)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted and not reinstall:
        return str(python)
    say(f"-- preparing {path.relative_to(REPO)} ({', '.join(requirements)})")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *requirements], check=True)
    # MariaDB needs mysqlclient, which builds against libmariadb-dev and
    # pkg-config (apt-get install -y libmariadb-dev pkg-config); without them
    # the MariaDB runs are skipped with a note instead.
    done = subprocess.run([*pip, "mysqlclient"], capture_output=True, text=True)
    if done.returncode != 0:
        say("   mysqlclient did not install (MariaDB will be skipped for this environment):")
        say("   " + (done.stderr.strip().splitlines() or ["?"])[-1])
    stamp.write_text(wanted)
    return str(python)


def ours_python(args) -> str:
    """The interpreter for ours; the repository's ``.venv`` is made by ``scripts/test``."""
    if args.python:
        # Absolute but not resolved: a virtualenv's python is a symlink out of it.
        return os.path.abspath(args.python)
    repo_venv = REPO / ".venv" / "bin" / "python"
    for python in (str(repo_venv), sys.executable):
        if Path(python).exists() and _has_modules(python, ["django", "dj_database_url"]):
            return python
    raise SystemExit("no interpreter with Django for ours: run scripts/test once, or pass --python")


def peer_python(args) -> str:
    return _ensure_venv(HERE / ".venv-peers", PEER_REQUIREMENTS, reinstall=args.reinstall)


# --------------------------------------------------------------------------
# Running the driver


class Driver:
    def __init__(self, python: str, target: str, url: str, verbose: bool) -> None:
        self.python = python
        self.target = target
        self.url = url
        self.verbose = verbose

    def env(self) -> dict:
        env = os.environ.copy()
        env.update(
            BENCH_TARGET=self.target,
            DATABASE_URL=self.url,
            DJANGO_SETTINGS_MODULE="benchproject.settings",
            PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]),
            BENCH_VAR_DIR=str(VAR),
            PYTHONUNBUFFERED="1",
        )
        return env

    def run(self, command: str, *options: str, label: str = "") -> dict:
        argv = [self.python, str(DRIVER)]
        if label:
            argv += ["--label", label]
        argv += [command, *options]
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env(),
            cwd=str(HERE),
        )
        tail: collections.deque[str] = collections.deque(maxlen=40)
        log_path = VAR / "logs" / "driver.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)

        def pump() -> None:
            with open(log_path, "a") as log:
                log.write(f"\n$ {shlex.join(argv)}  # {self.target} {self.url}\n")
                for line in process.stderr:
                    log.write(line)
                    tail.append(line.rstrip())
                    if self.verbose or line.startswith("    ["):
                        print(line.rstrip(), flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        stdout = process.stdout.read()
        process.wait()
        reader.join()
        result = None
        for line in stdout.splitlines():
            if line.startswith("BENCH-RESULT "):
                result = json.loads(line[len("BENCH-RESULT ") :])
        if result is None:
            detail = next((t for t in reversed(tail) if t.strip()), "no output")
            result = {"error": f"driver failed (exit {process.returncode}): {detail}"}
        if "error" in result:
            say(f"    [{self.target}] ERROR: {result['error']}")
        return result


# --------------------------------------------------------------------------
# The plan


def run_database(db: str, drivers: dict[str, Driver | None], params: dict, args) -> dict:
    out: dict = {"info": {}, "results": {}, "skipped": {}}
    live: dict[str, Driver] = {}
    for name, driver in drivers.items():
        if driver is None:
            continue
        setup = driver.run("setup")
        if "error" in setup:
            out["skipped"][name] = setup["error"]
            continue
        out["info"][name] = driver.run("info")
        live[name] = driver
    results = out["results"]

    def measure(key: str, name: str, *options: str) -> None:
        driver = live.get(name)
        if driver is None:
            if name in drivers and drivers[name] is not None:
                results[key] = {"error": out["skipped"].get(name, "setup failed")}
            return
        say(f"  - {key}")
        results[key] = driver.run(*options, label=f"{db}-{name}")

    n = str(params["dispatch_count"])
    timeout = str(max(600, params["dispatch_count"] / 10))
    wanted = set(args.workloads)
    try:
        if "schedule" in wanted:
            for name in ("ours", "peer"):
                measure(
                    f"schedule.{name}",
                    name,
                    "schedule",
                    "--count",
                    str(params["schedule_count"]),
                    "--repeats",
                    str(params["schedule_repeats"]),
                )
        if "dispatch" in wanted:
            for workers in ("1", "2"):
                for name, kind in (("ours", "mutation"), ("peer", "task"), ("ours", "action")):
                    startup = [] if args.quick else ["--measure-startup"]
                    measure(
                        f"dispatch.{kind}.{workers}.{name}",
                        name,
                        "--timeout",
                        timeout,
                        "dispatch",
                        "--count",
                        n,
                        "--kind",
                        kind,
                        "--workers",
                        workers,
                        *startup,
                    )
        if "latency" in wanted:
            for name in ("ours", "peer"):
                measure(
                    f"latency.{name}", name, "latency", "--samples", str(params["latency_samples"])
                )
        if "memory" in wanted:
            measure(
                "memory.ours",
                "ours",
                "--timeout",
                str(max(1800, params["memory_total"] / 20)),
                "memory",
                "--first",
                str(params["memory_first"]),
                "--total",
                str(params["memory_total"]),
            )
        if "scale" in wanted and params["scale_count"]:
            measure(
                "scale.ours",
                "ours",
                "--timeout",
                timeout,
                "scale",
                "--count",
                str(params["scale_count"]),
                "--finished",
                str(params["scale_finished"]),
                "--future",
                str(params["scale_future"]),
            )
        if "crons" in wanted:
            measure(
                "crons.ours",
                "ours",
                "--timeout",
                timeout,
                "crons",
                "--count",
                str(params["crons_count"]),
                "--crons",
                str(params["crons_total"]),
                "--every-minute",
                str(params["crons_every_minute"]),
                "--pairs",
                str(params["crons_pairs"]),
            )
        if "actions" in wanted:
            count = params["actions_count"]
            for c in params["actions_concurrency"]:
                for name in ("ours", "peer", "procrastinate"):
                    if name == "peer" and c != 1:
                        continue  # db_worker has no concurrency
                    measure(
                        f"actions.{c}.{name}",
                        name,
                        "--timeout",
                        str(max(600, count / 5)),
                        "dispatch",
                        "--count",
                        str(count),
                        "--kind",
                        "action" if name == "ours" else "task",
                        "--concurrency",
                        str(c),
                        "--exit-grace",
                        str(EXIT_GRACE),
                    )
        if "io" in wanted:
            count = params["io_count"]
            for mode, name, kind, levels in IO_PLAN:
                for c in levels:
                    floor = count * 0.1 / c
                    measure(
                        f"io.{mode}.{c}.{name}",
                        name,
                        "--timeout",
                        str(round(max(300, 2 * floor + 120))),
                        "dispatch",
                        "--count",
                        str(count),
                        "--kind",
                        kind,
                        "--concurrency",
                        str(c),
                        "--exit-grace",
                        str(EXIT_GRACE),
                    )
    finally:
        if not args.keep_databases:
            for driver in live.values():
                driver.run("teardown")
    return out


# --------------------------------------------------------------------------
# Machine


def machine_info() -> dict:
    info = {
        "kernel": platform.release(),
        "cores": os.cpu_count(),
        "python_orchestrator": platform.python_version(),
    }
    try:
        text = Path("/proc/cpuinfo").read_text()
        match = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu"] = match.group(1).strip() if match else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    try:
        text = Path("/proc/meminfo").read_text()
        match = re.search(r"^MemTotal:\s*(\d+) kB", text, re.M)
        if match:
            info["ram_gib"] = round(int(match.group(1)) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        text = Path("/etc/os-release").read_text()
        match = re.search(r'^PRETTY_NAME="?([^"\n]+)', text, re.M)
        if match:
            info["os"] = match.group(1)
    except OSError:
        pass
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# --------------------------------------------------------------------------
# Reading the results


def get(results: dict, key: str, field: str):
    value = results.get(key, {})
    if "error" in value and field not in value:
        return None
    return value.get(field)


def error_of(results: dict, key: str) -> str | None:
    value = results.get(key)
    if value is None:
        return None
    return value.get("error")


def fmt_rate(value) -> str:
    return "-" if value is None else f"{value:,.0f}/s"


def fmt_ms(value) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f} ms" if value < 100 else f"{value:,.0f} ms"


def fmt_s(value) -> str:
    return "-" if value is None else f"{value:.3f} s"


def fmt_ratio(a, b) -> str:
    if a is None or b is None or not b:
        return "-"
    ratio = a / b
    return f"{ratio:.3f}x" if ratio < 0.1 else f"{ratio:.2f}x"


def fmt_mib(kb) -> str:
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"


def cell(results, key, field, fmt) -> str:
    value = get(results, key, field)
    if value is None and error_of(results, key):
        return "error"
    if value is None and key not in results:
        return "-"
    return fmt(value)


def database_rows(db: str, data: dict) -> list[list[str]]:
    """Rows of: measurement, ours, django-tasks-db, ours / peer."""
    r = data["results"]
    rows: list[list[str]] = []

    def pair(label, ours_key, peer_key, field, fmt):
        if ours_key not in r and peer_key not in r:
            return  # not part of this run
        a, b = get(r, ours_key, field), get(r, peer_key, field) if peer_key else None
        rows.append(
            [
                label,
                cell(r, ours_key, field, fmt),
                cell(r, peer_key, field, fmt) if peer_key else "",
                fmt_ratio(a, b) if peer_key else "",
            ]
        )

    pair("schedule, autocommit", "schedule.ours", "schedule.peer", "autocommit_rate", fmt_rate)
    pair(
        "schedule, 1,000 in one transaction",
        "schedule.ours",
        "schedule.peer",
        "batch_seconds_median",
        fmt_s,
    )
    for workers in ("1", "2"):
        plural = "s" if workers != "1" else ""
        pair(
            f"no-op mutations drained, {workers} worker{plural}",
            f"dispatch.mutation.{workers}.ours",
            f"dispatch.task.{workers}.peer",
            "rate",
            fmt_rate,
        )
        pair(
            f"no-op actions drained, {workers} worker{plural}",
            f"dispatch.action.{workers}.ours",
            f"dispatch.task.{workers}.peer",
            "rate",
            fmt_rate,
        )
    pair(
        "mutations, 1 worker, steady state",
        "dispatch.mutation.1.ours",
        "dispatch.task.1.peer",
        "steady_rate",
        fmt_rate,
    )
    one = get(r, "dispatch.mutation.1.ours", "rate")
    two = get(r, "dispatch.mutation.2.ours", "rate")
    p1 = get(r, "dispatch.task.1.peer", "rate")
    p2 = get(r, "dispatch.task.2.peer", "rate")
    if any(v is not None for v in (one, two, p1, p2)):
        rows.append(["2 workers / 1 worker", fmt_ratio(two, one), fmt_ratio(p2, p1), ""])
    for q in ("p50", "p95", "p99"):
        pair(f"start latency {q}", "latency.ours", "latency.peer", f"{q}_ms", fmt_ms)
    if "latency.ours" in r or "latency.peer" in r:
        rows.append(
            [
                "  (idle worker's poll interval)",
                _poll(get(r, "latency.ours", "poll_interval")),
                _poll(get(r, "latency.peer", "poll_interval")),
                "",
            ]
        )
    if "scale.ours" in r:
        scale = r["scale.ours"]
        empty = scale.get("empty_rate")
        full = (scale.get("full") or {}).get("rate")
        fin, fut = scale.get("finished_rows"), scale.get("future_rows")
        rows.append(["mutations, 1 worker, empty table (mean)", fmt_rate(empty), "", ""])
        label = f"... with {fin or 0:,} finished + {fut or 0:,} future rows"
        rows.append([label, fmt_rate(full) if full else "error", "", ""])
        rows.append(["  full / empty", fmt_ratio(full, empty), "", ""])
    if "crons.ours" in r:
        c = r["crons.ours"]
        n, pairs = c.get("crons") or 0, c.get("pairs") or 0
        rows.append(
            [
                f"mutations, 1 worker, no crons (median of {pairs})",
                cell(r, "crons.ours", "rate_without", fmt_rate),
                "",
                "",
            ]
        )
        rows.append(
            [
                f"... with {n:,} run-time crons (median of {pairs})",
                cell(r, "crons.ours", "rate_with", fmt_rate),
                "",
                "",
            ]
        )
        ratio = c.get("ratio")
        rows.append(
            [
                f"  with / without crons (median of {pairs} interleaved pairs)",
                "error" if ratio is None else f"{ratio:.3f}x",
                "",
                "",
            ]
        )
    if "memory.ours" in r:
        m = r["memory.ours"]
        if m.get("rss_first_kb") is None:
            rows.append(["worker RSS", "error", "", ""])
        else:
            rows.append([f"worker RSS after {m['first']:,}", fmt_mib(m["rss_first_kb"]), "", ""])
            rows.append([f"worker RSS after {m['total']:,}", fmt_mib(m["rss_total_kb"]), "", ""])
            rows.append(["  growth", f"{m['growth_mb']:+.1f} MiB", "", ""])
    return rows


def _levels(r: dict, prefix: str, name: str) -> list[tuple[int, dict]]:
    """The results ``<prefix>.<concurrency>.<name>``, by concurrency."""
    found = []
    for key, value in r.items():
        parts = key.split(".")
        if key.startswith(prefix + ".") and parts[-1] == name and parts[-2].isdigit():
            found.append((int(parts[-2]), value))
    return sorted(found, key=lambda item: item[0])


def best_of(r: dict, prefix: str, name: str, field: str, *, lower: bool = False):
    """(value, concurrency) of the best successful run, else (None, None)."""
    runs = [(v[field], c) for c, v in _levels(r, prefix, name) if "error" not in v and field in v]
    if not runs:
        return None, None
    return min(runs) if lower else max(runs)


def action_header(data: dict) -> list[str]:
    header = ["measurement", "convex_scheduler", "django-tasks-db"]
    if _has_procrastinate(data):
        header.append("Procrastinate")
    header.append("ours / django-tasks-db")
    if _has_procrastinate(data):
        header.append("ours / Procrastinate")
    return header


def _has_procrastinate(data: dict) -> bool:
    return any(key.endswith(".procrastinate") for key in data["results"]) or (
        "procrastinate" in data.get("skipped", {})
    )


def action_rows(data: dict, params: dict) -> list[list[str]]:
    """Rows of the actions table: each system, and ours' ratio to each peer."""
    r = data["results"]
    with_procrastinate = _has_procrastinate(data)
    names = ["ours", "peer"] + (["procrastinate"] if with_procrastinate else [])
    rows: list[list[str]] = []

    def row(label: str, cells: dict[str, str], values: dict[str, float | None]):
        out = [label] + [cells.get(n, "") for n in names]
        for other in names[1:]:
            out.append(fmt_ratio(values.get("ours"), values.get(other)))
        rows.append(out)

    levels = sorted(
        {c for key in r if key.startswith("actions.") for c in [key.split(".")[1]]}, key=int
    )
    count = params.get("actions_count", 0)
    for c in levels:
        cells, values = {}, {}
        for name in names:
            key = f"actions.{c}.{name}"
            if key in r:
                cells[name] = cell(r, key, "rate", fmt_rate)
                values[name] = get(r, key, "rate")
        if cells:
            note = " (db_worker: always 1)" if c == "1" else ""
            row(f"{count:,} no-op actions, 1 worker, concurrency {c}{note}", cells, values)
    if levels:
        cells, values = {}, {}
        for name in names:
            rate, c = best_of(r, "actions", name, "rate")
            if _levels(r, "actions", name):
                cells[name] = "error" if rate is None else f"{fmt_rate(rate)} (c={c})"
                values[name] = rate
        row("  best concurrency", cells, values)
    io_count = params.get("io_count", 0)
    for mode, label in (
        ("async", f"{io_count:,} I/O-bound async actions (await asyncio.sleep(0.1))"),
        ("sync", f"{io_count:,} I/O-bound sync actions (time.sleep(0.1))"),
    ):
        cells, values = {}, {}
        for name in names:
            runs = _levels(r, f"io.{mode}", name)
            if not runs:
                continue
            seconds, c = best_of(r, f"io.{mode}", name, "seconds", lower=True)
            values[name] = seconds
            if seconds is not None:
                cells[name] = f"{seconds:.2f} s (c={c})"
                continue
            # Every run failed: say how, with the concurrency it was run at.
            c, value = runs[-1]
            done = value.get("all_finished_seconds")
            cells[name] = (
                f"all done {done:.2f} s, no exit (c={c})" if done is not None else f"error (c={c})"
            )
        if cells:
            row(label + ", 1 worker, drained in", cells, values)
    return rows


def _poll(value) -> str:
    return "-" if value is None else f"{value:g} s"


# --------------------------------------------------------------------------
# Targets of issue 5


def evaluate_targets(report: dict) -> list[dict]:
    rows = []
    dbs = report["databases"]

    def add(db, target, goal, measured, ok):
        if ok is None and set(measured) <= set("-p50,95 ()vsx/"):
            return  # not part of this run
        status = "n/a" if ok is None else ("met" if ok else "not met")
        rows.append(
            {
                "database": DB_TITLES.get(db, db),
                "target": target,
                "goal": goal,
                "measured": measured,
                "status": status,
            }
        )

    for db, data in dbs.items():
        r = data["results"]
        ours = get(r, "dispatch.mutation.1.ours", "rate")
        peer = get(r, "dispatch.task.1.peer", "rate")
        if db in ("sqlite", "postgresql"):
            add(
                db,
                "no-op mutations, 1 worker, vs django-tasks-db",
                "≥ 4x",
                fmt_ratio(ours, peer) + f" ({fmt_rate(ours)} vs {fmt_rate(peer)})",
                None if ours is None or not peer else ours / peer >= 4,
            )
        if db == "postgresql":
            procrastinate_1 = get(r, "actions.1.procrastinate", "rate")
            if procrastinate_1 is not None:
                add(
                    db,
                    "no-op mutations, 1 worker, vs Procrastinate concurrency 1",
                    "≥ 3x (Procrastinate's no-op tasks, this run)",
                    fmt_ratio(ours, procrastinate_1)
                    + f" ({fmt_rate(ours)} vs {fmt_rate(procrastinate_1)})",
                    None if ours is None else ours >= 3 * procrastinate_1,
                )
            else:
                add(
                    db,
                    "no-op mutations, 1 worker, vs Procrastinate concurrency 1",
                    "≥ 3x 310/s = 930/s (issue 5's figure, not re-measured)",
                    fmt_rate(ours),
                    None if ours is None else ours >= 930,
                )
            two = get(r, "dispatch.mutation.2.ours", "rate")
            add(
                db,
                "no-op mutations, 2 workers / 1 worker",
                "≥ 1.6x",
                fmt_ratio(two, ours),
                None if two is None or not ours else two / ours >= 1.6,
            )
        p50 = get(r, "latency.ours", "p50_ms")
        p95 = get(r, "latency.ours", "p95_ms")
        if db == "postgresql":
            add(
                db,
                "start latency into an idle worker",
                "p50 ≤ 3 ms, p95 ≤ 10 ms",
                f"p50 {fmt_ms(p50)}, p95 {fmt_ms(p95)}",
                None if p50 is None or p95 is None else (p50 <= 3 and p95 <= 10),
            )
        else:
            add(
                db,
                "start latency into an idle worker",
                "p50 ≤ 20 ms",
                f"p50 {fmt_ms(p50)}",
                None if p50 is None else p50 <= 20,
            )
        a = get(r, "schedule.ours", "autocommit_rate")
        b = get(r, "schedule.peer", "autocommit_rate")
        add(
            db,
            "scheduling in autocommit vs django-tasks-db's enqueue",
            "≥ 1x",
            fmt_ratio(a, b) + f" ({fmt_rate(a)} vs {fmt_rate(b)})",
            None if a is None or not b else a >= b,
        )
        batch = get(r, "schedule.ours", "batch_seconds_median")
        add(
            db,
            "1,000 schedules in one transaction",
            "< 0.5 s",
            fmt_s(batch),
            None if batch is None else batch < 0.5,
        )
        scale = r.get("scale.ours")
        if scale:
            label = (
                f"dispatch with {scale.get('finished_rows', 0):,} finished + "
                f"{scale.get('future_rows', 0):,} future rows vs empty table"
            )
            if "ratio" in scale:
                add(
                    db,
                    label,
                    "within 20% (≥ 0.80x)",
                    f"{scale['ratio']:.2f}x",
                    scale["ratio"] >= 0.8,
                )
            else:
                add(db, label, "within 20% (≥ 0.80x)", "error", None)
        crons = r.get("crons.ours")
        if crons:
            ratio = crons.get("ratio")
            pairs = ", ".join(f"{x:.3f}" for x in crons.get("ratios", []))
            add(
                db,
                f"mutations with {crons.get('crons', 0):,} run-time crons vs none (issue 12)",
                "≥ 0.95x (median of interleaved pairs)",
                "error" if ratio is None else f"{ratio:.3f}x (pairs: {pairs})",
                None if ratio is None else ratio >= 0.95,
            )
        params = report.get("params", {})
        if any(key.startswith("actions.") for key in r):
            best, c = best_of(r, "actions", "ours", "rate")
            goal = {"postgresql": 1500, "sqlite": 2000}.get(db)
            if goal:
                add(
                    db,
                    "no-op actions, 1 worker, best concurrency (issue 14)",
                    f"≥ {goal:,}/s",
                    f"{fmt_rate(best)} (c={c})" if best else "error",
                    None if best is None else best >= goal,
                )
            theirs, their_c = best_of(r, "actions", "procrastinate", "rate")
            if db == "postgresql" and _levels(r, "actions", "procrastinate"):
                add(
                    db,
                    "no-op actions, 1 worker, vs Procrastinate's best (issue 14)",
                    "≥ 3x",
                    fmt_ratio(best, theirs)
                    + f" ({fmt_rate(best)} c={c} vs {fmt_rate(theirs)} c={their_c})",
                    None if best is None or not theirs else best >= 3 * theirs,
                )
        io_count = params.get("io_count", 0)
        if _levels(r, "io.async", "ours"):
            seconds, c = best_of(r, "io.async", "ours", "seconds", lower=True)
            add(
                db,
                f"{io_count:,} async actions of 100 ms, 1 worker (issue 14)",
                "≤ 2 s end to end",
                f"{fmt_s(seconds)} (c={c})" if seconds else "error",
                None if seconds is None else seconds <= 2,
            )
            theirs, their_c = best_of(r, "io.async", "procrastinate", "seconds", lower=True)
            if _levels(r, "io.async", "procrastinate"):
                add(
                    db,
                    f"{io_count:,} async actions of 100 ms vs Procrastinate's best (issue 14)",
                    "≥ 2x faster",
                    (f"{theirs / seconds:.2f}x faster" if seconds and theirs else "-")
                    + f" ({fmt_s(seconds)} vs {fmt_s(theirs)} c={their_c})",
                    None if seconds is None or theirs is None else theirs >= 2 * seconds,
                )
        if _levels(r, "io.sync", "ours"):
            seconds, c = best_of(r, "io.sync", "ours", "seconds", lower=True)
            add(
                db,
                f"{io_count:,} sync actions of 100 ms at concurrency 50 (issue 14)",
                "≤ 5 s",
                f"{fmt_s(seconds)} (c={c})" if seconds else "error",
                None if seconds is None else seconds <= 5,
            )
        memory = r.get("memory.ours")
        if memory and "growth_mb" in memory:
            add(
                db,
                f"worker RSS growth {memory['first']:,} → {memory['total']:,} functions",
                "< 20 MB",
                f"{memory['growth_mb']:+.1f} MiB",
                memory["growth_mb"] < 20,
            )
    return rows


# --------------------------------------------------------------------------
# Output


def text_table(header: list[str], rows: list[list[str]], *, numeric: bool = True) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip(), line]
    for row in rows:
        cells = []
        for index, (value, width) in enumerate(zip(row, widths, strict=True)):
            left = index == 0 or not numeric
            cells.append(value.ljust(width) if left else value.rjust(width))
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def print_report(report: dict) -> None:
    header = ["measurement", "convex_scheduler", "django-tasks-db", "ours / peer"]
    for db, data in report["databases"].items():
        say()
        say(f"== {DB_TITLES.get(db, db)} ==")
        for name, reason in data.get("skipped", {}).items():
            say(f"   ({name} skipped: {reason})")
        say(text_table(header, database_rows(db, data)))
        actions = action_rows(data, report.get("params", {}))
        if actions:
            say()
            say(f"-- actions, {DB_TITLES.get(db, db)} --")
            say(text_table(action_header(data), actions))
    targets = report["targets"]
    if targets:
        say()
        say("== Targets (issues 5, 12 and 14) ==")
        keys = ("database", "target", "goal", "measured", "status")
        rows = [[t[k] for k in keys] for t in targets]
        say(text_table(["database", "target", "goal", "measured", "status"], rows, numeric=False))


NOTES_START, NOTES_END = ".. notes-start", ".. notes-end"
DEFAULT_NOTES = (
    "*Written by hand;* ``--write-docs`` *keeps whatever stands between these markers.*\n"
)


class Doc:
    """A tiny reStructuredText writer."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def title(self, text: str, level: int) -> None:
        self.parts.append(f"{text}\n{'=-~'[level - 1] * len(text)}\n")

    def para(self, text: str) -> None:
        self.parts.append(text.strip() + "\n")

    def code(self, text: str, lang: str = "console") -> None:
        body = "\n".join("   " + line for line in text.splitlines())
        self.parts.append(f".. code-block:: {lang}\n\n{body}\n")

    def bullets(self, items: list[str]) -> None:
        self.parts.append("\n".join(f"- {item}" for item in items) + "\n")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        lines = [".. list-table::", "   :header-rows: 1", ""]
        for row in [header, *rows]:
            for index, value in enumerate(row):
                lead = "   * - " if index == 0 else "     - "
                lines.append((lead + (value or "").strip()).rstrip())
        self.parts.append("\n".join(lines) + "\n")

    def raw(self, text: str) -> None:
        self.parts.append(text)

    def render(self) -> str:
        return "\n".join(self.parts)


def _load(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values) if values else "?"


def L(text: str) -> str:  # a literal, as short as the markup it writes
    return f"``{text}``"


def write_docs(report: dict) -> Path:
    path = DOCS / "performance.rst"
    notes = DEFAULT_NOTES
    if path.exists():
        old = path.read_text()
        start, end = old.find(NOTES_START), old.find(NOTES_END)
        if start != -1 and end > start:
            notes = old[start + len(NOTES_START) : end].strip("\n") + "\n"
            if not notes.strip():
                notes = DEFAULT_NOTES
    d = Doc()
    d.title("Performance", 1)
    d.raw(
        ".. This page is generated by ``python benchmarks/run.py --write-docs``; edit\n"
        "   only the notes section (between the notes markers), which is kept.\n"
    )
    d.para(
        "How fast the scheduler dispatches, how soon a due function starts, and whether that holds "
        "as the table grows, measured by the benchmark suite in "
        f"{L('benchmarks/')} side by side with django-tasks-db's {L('db_worker')} (and, for "
        "actions on PostgreSQL, Procrastinate's worker), in the same "
        "invocation on the same machine so that the ratios are honest even when absolute "
        "numbers are noisy."
    )
    d.title("Running it", 2)
    d.code(
        "python benchmarks/run.py --databases sqlite,postgresql,mysql --json results.json "
        "--write-docs\npython benchmarks/run.py --quick --databases sqlite   # smoke run, < 1 min",
    )
    d.para(
        f"It creates {L('benchmarks/.venv-peers')} (django-tasks-db, Procrastinate) on first use "
        "and runs ours "
        f"from the repository's {L('.venv')} (made by {L('scripts/test')}). PostgreSQL "
        f"is expected at 127.0.0.1:5432 (user postgres), MariaDB at 127.0.0.1:3306 (root); the "
        f"benchmark creates and drops its own {L('convex_bench')}, {L('convex_bench_peer')} "
        f"and {L('convex_bench_procrastinate')} databases. See {L('benchmarks/README.md')} "
        "for every option."
    )

    started = report.get("started", "")
    kind = "quick smoke run" if report.get("quick") else "full run"
    d.title("Results", 2)
    load = report.get("load_average", {})
    d.para(
        f"From a {kind} started {started} (UTC), {report.get('duration_s', 0) / 60:.1f} minutes, "
        f"command {L(report.get('command', ''))}. Load average (1, 5, 15 min) "
        f"{_load(load.get('start'))} at the start and {_load(load.get('end'))} at the end"
        + (f". Conditions: {report['conditions']}." if report.get("conditions") else ".")
    )
    header = ["measurement", "convex_scheduler", "django-tasks-db", "ours / peer"]
    for db, data in report["databases"].items():
        d.title(DB_TITLES.get(db, db), 3)
        for name, reason in data.get("skipped", {}).items():
            d.para(f"{name} skipped: {reason}")
        errors = [
            f"{key}: {value['error']}"
            for key, value in data["results"].items()
            if isinstance(value, dict) and value.get("error")
        ]
        d.table(header, database_rows(db, data))
        actions = action_rows(data, report.get("params", {}))
        if actions:
            d.para(
                "Actions, one worker process each, at the concurrencies shown "
                "(c=...); the 'best concurrency' row takes each system's best:"
            )
            d.table(action_header(data), actions)
        if errors:
            d.para("Errors in this run:")
            d.bullets([e.replace("`", "'") for e in errors])

    d.title("Targets", 2)
    d.para(
        "The targets of issues 5, 12 and 14. Ratios come from the same run on the same "
        "machine. Procrastinate runs on PostgreSQL only, and only in the actions and I/O "
        "workloads; without them, the issue 5 row uses the figure issue 5 measured."
    )
    d.table(
        ["database", "target", "goal", "measured", "status"],
        [
            [t["database"], t["target"], t["goal"], t["measured"], f"**{t['status']}**"]
            for t in report["targets"]
        ],
    )

    d.title("Machine", 2)
    m = report["machine"]
    items = [
        f"CPU: {m.get('cpu')}, {m.get('cores')} cores; RAM {m.get('ram_gib')} GiB",
        f"OS: {m.get('os', '?')}, kernel {m.get('kernel')}",
    ]
    seen = set()
    for db, data in report["databases"].items():
        for name, info in data.get("info", {}).items():
            if "error" in info:
                continue
            if ("py", name) not in seen:
                seen.add(("py", name))
                extra = {
                    "peer": f"django-tasks-db {info.get('django_tasks_db')}, "
                    f"django-tasks {info.get('django_tasks')}",
                    "procrastinate": f"Procrastinate {info.get('procrastinate')}, "
                    f"psycopg {info.get('psycopg')}",
                }.get(name, f"convex_scheduler {info.get('convex_scheduler')} (working tree)")
                items.append(
                    f"{name}: Python {info.get('python')}, "
                    f"Django {info.get('django')}, {extra}, "
                    f"SQLite library {info.get('sqlite_library')}"
                )
            if ("db", db) not in seen:
                seen.add(("db", db))
                details = {
                    "sqlite": lambda i: (
                        f"journal_mode={i.get('journal_mode')}, "
                        f"synchronous={i.get('synchronous')}, BEGIN IMMEDIATE"
                    ),
                    "postgresql": lambda i: (
                        f"synchronous_commit={i.get('synchronous_commit')}, "
                        f"fsync={i.get('fsync')}, shared_buffers={i.get('shared_buffers')}"
                    ),
                    "mysql": lambda i: (
                        "innodb_flush_log_at_trx_commit="
                        f"{i.get('innodb_flush_log_at_trx_commit')}, log_bin={i.get('log_bin')}, "
                        "READ COMMITTED"
                    ),
                }[db](info)
                items.append(f"{DB_TITLES.get(db, db)}: {info.get('server')} ({details})")
    d.bullets(items)

    d.title("What is measured", 2)
    p = report["params"]
    d.bullets(
        [
            f"**Scheduling**: {p['schedule_count']:,} calls of {L('scheduler.run_after(0, fn)')} "
            f"each in its own autocommit transaction, then 1,000 in one {L('transaction.atomic()')}"
            f" (median of {p['schedule_repeats']}); for the peer {L('noop.enqueue()')}.",
            f"**Dispatch**: {p['dispatch_count']:,} no-op mutations, or no-op actions, or the "
            f"peer's no-op tasks, all due, drained by 1 or 2 worker processes started together "
            f"({L('manage.py runscheduler --burst')}, {L('manage.py db_worker --batch')}); "
            "the time runs from starting them until all have exited, so it includes process "
            "start-up (measured on its own, on an empty table, as 'empty_run_seconds' in the "
            "JSON of a full run). 'Steady state' is the rate between the first and the last "
            "completion time recorded in the rows.",
            f"**Start latency**: one long-running worker with default settings; "
            f"{p['latency_samples']} times, a probe function is scheduled with delay 0 in a "
            "transaction; latency is the probe's own reading of the monotonic clock "
            f"({L('CLOCK_MONOTONIC')}, one clock for every process on the machine) when it "
            "starts, minus the reading right after the scheduling transaction committed. Before "
            "each sample the benchmark waits a random time up to the worker's poll interval, so "
            "samples fall at random points of the poll cycle.",
            f"**Scale**: {p['scale_count']:,} no-op mutations drained by one worker with "
            f"{p['scale_finished']:,} finished rows (completed within the retention period) "
            f"and {p['scale_future']:,} pending rows due in a year in the table (inserted by "
            "the database itself with INSERT ... SELECT, then analyzed), against the mean of the "
            "same drain on an empty table just before and just after."
            if p["scale_count"]
            else "**Scale**: not part of this run.",
            f"**Crons** (issue 12): {p.get('crons_count', 0):,} no-op mutations drained by one "
            f"worker with {p.get('crons_total', 0):,} run-time crons in the table (made with "
            f"{L('crons.register()')}, 1,000 per transaction; "
            f"{p.get('crons_every_minute', 0)} of them every minute, the rest yearly on a day "
            "months away, so they are looked at on every poll and never run) against the same "
            f"drain with no crons; {p.get('crons_pairs', 0)} pairs, the order alternating "
            "(with/without, without/with, ...), both sides analyzed first; the ratio is the "
            "median of the pairs' ratios. Runs of the every-minute crons are not counted."
            if p.get("crons_count")
            else "**Crons**: not part of this run.",
            f"**No-op actions** (issue 14): {p.get('actions_count', 0):,} no-op actions "
            "(tasks for the peers) drained by one worker process at each concurrency of "
            f"{', '.join(map(str, p.get('actions_concurrency', [])))} "
            f"({L('runscheduler --burst --concurrency N')}, "
            f"{L('procrastinate worker --one-shot --concurrency N')}; {L('db_worker')} has no "
            "concurrency and runs at 1); the best concurrency of each is reported.",
            f"**I/O-bound actions** (issue 14): {p.get('io_count', 0):,} functions each waiting "
            f"100 ms, drained by one worker process: {L('async def')} awaiting "
            f"{L('asyncio.sleep(0.1)')} (ours at {L('--concurrency 500')}, db_worker one at a "
            "time, Procrastinate at 50, 200 and 500, the best reported), and sync functions "
            f"calling {L('time.sleep(0.1)')} at concurrency 50 (ours and Procrastinate). A worker "
            f"still running {EXIT_GRACE} s after its last function finished is stopped and "
            "reported as an error ('no exit').",
            f"**Memory**: VmRSS of one long-running worker process (from "
            f"{L('/proc/<pid>/status')}) after {p['memory_first']:,} and after "
            f"{p['memory_total']:,} no-op mutations.",
            "SQLite runs in WAL mode with synchronous=FULL for both; PostgreSQL and MariaDB "
            "with the server's durable defaults. Ours and the peer use separate databases of "
            "the same server and run one after the other, interleaved workload by workload.",
        ]
    )

    d.title("Notes on the gaps", 2)
    d.raw(f"{NOTES_START}\n\n{notes.strip()}\n\n{NOTES_END}\n")
    path.write_text(d.render())
    return path


# --------------------------------------------------------------------------


def merge_reports(reports: list[dict]) -> dict:
    """The first report, with each later one's measurements laid over it, key by key."""
    merged = json.loads(json.dumps(reports[0]))
    for other in reports[1:]:
        for db, data in other["databases"].items():
            into = merged["databases"].setdefault(db, {"info": {}, "results": {}, "skipped": {}})
            into["info"].update(data.get("info", {}))
            into["results"].update(data.get("results", {}))
        merged.setdefault("merged_from", []).append(other.get("command", ""))
        merged["load_average"]["end"] = other.get("load_average", {}).get("end")
    if merged.get("merged_from"):
        extra = "; re-measured later: " + " and ".join(merged["merged_from"])
        merged["conditions"] = (merged.get("conditions") or "") + extra
    return merged


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Benchmark convex_scheduler against django-tasks-db.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql,mysql",
        help="comma-separated: sqlite, postgresql, mysql",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run; skips scale")
    parser.add_argument("--json", metavar="PATH", help="also write the results here")
    parser.add_argument("--write-docs", action="store_true", help="regenerate docs/performance.rst")
    parser.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="comma-separated subset of: " + ", ".join(WORKLOADS),
    )
    parser.add_argument("--skip-peer", action="store_true", help="measure ours only")
    parser.add_argument("--dispatch-count", type=int, help="functions per dispatch run")
    parser.add_argument("--latency-samples", type=int, help="latency samples per target")
    parser.add_argument("--memory-total", type=int, help="functions for the memory run")
    parser.add_argument("--scale-finished", type=int, help="finished rows for the scale run")
    parser.add_argument("--scale-future", type=int, help="future rows for the scale run")
    parser.add_argument("--postgres-url", default=None, help="URL of ours' PostgreSQL database")
    parser.add_argument("--mysql-url", default=None, help="URL of ours' MariaDB database")
    parser.add_argument("--python", help="interpreter for ours (default: see module docstring)")
    parser.add_argument("--reinstall", action="store_true", help="reinstall the virtualenvs")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop them after")
    parser.add_argument("--conditions", default="", help="free text for the docs")
    parser.add_argument(
        "--from-json",
        nargs="+",
        metavar="PATH",
        help="measure nothing: print (and with --write-docs, write) the results saved in "
        "these JSON files; a later file's measurements replace an earlier one's",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show the drivers' stderr")
    args = parser.parse_args()
    args.workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(args.workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    aliases = {"postgres": "postgresql", "pg": "postgresql", "mariadb": "mysql"}
    databases = [aliases.get(d, d) for d in databases]
    for db in databases:
        if db not in DEFAULT_URLS:
            parser.error(f"unknown database {db!r}: pick from sqlite, postgresql, mysql")

    if args.from_json:
        report = merge_reports([json.loads(Path(p).read_text()) for p in args.from_json])
        report["targets"] = evaluate_targets(report)
        print_report(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        if args.write_docs:
            path = write_docs(report)
            say(f"docs: {path.relative_to(REPO)}")
        return 0

    params = dict(QUICK if args.quick else FULL)
    for key in (
        "dispatch_count",
        "latency_samples",
        "memory_total",
        "scale_finished",
        "scale_future",
    ):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    if args.dispatch_count is not None and params["scale_count"]:
        params["scale_count"] = args.dispatch_count
    if args.quick and args.scale_finished:  # a small scale run on request
        params["scale_count"] = params["dispatch_count"]
        if args.scale_future is None:
            params["scale_future"] = args.scale_finished // 10
    if args.memory_total is not None:
        params["memory_first"] = min(params["memory_first"], args.memory_total)

    VAR.mkdir(parents=True, exist_ok=True)
    # Two runs at once would share the SQLite files and databases (and each
    # other's CPU): refuse the second.
    lock = open(VAR / ".run.lock", "w")  # noqa: SIM115  (held until exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        say("another benchmark run is in progress (benchmarks/var/.run.lock); try again later")
        return 2
    started = datetime.now(UTC)
    clock_start = time.monotonic()
    report: dict = {
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "command": "python benchmarks/run.py " + shlex.join(sys.argv[1:]),
        "quick": args.quick,
        "params": params,
        "conditions": args.conditions,
        "machine": machine_info(),
        "load_average": {"start": load_average()},
        "databases": {},
    }
    ours = ours_python(args)
    peer = None if args.skip_peer else peer_python(args)
    say(f"ours: {ours}")
    if peer:
        say(f"peer: {peer}")
    mysql_ok = {"ours": _has_modules(ours, ["MySQLdb"])}
    if peer:
        mysql_ok["peer"] = _has_modules(peer, ["MySQLdb"])

    for db in databases:
        say()
        say(f"== {DB_TITLES[db]} ==")
        urls = dict(DEFAULT_URLS[db])
        if db == "postgresql" and args.postgres_url:
            urls["ours"] = args.postgres_url
            urls["peer"] = args.postgres_url.rsplit("/", 1)[0] + "/convex_bench_peer"
            urls["procrastinate"] = (
                args.postgres_url.rsplit("/", 1)[0] + "/convex_bench_procrastinate"
            )
        if db == "mysql" and args.mysql_url:
            urls["ours"] = args.mysql_url
            urls["peer"] = args.mysql_url.rsplit("/", 1)[0] + "/convex_bench_peer"
        drivers: dict[str, Driver | None] = {
            "ours": Driver(ours, "ours", urls["ours"], args.verbose),
            "peer": Driver(peer, "peer", urls["peer"], args.verbose) if peer else None,
        }
        # Procrastinate runs on PostgreSQL only, from the peers' virtualenv, and
        # only when a workload it takes part in was asked for.
        if "procrastinate" in urls and {"actions", "io"} & set(args.workloads):
            drivers["procrastinate"] = (
                Driver(peer, "procrastinate", urls["procrastinate"], args.verbose) if peer else None
            )
        skipped = {}
        if db == "mysql":
            for name in list(drivers):
                if drivers[name] is not None and not mysql_ok.get(name):
                    python = drivers[name].python
                    note = (
                        f"mysqlclient is not importable by {python} (apt-get install -y "
                        "libmariadb-dev pkg-config, then pip install mysqlclient into it, or "
                        "pass --python PATH)"
                    )
                    say(f"  note: {name} skipped on MariaDB: {note}")
                    skipped[name] = note
                    drivers[name] = None
        data = run_database(db, drivers, params, args)
        data["skipped"].update(skipped)
        report["databases"][db] = data

    report["load_average"]["end"] = load_average()
    report["duration_s"] = round(time.monotonic() - clock_start, 1)
    report["targets"] = evaluate_targets(report)
    print_report(report)

    stamp = started.strftime("%Y%m%d-%H%M%S")
    default_json = VAR / f"results-{stamp}.json"
    default_json.write_text(json.dumps(report, indent=2, default=str))
    say()
    say(f"results: {default_json}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
        say(f"results: {args.json}")
    if args.write_docs:
        path = write_docs(report)
        say(f"docs: {path.relative_to(REPO)}")
    say(f"took {report['duration_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
