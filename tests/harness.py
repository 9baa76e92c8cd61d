"""Worker processes, the one way: the tests, the fault campaign and the benchmark start,
watch, signal and reap ``manage.py`` subprocesses (``runscheduler``, or the benchmark
peer's ``db_worker``) through this module.

Only the standard library here: ``benchmarks/driver.py`` imports it under the
peer's interpreter too. A worker's output goes to a file, never a pipe, so a
chatty worker cannot block on a full pipe, and what it printed so far can be
read at any time without blocking (:meth:`Worker.peek`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Worker(subprocess.Popen):
    """A ``python -m django <command>`` process in a session of its own."""

    output_file: object
    log: Path | None

    def peek(self) -> str:
        """Everything it printed so far (read without blocking, from the start)."""
        fd = self.output_file.fileno()
        chunks, offset = [], 0
        while chunk := os.pread(fd, 1 << 20, offset):
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks).decode(errors="replace")

    def kill_now(self) -> int:
        """SIGKILL it (and anything it started) and reap it: a zombie still answers
        ``kill(pid, 0)``, and other workers judge a same-host worker dead by its pid."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        return self.wait()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for it to exit by itself; ``(exit code, output)``. SIGKILLed and an
        ``AssertionError`` if it takes longer than ``timeout`` seconds."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_now()
            raise AssertionError(f"worker did not exit in {timeout}s:\n{self.peek()}") from None
        return self.returncode, self.peek()

    def stop(self, timeout: float = 15, signum: int = signal.SIGTERM) -> int:
        """Ask it to stop (SIGTERM) and wait; SIGKILL it after ``timeout`` seconds."""
        if self.poll() is None:
            self.send_signal(signum)
            try:
                self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill_now()
        return self.returncode

    def tail(self, lines: int = 15) -> str:
        return "\n".join("    " + line for line in self.peek().splitlines()[-lines:])


def start(
    *command: str,
    settings: str = "tests.settings",
    python: str = sys.executable,
    cwd: Path | str = ROOT,
    pythonpath: Sequence[Path | str] = (ROOT,),
    env: Mapping[str, str | None] | None = None,
    log: Path | None = None,
) -> Worker:
    """Start ``python -m django <command>`` under ``settings``.

    ``pythonpath`` goes first on ``PYTHONPATH``; ``env`` adds to (a value of
    ``None`` removes from) this process's environment. Output goes to ``log``
    (appended) or to an anonymous file.
    """
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    full_env["DJANGO_SETTINGS_MODULE"] = settings
    full_env["PYTHONPATH"] = os.pathsep.join(
        [*map(str, pythonpath), *filter(None, [full_env.get("PYTHONPATH")])]
    )
    output = open(log, "ab") if log else tempfile.TemporaryFile()  # noqa: SIM115
    try:
        worker = Worker(
            [python, "-m", "django", *command],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        output.close()
        raise
    if log:
        output.close()
        output = open(log, "rb")  # noqa: SIM115  (kept for peek, closed with the object)
    worker.output_file, worker.log = output, log
    return worker


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it is true; ``AssertionError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# The test suite's shorthand: a worker on the test database pytest-django made.


def start_worker(*flags: str, **env: str) -> Worker:
    """``runscheduler --interval 0.05 *flags`` on the suite's test database."""
    from django.db import connection

    return start(
        "runscheduler",
        "--interval",
        "0.05",
        *flags,
        env={"CONVEX_TEST_DB_NAME": str(connection.settings_dict["NAME"]), **env},
    )


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """:meth:`Worker.finish`; for another ``Popen`` with a text pipe, by ``communicate``."""
    if isinstance(process, Worker):
        return process.finish(timeout)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"process did not exit in {timeout}s:\n{output}") from None
    return process.returncode, output


def kill(worker: Worker) -> int:
    return worker.kill_now()


def peek(worker: Worker) -> str:
    return worker.peek()
