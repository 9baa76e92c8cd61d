"""Query-string filters of the REST API (django-filter)."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField
from drf_spectacular.utils import extend_schema_field
from rest_framework.filters import OrderingFilter

from .exceptions import SchedulingError
from .models import Kind, ScheduledFunction, State
from .scheduler import parse_id

#: The largest id a ``BigAutoField`` can hold; larger values would overflow the
#: database driver instead of matching nothing.
MAX_ID = 2**63 - 1


class _IdField(forms.Field):
    """A scheduled function id, checked by the scheduler's :func:`parse_id`."""

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values:
            return None
        try:
            return parse_id(str(value).strip())
        except SchedulingError as exc:
            raise ValidationError(str(exc), code="invalid") from None


@extend_schema_field({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID})
class IdFilter(filters.Filter):
    """An exact match on a positive 64-bit id; anything else is a 400."""

    field_class = _IdField


class _StorableIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 time that can also be expressed in UTC, as the database stores it."""

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value is not None:
            # In UTC: PostgreSQL refuses offsets beyond ±15:59, which ISO 8601 allows.
            try:
                value = value.astimezone(UTC)
            except (OverflowError, ValueError):
                raise ValidationError(
                    _("Enter a time between the years 1 and 9999 in UTC."), code="invalid"
                ) from None
        return value


class TimeFilter(filters.IsoDateTimeFilter):
    """One end of an inclusive range of ISO 8601 times; errors name its own parameter."""

    field_class = _StorableIsoDateTimeField


class ScheduledFunctionFilterSet(filters.FilterSet):
    """Filters for GET scheduled-functions/.

    Every filter maps onto an indexed column or a range of one, so a filtered
    page stays an index scan on large tables.
    """

    state = filters.MultipleChoiceFilter(
        choices=State.choices, help_text=_("One or more states (repeat the parameter).")
    )
    kind = filters.ChoiceFilter(choices=Kind.choices)
    name = filters.CharFilter(
        max_length=255, help_text=_("The registered name of the function (exact match).")
    )
    parent = IdFilter(
        field_name="parent_id", help_text=_("The id of the function that scheduled these.")
    )
    scheduled_time_after = TimeFilter(
        field_name="scheduled_time",
        lookup_expr="gte",
        help_text=_("Scheduled at or after this time (ISO 8601)."),
    )
    scheduled_time_before = TimeFilter(
        field_name="scheduled_time",
        lookup_expr="lte",
        help_text=_("Scheduled at or before this time (ISO 8601)."),
    )
    completed_time_after = TimeFilter(
        field_name="completed_time",
        lookup_expr="gte",
        help_text=_("Finished at or after this time (ISO 8601)."),
    )
    completed_time_before = TimeFilter(
        field_name="completed_time",
        lookup_expr="lte",
        help_text=_("Finished at or before this time (ISO 8601)."),
    )

    class Meta:
        model = ScheduledFunction
        fields = [
            "state",
            "kind",
            "name",
            "parent",
            "scheduled_time_after",
            "scheduled_time_before",
            "completed_time_after",
            "completed_time_before",
        ]


class TiebreakOrderingFilter(OrderingFilter):
    """?ordering=, always ending in id so equal times keep a stable order.

    Cursor pagination pages by the first ordering field and needs rows with
    equal values in a fixed order, or a page boundary could skip or repeat one.
    """

    def get_ordering(self, request: Any, queryset: Any, view: Any) -> list[str]:
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if ordering and not any(field.lstrip("-") in ("id", "pk") for field in ordering):
            ordering.append("-id" if ordering[0].startswith("-") else "id")
        return ordering
