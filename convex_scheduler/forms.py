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

from .crons import default_zone_name, define
from .exceptions import SchedulingError
from .models import CronJob, ScheduleType
from .registry import registry
from .scheduler import MAX_ARGS_DEPTH, json_nesting_exceeds, scheduler

__all__ = ["ArgsJSONField", "CronForm", "ScheduleForm", "function_choices"]


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


class CronForm(forms.ModelForm):
    """Create or edit a run-time cron in the admin.

    Every rule is :func:`convex_scheduler.crons.define`'s; the admin saves
    through :func:`convex_scheduler.crons.register`. Internal functions are
    offered when ``allow_internal`` (the ``schedule_internal_function``
    permission, as for the schedule form).
    """

    allow_internal = False

    function = _FunctionField(label=_("Function"))
    args = ArgsJSONField(
        label=_("Arguments"),
        required=False,
        initial=dict,
        help_text=_('A JSON object of keyword arguments, e.g. {"name": "ann", "count": 3}.'),
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "class": "vLargeTextField"}),
    )

    class Meta:
        model = CronJob
        fields = ["name", "function", "args", "schedule_type", "interval", "expression", "timezone"]
        help_texts = {
            "interval": _('For an interval cron: "00:05:00" is every five minutes.'),
            "expression": _('For a cron expression: "30 8 * * 1-5" is 08:30 on weekdays.'),
            "timezone": _("An IANA name such as Europe/Paris; the expression is read in it."),
        }

    #: SchedulingError.field → the form field that shows the message.
    FIELDS = {"cron": "expression", "day": "expression", "hour": "expression"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A read-only page (a code cron) has none of the fields.
        if "function" in self.fields:
            self.fields["function"].choices = function_choices(internal=self.allow_internal)  # type: ignore[attr-defined]  # a ChoiceField
        if "timezone" in self.fields:
            self.fields["timezone"].initial = _default_zone()
        for name in ("expression", "interval"):
            if name in self.fields:
                self.fields[name].required = False

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        interval, expression = data.get("interval"), data.get("expression") or ""
        if data.get("schedule_type") == ScheduleType.INTERVAL:
            if expression:
                self.add_error("expression", _("An interval cron has no expression."))
            expression = None
        else:
            if interval is not None:
                self.add_error("interval", _("A cron expression has no interval."))
            interval = None
        try:
            self.definition = define(
                data.get("name", self.instance.name),
                data["function"],
                {} if data.get("args") is None else data["args"],
                interval=interval,
                cron=expression,
                timezone=data.get("timezone") or None,
            )
            entry = registry.get(self.definition.function)
            if entry is not None and entry.internal and not self.allow_internal:
                # The same words as for an unknown name, as in the schedule form.
                raise SchedulingError(
                    _("No public function is registered under the name %(name)r.")
                    % {"name": data["function"]},
                    field="function",
                )
        except SchedulingError as exc:
            field = self.FIELDS.get(exc.field or "", exc.field)
            self.add_error(field if field in self.fields else None, str(exc))
        return data


def _default_zone() -> str:
    return default_zone_name()
