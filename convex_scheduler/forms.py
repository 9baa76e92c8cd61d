"""Scheduling from the web face: the admin's form and the request path shared with the API.

Both the REST API and the admin schedule through :func:`schedule_request`, which
hands every rule to :mod:`convex_scheduler.scheduler` and only decides which
input an error belongs to.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .exceptions import SchedulingError
from .registry import RegisteredFunction, registry
from .scheduler import scheduler, validate_args

__all__ = ["ScheduleForm", "ScheduleRequestError", "schedule_request"]


class ScheduleRequestError(Exception):
    """A request to schedule was refused; ``field`` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def resolve_function(name: str, *, allow_internal: bool) -> RegisteredFunction:
    """The registration for ``name``, or a :class:`ScheduleRequestError` on ``function``.

    Without ``allow_internal`` an internal function is refused with the very
    message an unknown name gets, so clients cannot tell that it exists.
    """
    entry = registry.get(name)
    if entry is None or (entry.internal and not allow_internal):
        raise ScheduleRequestError(
            "function", f"No public function is registered under the name {name!r}."
        )
    return entry


def schedule_request(
    function: str,
    args: Any,
    *,
    delay_ms: float | None = None,
    run_at: datetime | float | None = None,
    allow_internal: bool = False,
) -> int:
    """Schedule ``function`` with ``args`` after ``delay_ms`` or at ``run_at`` (exactly one).

    Returns the new row's id. Raises :class:`ScheduleRequestError` naming the
    field at fault: ``function``, ``args``, ``delay_ms`` or ``run_at``.
    """
    if (delay_ms is None) == (run_at is None):
        raise ValueError("Pass exactly one of delay_ms and run_at.")
    entry = resolve_function(function, allow_internal=allow_internal)
    try:
        validate_args(entry, args)
    except SchedulingError as exc:
        raise ScheduleRequestError("args", str(exc)) from None
    # Function and arguments passed the scheduler's own checks above, so what
    # the scheduler refuses now is the time.
    try:
        if delay_ms is not None:
            return scheduler.run_after(delay_ms, entry.name, args)
        return scheduler.run_at(run_at, entry.name, args)
    except SchedulingError as exc:
        raise ScheduleRequestError(
            "delay_ms" if delay_ms is not None else "run_at", str(exc)
        ) from None


def function_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Registered functions for a select box, public and internal in two groups."""
    public: list[tuple[str, str]] = []
    internal: list[tuple[str, str]] = []
    for entry in registry.all():
        (internal if entry.internal else public).append(
            (entry.name, f"{entry.name} ({entry.kind.value})")
        )
    groups = []
    if public:
        groups.append((str(_("Public functions")), public))
    if internal:
        groups.append((str(_("Internal functions")), internal))
    return groups


class ScheduleForm(forms.Form):
    """The admin's "Schedule a function" form.

    Lists every registered function, internal ones included (staff may run
    them; the REST API may not). Validation is the API's: :meth:`schedule`
    goes through :func:`schedule_request`.
    """

    function = forms.ChoiceField(label=_("Function"), choices=function_choices)
    args = forms.JSONField(
        label=_("Arguments"),
        required=False,
        initial=dict,
        help_text=_('A JSON object of keyword arguments, e.g. {"name": "ann", "count": 3}.'),
        widget=forms.Textarea(attrs={"rows": 6, "cols": 60, "class": "vLargeTextField"}),
    )
    delay_ms = forms.FloatField(
        label=_("Delay (ms)"),
        required=False,
        min_value=0,
        help_text=_("Run this many milliseconds from now; 0 runs it as soon as possible."),
    )
    run_at = forms.SplitDateTimeField(
        label=_("Run at"),
        required=False,
        help_text=_("Or run at this time (in the current time zone). Give one of the two."),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Imported here: the API imports this module and must not need the admin.
        from django.contrib.admin.widgets import AdminSplitDateTime

        self.fields["run_at"].widget = AdminSplitDateTime()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        has_delay = cleaned.get("delay_ms") is not None
        has_time = cleaned.get("run_at") is not None
        if "delay_ms" in self.errors or "run_at" in self.errors:
            return cleaned
        if has_delay and has_time:
            raise forms.ValidationError(
                _("Give either a delay or a time, not both."), code="both_times"
            )
        if not has_delay and not has_time:
            raise forms.ValidationError(_("Give a delay or a time."), code="no_time")
        return cleaned

    def schedule(self) -> int | None:
        """Schedule the validated input; return the new id, or ``None`` after adding errors."""
        data = self.cleaned_data
        args = {} if data.get("args") is None else data["args"]
        try:
            return schedule_request(
                data["function"],
                args,
                delay_ms=data.get("delay_ms"),
                run_at=data.get("run_at"),
                allow_internal=True,
            )
        except ScheduleRequestError as exc:
            self.add_error(exc.field, exc.message)
            return None
