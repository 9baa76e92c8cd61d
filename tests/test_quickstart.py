"""docs/quickstart.rst runs as written, block by block, in a fresh project.

The page is read top to bottom and every ``.. code-block::`` is executed in
a new temporary directory, as a reader would, with the interpreter running
these tests first on ``PATH`` (so ``python`` and ``django-admin`` are the ones
that have this package installed). The project uses its own SQLite file,
whatever ``DATABASE_URL`` the suite runs with. The conventions, which the
page must follow (a block that fits none of them fails the test, so nothing
is skipped silently):

``console`` / ``shell`` blocks
    Each line starting with ``$`` is a command, run by ``bash`` in the
    session's current directory; it must exit with status 0. ``cd DIR``
    changes that directory for the commands and blocks that follow. A command
    whose comment says ``runs until Ctrl-C`` is left running until it prints
    its first line, then gets SIGINT (as from Ctrl-C) and must exit with
    status 0.

``python`` blocks start with a comment that says where they go:
    ``# PATH`` -- the block is the whole file PATH (relative to the current
    directory), which is written, replacing what is there;
    ``# PATH: add at the end`` -- the block is appended to the existing file
    PATH; ``# python manage.py shell`` -- the block runs with
    ``python manage.py shell -c`` and must exit with status 0.

``text`` blocks
    Right after a shell block or a command, the output it must end with
    (compared line by line, ignoring trailing whitespace).

The README's "Add it to your project" section shows the same code: every
code block there must be a block of this page.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "quickstart.rst"
README = ROOT / "README.md"

UNTIL_CTRL_C = "runs until Ctrl-C"
SHELL_MARKER = "# python manage.py shell"
FILE_MARKER = re.compile(r"^# (?P<path>[\w./-]+\.py)(?P<append>: add at the end)?$")
DIRECTIVE = re.compile(r"^(?P<indent> *)\.\. code-block:: *(?P<language>\S+) *$")


@dataclass
class Block:
    language: str
    code: str
    line: int  # where the directive is, for messages

    def where(self) -> str:
        return f"{QUICKSTART.name}:{self.line}"


def code_blocks(text: str) -> list[Block]:
    """Every ``.. code-block::`` of a reST text, in order, with its body dedented."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = DIRECTIVE.match(lines[index])
        index += 1
        if not match:
            continue
        start = index
        indent = len(match["indent"])
        body: list[str] = []
        # Options (":linenos:") come first, then a blank line, then the body.
        while index < len(lines) and lines[index].strip().startswith(":"):
            index += 1
        while index < len(lines) and (
            not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
        ):
            body.append(lines[index])
            index += 1
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        blocks.append(Block(match["language"], code, start))
    return blocks


def readme_blocks(text: str) -> list[str]:
    """The fenced code blocks of the README's "Add it to your project" section."""
    section = text.split("## Add it to your project", 1)[1].split("\n## ", 1)[0]
    return [code.strip("\n") + "\n" for code in re.findall(r"```\w*\n(.*?)```", section, re.S)]


class Session:
    """A reader's terminal: a current directory, an environment, a transcript."""

    def __init__(self, directory: Path) -> None:
        self.cwd = directory
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CONVEX_TEST_DB_NAME")
            and not key.startswith("CONVEX_")
        }
        self.env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{self.env.get('PATH', '')}"
        # The package under test, whether or not it is installed into the venv.
        self.env["PYTHONPATH"] = str(ROOT)
        self.env["PYTHONUNBUFFERED"] = "1"
        self.transcript: list[str] = []

    def run(self, argv: list[str], block: Block, what: str) -> str:
        result = subprocess.run(
            argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300
        )
        self.transcript.append(result.stdout + result.stderr)
        assert result.returncode == 0, (
            f"{block.where()}: {what} exited with {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
        return result.stdout

    def command(self, line: str, block: Block) -> str:
        if line.startswith("cd "):
            self.cwd = (self.cwd / line[3:].strip()).resolve()
            assert self.cwd.is_dir(), f"{block.where()}: no directory {self.cwd}"
            return ""
        if UNTIL_CTRL_C in line:
            return self.interrupt(line, block)
        return self.run(["bash", "-c", line], block, f"$ {line}")

    def interrupt(self, line: str, block: Block) -> str:
        process = subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        first_line = threading.Event()
        output: list[str] = []

        def read() -> None:
            for text in process.stdout:
                output.append(text)
                first_line.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert first_line.wait(120), f"{block.where()}: $ {line} printed nothing in 120 s"
            os.killpg(process.pid, signal.SIGINT)
            returncode = process.wait(60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        reader.join(10)
        text = "".join(output)
        self.transcript.append(text)
        assert returncode == 0, (
            f"{block.where()}: $ {line} exited with {returncode} on Ctrl-C:\n{text}"
        )
        return text


def run_page(blocks: list[Block], session: Session) -> None:
    """Execute the blocks in order, following the conventions of the module docstring."""
    last_output: tuple[Block, str] | None = None
    for block in blocks:
        if block.language in ("console", "shell"):
            commands = [
                line[1:].strip() for line in block.code.splitlines() if line.startswith("$")
            ]
            assert commands, f"{block.where()}: a console block without a $ command"
            for line in commands:
                last_output = (block, session.command(line, block))
        elif block.language == "python":
            first, _, rest = block.code.partition("\n")
            if first == SHELL_MARKER:
                stdout = session.run(
                    [sys.executable, "manage.py", "shell", "-c", rest],
                    block,
                    "manage.py shell -c",
                )
                last_output = (block, stdout)
                continue
            match = FILE_MARKER.match(first)
            assert match, (
                f"{block.where()}: a python block must start with '# path/to/file.py', "
                f"'# path/to/file.py: add at the end' or {SHELL_MARKER!r}, not {first!r}"
            )
            path = session.cwd / match["path"]
            if match["append"]:
                assert path.is_file(), f"{block.where()}: nothing to add to, {path} is missing"
                path.write_text(path.read_text() + "\n\n" + rest)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(rest)
            last_output = None
        elif block.language == "text":
            assert last_output is not None, f"{block.where()}: expected output after no command"
            ran, stdout = last_output
            expected = [line.rstrip() for line in block.code.splitlines()]
            actual = [line.rstrip() for line in stdout.rstrip("\n").splitlines()]
            assert actual[-len(expected) :] == expected, (
                f"{block.where()}: the output of the block at {ran.where()} should end with\n"
                + "\n".join(expected)
                + "\nbut was\n"
                + stdout
            )
            last_output = None
        else:
            pytest.fail(f"{block.where()}: no convention to run a {block.language!r} block")


def test_parser_reads_directives_options_and_bodies():
    text = textwrap.dedent(
        """\
        Intro

        .. code-block:: python
           :caption: x

           # a.py
           def f():

               return 1

        Prose.

           .. code-block:: console

              $ ls
        back out
        """
    )
    blocks = code_blocks(text)
    assert [(block.language, block.code) for block in blocks] == [
        ("python", "# a.py\ndef f():\n\n    return 1\n"),
        ("console", "$ ls\n"),
    ]


def test_readme_quickstart_shows_the_quickstart_code():
    page = [block.code for block in code_blocks(QUICKSTART.read_text())]
    shown = readme_blocks(README.read_text())
    assert shown, "the README has no code in 'Add it to your project'"
    for code in shown:
        assert code in page, f"README block not in docs/quickstart.rst:\n{code}"


@pytest.mark.subprocess
def test_quickstart_runs_as_written_in_a_fresh_project(tmp_path):
    blocks = code_blocks(QUICKSTART.read_text())
    assert len(blocks) >= 8, "the quickstart lost its code blocks"
    session = Session(tmp_path)

    run_page(blocks, session)

    # The page walked the reader into the project it created.
    database = session.cwd / "db.sqlite3"
    assert (session.cwd / "manage.py").is_file()
    assert database.is_file(), "the quickstart's project has no SQLite database"
    with sqlite3.connect(database) as db:
        messages = db.execute("SELECT author, body FROM chat_message").fetchall()
        rows = db.execute(
            "SELECT name, state, parent_id FROM convex_scheduler_scheduledfunction ORDER BY id"
        ).fetchall()
    assert messages == [("ann", "hi")]
    assert rows == [
        ("chat.functions:send", "success", None),
        ("chat.functions:send", "canceled", None),
        ("chat.functions:destroy", "pending", 1),
        ("chat:notify", "success", 1),
    ]
    # notify printed to the output of whichever worker ran it.
    assert "New message from ann: hi" in "".join(session.transcript)
