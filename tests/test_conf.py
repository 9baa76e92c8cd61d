from datetime import timedelta

import pytest
from django.test import override_settings
from rest_framework.permissions import AllowAny

from convex_scheduler.conf import DEFAULTS, scheduler_settings


def test_defaults():
    assert scheduler_settings.RETENTION == timedelta(days=7)
    assert scheduler_settings.MAX_SCHEDULED_PER_FUNCTION == 1000
    assert scheduler_settings.MAX_ARGS_BYTES == 4 * 1024 * 1024
    # None: the model permissions of each endpoint's model (tests/test_permissions.py).
    assert scheduler_settings.API_PERMISSION_CLASSES is None


def test_override_is_seen_and_undone():
    with override_settings(
        CONVEX_SCHEDULER={
            "RETENTION": timedelta(days=1),
            "API_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
        }
    ):
        assert scheduler_settings.RETENTION == timedelta(days=1)
        assert scheduler_settings.API_PERMISSION_CLASSES == [AllowAny]
        assert scheduler_settings.MAX_ARGS_BYTES == DEFAULTS["MAX_ARGS_BYTES"]
    assert scheduler_settings.RETENTION == timedelta(days=7)


def test_unknown_names_raise():
    with pytest.raises(AttributeError, match="Unknown convex_scheduler setting 'NOPE'"):
        _ = scheduler_settings.NOPE
