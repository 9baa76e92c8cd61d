"""Settings for the benchmark project: ours, and with ``BENCH_TARGET=peer``
django-tasks-db, with ``BENCH_TARGET=procrastinate`` Procrastinate (PostgreSQL only).

The database comes from ``DATABASE_URL``. Both targets use the same database
options, so what differs between them is the queue, not the storage:

* SQLite: WAL journal, ``synchronous=FULL`` (every commit is durable), ``BEGIN
  IMMEDIATE`` transactions and a 20 s busy timeout.
* PostgreSQL: the server's defaults (``synchronous_commit=on``).
* MariaDB/MySQL: utf8mb4 and READ COMMITTED, as the test suite uses.

Nothing here tunes the worker: ``CONVEX_SCHEDULER`` is left at its defaults so
the latency figures are those of ``manage.py runscheduler`` out of the box.
"""

import os
from pathlib import Path

import dj_database_url

BENCH_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BENCH_VAR_DIR", BENCH_DIR / "var"))
TARGET = os.environ.get("BENCH_TARGET", "ours")

SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / f'bench-{TARGET}.sqlite3'}"
default = dj_database_url.parse(DATABASE_URL, conn_max_age=None)
if default["ENGINE"] == "django.db.backends.sqlite3":
    default["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
    }
elif default["ENGINE"] == "django.db.backends.mysql":
    default["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
elif default["ENGINE"] == "django.db.backends.postgresql":
    # Django's documented psycopg 3 option: values travel as parameters
    # instead of being rendered into the SQL text. Both targets get it.
    default["OPTIONS"] = {"server_side_binding": True}
DATABASES = {"default": default}

if TARGET == "peer":
    INSTALLED_APPS = ["django_tasks", "django_tasks_db", "peerapp"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
elif TARGET == "procrastinate":
    # Procrastinate's documented Django integration: its app (migrations,
    # ``manage.py procrastinate worker``) and tasks autodiscovered from
    # ``procrastapp/tasks.py``. Its worker opens its own psycopg pool from
    # these database settings.
    INSTALLED_APPS = ["procrastinate.contrib.django", "procrastapp"]
else:
    INSTALLED_APPS = ["convex_scheduler", "benchapp"]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
