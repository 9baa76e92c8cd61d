"""REST representations of scheduled functions and of a request to schedule one."""

from __future__ import annotations

import numbers
from typing import Any

from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import ScheduledFunction
from .registry import registry

__all__ = ["ScheduleSerializer", "ScheduledFunctionSerializer"]


def _json_number(field: serializers.Field, value: Any) -> float:
    # bool is an int subclass, and a string of digits is not a JSON number.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        field.fail("invalid", type=type(value).__name__)
    return value


@extend_schema_field({"type": "number", "minimum": 0, "example": 5000})
class DelayField(serializers.Field):
    """Milliseconds as a JSON number (not a string, not a bool)."""

    default_error_messages = {
        "invalid": _("delay_ms must be a number of milliseconds, not {type}."),
    }

    def to_internal_value(self, data: Any) -> float:
        return _json_number(self, data)

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "date-time", "example": "2030-01-01T09:00:00Z"},
            {"type": "number", "description": "Milliseconds since the Unix epoch."},
        ]
    }
)
class RunAtField(serializers.Field):
    """An ISO 8601 time or milliseconds since the Unix epoch."""

    default_error_messages = {
        "invalid": _(
            "run_at must be an ISO 8601 time or milliseconds since the Unix epoch, not {type}."
        ),
        "invalid_time": _("{value!r} is not a valid ISO 8601 time, e.g. 2030-01-01T09:00:00Z."),
    }

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str):
            try:
                parsed = parse_datetime(data)
            except ValueError:
                parsed = None
            if parsed is None:
                self.fail("invalid_time", value=data[:64])
            return parsed
        return _json_number(self, data)

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(OpenApiTypes.OBJECT)
class ArgsField(serializers.JSONField):
    """A JSON object of keyword arguments."""


class ScheduledFunctionSerializer(serializers.ModelSerializer):
    """A row of ``_scheduled_functions`` as the API shows it (read-only)."""

    args = ArgsField(read_only=True)
    parent = serializers.IntegerField(
        source="parent_id",
        read_only=True,
        allow_null=True,
        help_text=_("The id of the scheduled function that scheduled this one."),
    )

    class Meta:
        model = ScheduledFunction
        fields = [
            "id",
            "name",
            "kind",
            "state",
            "args",
            "scheduled_time",
            "creation_time",
            "started_time",
            "completed_time",
            "error",
            "attempts",
            "parent",
        ]
        read_only_fields = fields


_FUNCTION_HELP = _("The registered name of a public mutation or action.")


class ScheduleSerializer(serializers.Serializer):
    """``POST scheduled-functions/``: a registered public function, its args, and when.

    Give exactly one of ``delay_ms`` and ``run_at``. The view schedules through
    :mod:`convex_scheduler.scheduler`; the response is the new row.
    """

    function = serializers.CharField(
        max_length=255,
        trim_whitespace=False,
        help_text=_FUNCTION_HELP,
    )
    args = ArgsField(
        required=False,
        default=dict,
        help_text=_("Keyword arguments for the function (a JSON object); default {}."),
    )
    delay_ms = DelayField(
        required=False, help_text=_("Run this many milliseconds from now (0 or more).")
    )
    run_at = RunAtField(
        required=False,
        help_text=_(
            "Run at this time: ISO 8601 (a time without offset is read in the server's time "
            "zone) or milliseconds since the Unix epoch; within five years of now."
        ),
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Offer the public functions registered now, so the OpenAPI schema
        # lists them; internal ones are refused as if they did not exist.
        public = [entry.name for entry in registry.all() if not entry.internal]
        if public:
            fields["function"] = serializers.ChoiceField(
                choices=public,
                help_text=_FUNCTION_HELP,
                error_messages={
                    "invalid_choice": _(
                        "No public function is registered under the name {input!r}."
                    )
                },
            )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        has_delay, has_time = "delay_ms" in attrs, "run_at" in attrs
        if has_delay and has_time:
            message = _("Give either delay_ms or run_at, not both.")
            raise serializers.ValidationError({"delay_ms": [message], "run_at": [message]})
        if not has_delay and not has_time:
            message = _("Give delay_ms or run_at.")
            raise serializers.ValidationError({"delay_ms": [message], "run_at": [message]})
        return attrs

    def to_representation(self, instance: ScheduledFunction) -> dict[str, Any]:
        return ScheduledFunctionSerializer(instance, context=self.context).data
