"""Query-string filters of the REST API (django-filter)."""

from __future__ import annotations

from datetime import UTC

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _
from django_filters import rest_framework as filters
from django_filters.fields import IsoDateTimeField, RangeField
from django_filters.widgets import DateRangeWidget
from drf_spectacular.utils import extend_schema_field
from rest_framework.filters import OrderingFilter

from .models import Kind, ScheduledFunction, State

#: The largest id a ``BigAutoField`` can hold; larger values would overflow the
#: database driver instead of matching nothing.
MAX_ID = 2**63 - 1


@extend_schema_field({"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID})
class IdFilter(filters.NumberFilter):
    """An exact match on a positive 64-bit id; anything else is a 400."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_ID)
        super().__init__(*args, **kwargs)


class _StorableIsoDateTimeField(IsoDateTimeField):
    """An ISO 8601 time that can also be expressed in UTC, as the database stores it."""

    def to_python(self, value):
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


class _TimeRangeField(RangeField):
    widget = DateRangeWidget

    def __init__(self, *args, **kwargs):
        fields = (_StorableIsoDateTimeField(), _StorableIsoDateTimeField())
        super().__init__(fields, *args, **kwargs)


class TimeRangeFilter(filters.IsoDateTimeFromToRangeFilter):
    """``<field>_after`` / ``<field>_before``: an inclusive range of ISO 8601 times."""

    field_class = _TimeRangeField


class ScheduledFunctionFilterSet(filters.FilterSet):
    """Filters for ``GET scheduled-functions/``.

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
    scheduled_time = TimeRangeFilter(
        help_text=_(
            "Scheduled time range: scheduled_time_after and/or scheduled_time_before "
            "(ISO 8601, inclusive)."
        )
    )
    completed_time = TimeRangeFilter(
        help_text=_(
            "Completed time range: completed_time_after and/or completed_time_before "
            "(ISO 8601, inclusive)."
        )
    )

    class Meta:
        model = ScheduledFunction
        fields = ["state", "kind", "name", "parent", "scheduled_time", "completed_time"]


class TiebreakOrderingFilter(OrderingFilter):
    """``?ordering=``, always ending in ``id`` so equal times keep a stable order.

    Cursor pagination pages by the first ordering field and needs rows with
    equal values in a fixed order, or a page boundary could skip or repeat one.
    """

    def get_ordering(self, request, queryset, view):
        ordering = list(super().get_ordering(request, queryset, view) or [])
        if ordering and not any(field.lstrip("-") in ("id", "pk") for field in ordering):
            ordering.append("-id" if ordering[0].startswith("-") else "id")
        return ordering
