"""REST representations of scheduled functions and of a request to schedule one.

A list row carries a short preview of the arguments and the first line of the
error, each with its full size; the detail carries them in full. The previews
and sizes are computed by the database, so a list page never loads a row's
arguments (up to ``MAX_ARGS_BYTES`` each) into the web process.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import F, Func, IntegerField, QuerySet, TextField
from django.db.models.functions import Cast, Substr
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from .crons import describe as describe_cron
from .exceptions import SchedulingError
from .models import CronJob, ScheduledFunction
from .registry import registry
from .scheduler import scheduler

__all__ = [
    "PREVIEW_CHARS",
    "CronJobSerializer",
    "CronJobSummarySerializer",
    "CronRunSerializer",
    "ScheduleSerializer",
    "ScheduledFunctionSerializer",
    "ScheduledFunctionSummarySerializer",
    "cron_rows",
    "with_previews",
    "with_sizes",
]

#: Characters of JSON text a list row shows of its arguments, and at most of its error.
PREVIEW_CHARS = 200


class OctetLength(Func):
    """The length of a text expression in bytes (UTF-8), computed by the database."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra_context
        )


def _args_text() -> Cast:
    return Cast("args", output_field=TextField())


def with_sizes(queryset: QuerySet[ScheduledFunction]) -> QuerySet[ScheduledFunction]:
    """Annotate ``args_size`` and ``error_size``: bytes of JSON text and of the error."""
    return queryset.annotate(args_size=OctetLength(_args_text()), error_size=OctetLength("error"))


def with_previews(
    queryset: QuerySet[ScheduledFunction], chars: int = PREVIEW_CHARS
) -> QuerySet[ScheduledFunction]:
    """Rows without ``args`` and ``error``; their first characters and sizes instead.

    ``args_preview`` is the first ``chars`` characters of the arguments' JSON
    text as the database returns it; ``error_head`` the first ``4 * chars``
    characters of the error (the list shows its first line).
    """
    return with_sizes(
        queryset.defer("args", "error").annotate(
            args_preview=Substr(_args_text(), 1, chars),
            error_head=Substr("error", 1, chars * 4),
        )
    )


def first_line(text: str, chars: int = PREVIEW_CHARS) -> str:
    """The first line of ``text``, at most ``chars`` characters of it."""
    return text.split("\n", 1)[0].rstrip("\r")[:chars]


@extend_schema_field(OpenApiTypes.OBJECT)
class ArgsField(serializers.JSONField):
    """A JSON object of keyword arguments."""


class _Row(serializers.ModelSerializer):
    # A declared field named like Field.parent: DRF's metaclass takes it out
    # of the class body, so it never shadows the attribute at run time.
    parent = serializers.IntegerField(  # type: ignore[assignment]  # see above
        source="parent_id",
        read_only=True,
        allow_null=True,
        help_text=_("The id of the scheduled function that scheduled this one."),
    )
    args_size = serializers.IntegerField(
        read_only=True,
        help_text=_("Size of the arguments as JSON text, in bytes."),
    )
    error_size = serializers.IntegerField(
        read_only=True, help_text=_("Size of the error text in bytes; 0 when there is none.")
    )


_COMMON_FIELDS = [
    "id",
    "name",
    "kind",
    "state",
    "scheduled_time",
    "creation_time",
    "started_time",
    "completed_time",
    "attempts",
    "parent",
]


class ScheduledFunctionSummarySerializer(_Row):
    """A scheduled function as a list shows it: arguments and error as short previews."""

    args_preview = serializers.CharField(
        read_only=True,
        help_text=_(
            "The first 200 characters of the arguments as JSON text; compare with args_size "
            "to tell whether it is cut. The detail has them in full."
        ),
    )
    error_preview = serializers.SerializerMethodField(
        help_text=_(
            "The first line of the error (at most 200 characters); empty when there is none."
        )
    )

    class Meta:
        model = ScheduledFunction
        fields = [
            *_COMMON_FIELDS,
            "args_preview",
            "args_size",
            "error_preview",
            "error_size",
        ]
        read_only_fields = fields

    def get_error_preview(self, obj: Any) -> str:
        return first_line(getattr(obj, "error_head", None) or "")


class ScheduledFunctionSerializer(_Row):
    """A scheduled function in full, with its arguments and error (read-only)."""

    args = ArgsField(read_only=True)

    class Meta:
        model = ScheduledFunction
        fields = [*_COMMON_FIELDS, "args", "args_size", "error", "error_size"]
        read_only_fields = fields


_FUNCTION_HELP = _("The registered name of a public mutation or action.")


class CancelAllSerializer(serializers.Serializer):
    """How many scheduled functions a cancel-all canceled."""

    canceled = serializers.IntegerField(help_text=_("How many unfinished functions were canceled."))


class _FunctionNameField(serializers.ChoiceField):
    """Offers the public functions (for the schema and the browsable API); the scheduler decides."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=str(data)[:100])
        return data


@extend_schema_field({"type": "number", "minimum": 0, "example": 5000})
class DelayField(serializers.Field):
    """Milliseconds from now, a JSON number; the scheduler checks it."""

    def to_internal_value(self, data: Any) -> Any:
        return data

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
        # Numbers and everything else go to the scheduler, which says what it takes.
        return data

    def to_representation(self, value: Any) -> Any:
        return value


def _example_function(entries: list[Any]) -> str:
    """A function the browsable API's example body (``args`` {}) can schedule as it is."""
    for entry in entries:
        try:
            entry.bind_check({})
        except SchedulingError:
            continue
        return str(entry.name)
    return str(entries[0].name)


class ScheduleSerializer(serializers.Serializer):
    """POST scheduled-functions/: a registered public function, its args, and when.

    Give exactly one of delay_ms and run_at (null counts as not given). Every
    rule is the scheduler's: this serializer only reads JSON into Python values
    and puts the scheduler's refusal on the field it names. The response is
    the new scheduled function.
    """

    function = serializers.CharField(
        max_length=255, trim_whitespace=False, help_text=_FUNCTION_HELP
    )
    args = ArgsField(
        required=False,
        default=dict,
        initial=dict,
        help_text=_("Keyword arguments for the function (a JSON object); default {}."),
    )
    delay_ms = DelayField(
        required=False,
        allow_null=True,
        initial=0,
        help_text=_("Run this many milliseconds from now (0 or more, at most five years)."),
    )
    run_at = RunAtField(
        required=False,
        allow_null=True,
        help_text=_(
            "Or run at this time: ISO 8601 (a time without offset is read in the server's time "
            "zone) or milliseconds since the Unix epoch; within five years of now."
        ),
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # Offer the public functions registered now, so the OpenAPI schema
        # lists them and the browsable API's example body is a valid request.
        entries = [entry for entry in registry.all() if not entry.internal]
        if entries:
            fields["function"] = _FunctionNameField(
                choices=[entry.name for entry in entries],
                initial=_example_function(entries),
                help_text=_FUNCTION_HELP,
                error_messages={
                    "invalid_choice": _(
                        "No public function is registered under the name {input!r}."
                    )
                },
            )
        return fields

    def create(self, validated_data: dict[str, Any]) -> ScheduledFunction:
        try:
            pk = scheduler.schedule(
                validated_data["function"],
                validated_data.get("args"),
                delay_ms=validated_data.get("delay_ms"),
                run_at=validated_data.get("run_at"),
                allow_internal=False,
            )
        except SchedulingError as exc:
            key = exc.field or api_settings.NON_FIELD_ERRORS_KEY
            raise serializers.ValidationError({key: [str(exc)]}) from None
        return with_sizes(ScheduledFunction.objects.all()).get(pk=pk)

    def to_representation(self, instance: ScheduledFunction) -> dict[str, Any]:
        return ScheduledFunctionSerializer(instance, context=self.context).data


# Crons ----------------------------------------------------------------------

#: Runs of a cron the detail shows, newest first.
RECENT_RUNS = 5


def cron_rows(queryset: QuerySet[CronJob], *, previews: bool) -> QuerySet[CronJob]:
    """Crons with the state of their last run and the size of their arguments.

    With ``previews`` (a list), the arguments are left in the database and
    only their first :data:`PREVIEW_CHARS` characters are loaded.
    """
    queryset = queryset.annotate(
        last_run_state=F("last_run__state"), args_size=OctetLength(_args_text())
    )
    if previews:
        queryset = queryset.defer("args").annotate(
            args_preview=Substr(_args_text(), 1, PREVIEW_CHARS)
        )
    return queryset


class _CronRow(serializers.ModelSerializer):
    schedule = serializers.SerializerMethodField(
        help_text=_('The schedule in words, e.g. "every day at 08:30 (Asia/Tokyo)".')
    )
    interval_seconds = serializers.SerializerMethodField(
        help_text=_("Seconds between two ticks of an interval cron; null for a cron expression.")
    )
    next_tick_local = serializers.SerializerMethodField(
        help_text=_("The next tick in the cron's time zone (ISO 8601); null while paused.")
    )
    removed = serializers.SerializerMethodField(
        help_text=_("Whether this code cron was removed from the code (it no longer runs).")
    )
    last_run = serializers.IntegerField(
        source="last_run_id",
        read_only=True,
        allow_null=True,
        help_text=_("The id of the scheduled function of the last run."),
    )
    last_run_state = serializers.CharField(
        read_only=True, allow_null=True, help_text=_("The state of the last run.")
    )
    args_size = serializers.IntegerField(
        read_only=True, help_text=_("Size of the arguments as JSON text, in bytes.")
    )

    def get_schedule(self, obj: CronJob) -> str:
        return describe_cron(obj)

    def get_interval_seconds(self, obj: CronJob) -> float | None:
        return obj.interval.total_seconds() if obj.interval is not None else None

    def get_next_tick_local(self, obj: CronJob) -> str | None:
        if obj.next_tick is None:
            return None
        try:
            return obj.next_tick.astimezone(ZoneInfo(obj.timezone)).isoformat()
        except (ZoneInfoNotFoundError, ValueError):
            return None

    def get_removed(self, obj: CronJob) -> bool:
        return obj.removed_time is not None


_CRON_FIELDS = [
    "name",
    "function",
    "kind",
    "source",
    "schedule",
    "schedule_type",
    "interval_seconds",
    "expression",
    "timezone",
    "paused",
    "removed",
    "next_tick",
    "next_tick_local",
    "last_tick",
    "last_run",
    "last_run_state",
    "run_count",
    "missed_count",
    "overlap_count",
    "created_time",
    "updated_time",
]


class CronJobSummarySerializer(_CronRow):
    """A cron as a list shows it: its arguments as a short preview."""

    args_preview = serializers.CharField(
        read_only=True,
        help_text=_(
            "The first 200 characters of the arguments as JSON text; compare with args_size "
            "to tell whether it is cut. The detail has them in full."
        ),
    )

    class Meta:
        model = CronJob
        fields = [*_CRON_FIELDS, "args_preview", "args_size"]
        read_only_fields = fields


class CronRunSerializer(serializers.ModelSerializer):
    """One run of a cron: the scheduled function of one tick."""

    class Meta:
        model = ScheduledFunction
        fields = ["id", "state", "scheduled_time", "completed_time"]
        read_only_fields = fields


class CronJobSerializer(_CronRow):
    """A cron in full: its arguments and its last runs."""

    args = ArgsField(read_only=True)
    recent_runs = serializers.SerializerMethodField(
        help_text=_("The last 5 runs, newest first (finished runs are kept for RETENTION).")
    )

    class Meta:
        model = CronJob
        fields = [*_CRON_FIELDS, "args", "args_size", "recent_runs"]
        read_only_fields = fields

    @extend_schema_field(CronRunSerializer(many=True))
    def get_recent_runs(self, obj: CronJob) -> list[dict[str, Any]]:
        runs = ScheduledFunction.objects.filter(cron=obj.name).order_by("-scheduled_time")
        return list(CronRunSerializer(runs[:RECENT_RUNS], many=True).data)
