"""The support matrix: every (Python, Django) pair we support runs the whole suite.

    .venv/bin/nox                         every cell (SQLite; PostgreSQL and MariaDB
                                          on the oldest and newest pair)
    .venv/bin/nox -s "tests(3.13-django6.1)" -- -k cancel
    .venv/bin/nox -l                      the list of cells

Each cell gets its own virtualenv with exactly that Django. Django 6.x needs
Python 3.12 or later, so 3.11 pairs only with 5.2. The slow browser and
schemathesis tests run in README's own run (Python 3.11, Django 5.2, SQLite)
and in the newest cell on SQLite; every other run deselects them, which keeps
CI inside its budget. ``.ci/run`` sets ``CONVEX_NOX_SQLITE_DONE=3.11-5.2``
because README's run already was that cell on SQLite. A cell fails when its
run fails, collects nothing, or skips a test for want of the database it is
running on.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.error_on_missing_interpreters = True
# uv must use the interpreters installed here, never download one.
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")



def _put_pyenv_interpreters_on_path() -> None:
    """Make pyenv's installed 3.11-3.13 findable as python3.X.

    pyenv's shims answer only for the selected version, so nox would not find
    the others; their own bin folders do.
    """
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    if not versions.is_dir():
        return
    newest: dict[str, tuple[tuple[int, ...], Path]] = {}
    for folder in versions.iterdir():
        match = re.fullmatch(r"3\.(11|12|13)\.(\d+)", folder.name)
        if match and (folder / "bin").is_dir():
            key = (int(match[1]), int(match[2]))
            if match[1] not in newest or key > newest[match[1]][0]:
                newest[match[1]] = (key, folder / "bin")
    folders = [str(path) for _, path in newest.values()]
    os.environ["PATH"] = os.pathsep.join([*folders, os.environ.get("PATH", "")])


_put_pyenv_interpreters_on_path()

DJANGO = {"5.2": "Django>=5.2,<5.3", "6.0": "Django>=6.0,<6.1", "6.1": "Django>=6.1,<6.2"}
CELLS = [
    ("3.11", "5.2"),
    ("3.12", "5.2"),
    ("3.12", "6.0"),
    ("3.12", "6.1"),
    ("3.13", "5.2"),
    ("3.13", "6.0"),
    ("3.13", "6.1"),
]
OLDEST, NEWEST = CELLS[0], CELLS[-1]
SERVERS = {
    "postgresql": os.environ.get(
        "CONVEX_CI_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("CONVEX_CI_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
VENDOR_WORDS = {"postgresql": ("postgres",), "mysql": ("mysql", "mariadb")}


@nox.session
@nox.parametrize("python,django", CELLS, ids=[f"{p}-django{d}" for p, d in CELLS])
def tests(session: nox.Session, django: str) -> None:
    """The whole suite on SQLite; on the edge cells, on PostgreSQL and MariaDB too."""
    edge = (session.python, django) in (OLDEST, NEWEST)
    extras = "postgres,mysql" if edge else "postgres"
    session.install("-r", "requirements-test.txt", f".[{extras}]", DJANGO[django])
    version = session.run(
        "python", "-c", "import django; print(django.get_version())", silent=True
    )
    session.log(f"Django {str(version).strip()} on Python {session.python}")

    args = list(session.posargs)
    var = Path(session.create_tmp()) / "var"
    databases = ["sqlite", *SERVERS] if edge else ["sqlite"]
    if f"{session.python}-{django}" in os.environ.get("CONVEX_NOX_SQLITE_DONE", "").split(","):
        databases.remove("sqlite")
    for vendor in databases:
        slow_here = vendor == "sqlite" and (session.python, django) == NEWEST
        marks = [] if "-m" in args or slow_here else ["-m", "not browser and not schemathesis"]
        report = var / f"junit-{vendor}.xml"
        env = {
            "CONVEX_TEST_VAR": str(var),
            "CONVEX_EXPECT_VENDOR": vendor,
            "DATABASE_URL": SERVERS.get(vendor, ""),
            # nox points TMPDIR into .nox/, too deep for the workers' Unix
            # sockets (108 bytes at most).
            "TMPDIR": "/tmp",
        }
        session.log(f"--- the suite on {vendor}")
        session.run("python", "-m", "pytest", f"--junitxml={report}", *args, *marks, env=env)
        _check_complete(session, report, vendor)


def _check_complete(session: nox.Session, report: Path, vendor: str) -> None:
    total = skipped_here = 0
    for case in ET.parse(report).iter("testcase"):
        total += 1
        for skip in case.iter("skipped"):
            text = f"{skip.get('message', '')} {skip.text or ''}".lower()
            # A skip that names another vendor is expected; one that names
            # this server means the run did not test what it claims to.
            if any(word in text for word in VENDOR_WORDS.get(vendor, ())):
                skipped_here += 1
                session.warn(f"skipped on {vendor}: {case.get('name')}: {text.strip()}")
    if total == 0 or skipped_here:
        session.error(f"the {vendor} run is incomplete: {total} tests, {skipped_here} skipped")
    session.log(f"{total} tests ran on {vendor}")
