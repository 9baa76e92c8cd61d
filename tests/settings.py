"""Settings for the test suite. The database comes from ``DATABASE_URL``.

SQLite (the default) uses a file, not memory: worker subprocesses must see
what the tests write. ``CONVEX_TEST_DB_NAME`` points a subprocess at the test
database pytest-django created.
"""

import json
import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("CONVEX_TEST_VAR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

DATABASE_URL = os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'tests.sqlite3'}"
# Workers keep their connections, as docs/workers.rst recommends (each claim
# would reconnect otherwise); tests/test_connections.py covers CONN_MAX_AGE=0.
default = dj_database_url.parse(DATABASE_URL, conn_max_age=None)
if default["ENGINE"] == "django.db.backends.sqlite3":
    default["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    default["TEST"] = {"NAME": str(VAR_DIR / "test_tests.sqlite3")}
elif default["ENGINE"] == "django.db.backends.mysql":
    default["OPTIONS"] = {"charset": "utf8mb4", "isolation_level": "read committed"}
    default["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}
if os.environ.get("CONVEX_TEST_DB_NAME"):
    default["NAME"] = os.environ["CONVEX_TEST_DB_NAME"]
DATABASES = {"default": default}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "convex_scheduler",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
STATIC_URL = "/static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Fast, predictable retries in tests; the defaults are documented in conf.py.
CONVEX_SCHEDULER = {
    "CONFLICT_BACKOFF_INITIAL": 0.01,
    "CONFLICT_BACKOFF_MAX": 0.2,
    "UNAVAILABLE_BACKOFF_INITIAL": 0.05,
    "POLL_INTERVAL": 0.05,
    # Worker subprocesses of the pool tests get their limits from the test.
    "POOLS": json.loads(os.environ.get("CONVEX_TEST_POOLS") or "{}"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"convex_scheduler": {"handlers": ["console"], "level": "INFO"}},
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "convex_scheduler test API",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
}
