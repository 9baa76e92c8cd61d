"""The admin's "Schedule a function" form.

Every rule is the scheduler's: the form reads the inputs into Python values,
hands them to :meth:`convex_scheduler.scheduler.Scheduler.schedule`, and puts
a refusal on the field that :attr:`SchedulingError.field` names.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from .exceptions import SchedulingError
from .registry import registry
from .scheduler import MAX_ARGS_DEPTH, json_nesting_exceeds, scheduler

__all__ = ["ArgsJSONField", "ScheduleForm", "function_choices"]


def function_choices(*, internal: bool = True) -> list[tuple[str, list[tuple[str, str]]]]:
    """Registered functions for a select box: public ones, then internal ones if ``internal``."""
    public: list[tuple[str, str]] = []
    hidden: list[tuple[str, str]] = []
    for entry in registry.all():
        (hidden if entry.internal else public).append(
            (entry.name, f"{entry.name} ({entry.kind.value})")
        )
    groups = []
    if public:
        groups.append((str(_("Public functions")), public))
    if hidden and internal:
        groups.append((str(_("Internal functions")), hidden))
    return groups


class _FunctionField(forms.ChoiceField):
    """A select of registered functions; which one may be scheduled is the scheduler's call."""

    def valid_value(self, value: Any) -> bool:
        return True


class _AsTyped(str):
    """What the user typed, shown back unchanged."""


class ArgsJSONField(forms.JSONField):
    """A JSON text area that refuses what would break the parser or the page.

    Nesting over the arguments' limit is refused before ``json`` recurses,
    numbers too long to convert are a form error, and an invalid input is
    shown back exactly as typed (never re-encoded, so a lone surrogate in it
    cannot break the page).
    """

    default_error_messages = {
        "too_deep": _("Arguments may nest arrays and objects at most %(depth)d levels deep."),
    }

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and json_nesting_exceeds(value, MAX_ARGS_DEPTH + 1):
            raise ValidationError(
                self.error_messages["too_deep"], code="too_deep", params={"depth": MAX_ARGS_DEPTH}
            )
        try:
            return super().to_python(value)
        except ValidationError:
            raise
        except (ValueError, RecursionError):
            # json refuses integers with more digits than Python converts.
            raise ValidationError(
                _("A number in the arguments has more than %(digits)d digits."),
                code="invalid",
                params={"digits": sys.get_int_max_str_digits()},
            ) from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        if self.disabled:
            return initial
        if data is None:
            return None
        return _AsTyped(data)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, _AsTyped):
            return value
        return json.dumps(value, ensure_ascii=False, cls=self.encoder)


class ScheduleForm(forms.Form):
    """Schedule a registered function with arguments, after a delay or at a time.

    Lists internal functions too when ``allow_internal`` (the admin passes the
    user's ``schedule_internal_function`` permission); the REST API never
    schedules them.
    """

    function = _FunctionField(label=_("Function"))
    args = ArgsJSONField(
        label=_("Arguments"),
        required=False,
        initial=dict,
        help_text=_('A JSON object of keyword arguments, e.g. {"name": "ann", "count": 3}.'),
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "vLargeTextField"}),
    )
    delay_ms = forms.FloatField(
        label=_("Delay (ms)"),
        required=False,
        help_text=_("Run this many milliseconds from now; 0 runs it as soon as possible."),
    )
    run_at = forms.SplitDateTimeField(
        label=_("Run at"),
        required=False,
        help_text=_("Or run at this time (in the current time zone). Give one of the two."),
    )

    def __init__(self, *args: Any, allow_internal: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.allow_internal = allow_internal
        self.fields["function"].choices = function_choices(internal=allow_internal)  # type: ignore[attr-defined]  # a ChoiceField
        # Imported here: the admin's widgets need the admin app.
        from django.contrib.admin.widgets import AdminSplitDateTime

        self.fields["run_at"].widget = AdminSplitDateTime()

    def schedule(self) -> int | None:
        """Schedule the validated input; return the new id, or ``None`` after adding errors."""
        data = self.cleaned_data
        try:
            return scheduler.schedule(
                data["function"],
                {} if data.get("args") is None else data["args"],
                delay_ms=data.get("delay_ms"),
                run_at=data.get("run_at"),
                allow_internal=self.allow_internal,
            )
        except SchedulingError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
            return None
