"""Sphinx configuration. Build with ``sphinx-build -W -b html docs docs/_build/html``."""

import os
import sys
from pathlib import Path

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# autodoc imports the app; the test settings configure Django without
# touching a database.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from convex_scheduler import __version__  # noqa: E402

project = "django-convex-scheduler"
author = "django-convex-scheduler contributors"
copyright = "2026, django-convex-scheduler contributors"
release = __version__
version = ".".join(__version__.split(".")[:2])

extensions = ["sphinx.ext.autodoc"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []


def check_reference_pages(app):
    """Warn (an error under ``-W``) when the reference pages drift from the code.

    Every key of ``DEFAULTS`` must be documented in settings.rst, every check id
    of ``checks.py`` in checks.rst, and every option of the app's management
    commands in commands.rst; nothing may be documented that no longer exists.
    """
    import re

    from django.core.management import load_command_class
    from django.core.management.base import BaseCommand
    from sphinx.util import logging as sphinx_logging

    from convex_scheduler import checks
    from convex_scheduler.conf import DEFAULTS

    log = sphinx_logging.getLogger("convex_scheduler.docs")
    src = Path(app.srcdir)

    text = (src / "settings.rst").read_text()
    documented = set(re.findall(r"^``([A-Z_]+)``\n   :Type:", text, re.MULTILINE))
    for key in sorted(set(DEFAULTS) - documented):
        log.warning("settings.rst does not document the setting %s", key)
    for key in sorted(documented - set(DEFAULTS)):
        log.warning("settings.rst documents %s, which is not a setting", key)

    text = (src / "checks.rst").read_text()
    documented = set(re.findall(r"^``(convex_scheduler\.[EW]\d+)``$", text, re.MULTILINE))
    ids = set(re.findall(r"id=\"(convex_scheduler\.[EW]\d+)\"", Path(checks.__file__).read_text()))
    for check_id in sorted(ids - documented):
        log.warning("checks.rst does not document the check %s", check_id)
    for check_id in sorted(documented - ids):
        log.warning("checks.rst documents %s, which checks.py no longer reports", check_id)

    text = (src / "commands.rst").read_text()
    common = {
        option
        for action in BaseCommand().create_parser("manage.py", "x")._actions
        for option in action.option_strings
    }
    commands = ("runscheduler", "clearscheduledfunctions", "scheduledfunctions", "schedulerhealth")
    for name in commands:
        parser = load_command_class("convex_scheduler", name).create_parser("manage.py", name)
        parsers = [parser]
        for action in parser._actions:
            # Subcommands (scheduledfunctions list/show/cancel) have options of their own.
            parsers.extend((getattr(action, "choices", None) and isinstance(action.choices, dict)
                           and action.choices.values()) or [])
        for each in parsers:
            for action in each._actions:
                for option in set(action.option_strings) - common:
                    if f"``{option}" not in text:
                        log.warning("commands.rst does not document %s %s", name, option)


def setup(app):
    app.connect("builder-inited", check_reference_pages)
