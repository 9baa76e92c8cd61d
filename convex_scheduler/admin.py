"""Admin pages: watch scheduled functions, cancel them, schedule new ones; crons.

Rows are read-only here. Every change goes through the domain API: single
cancels and new schedules through :mod:`convex_scheduler.scheduler`, the bulk
action through the QuerySet's ``cancel()`` transition. Nothing here runs a
function.

The changelist is built for large tables: no full-table ``COUNT(*)`` per page
(a capped count instead), no facet counts, no ``DISTINCT`` for the name filter
or the date hierarchy, and the large ``args``/``error`` columns are deferred.
The detail page loads at most :data:`ARGS_SHOWN` characters of either; the
full arguments and error are a download away.

The Crons page lists every cron with its schedule in words, next run and last
runs; code crons are read-only, run-time crons are created, edited and deleted
through :mod:`convex_scheduler.crons`, and any cron can be paused and resumed.

Permissions are Django's: ``view`` to look, ``add`` to schedule, ``change`` to
cancel, and ``schedule_internal_function`` to schedule internal functions. Any
query string, form or action input the pages do not produce is answered with
a 4xx page that says what was wrong, never a server error.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.options import (
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    TO_FIELD_VAR,
    IncorrectLookupParameters,
)
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    ChangeList,
)
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.core.paginator import Paginator
from django.db.models import Count, F, QuerySet, TextField
from django.db.models.functions import Cast, Substr
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotAllowed,
)
from django.shortcuts import redirect
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext, ngettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from . import clock, crons
from .conf import scheduler_settings
from .exceptions import SchedulingError
from .forms import CronForm, ScheduleForm
from .models import (
    CronJob,
    ScheduledFunction,
    ScheduledFunctionQuerySet,
    SchedulerWorker,
    State,
)
from .registry import registry
from .scheduler import parse_id, scheduler
from .serializers import OctetLength

#: The permission to schedule internal functions from the admin's form.
SCHEDULE_INTERNAL_PERMISSION = "convex_scheduler.schedule_internal_function"

#: Rows a changelist counts at most; beyond it, the page says "more than".
COUNT_CAP = 10_000
#: Children listed on a detail page; the rest are a filtered changelist away.
CHILDREN_SHOWN = 20
#: Characters of the arguments' JSON text, and of the error, a detail page loads
#: and shows; the rest is in the download.
ARGS_SHOWN = 64 * 1024
#: Arguments up to this many bytes are pretty-printed (indented); larger ones
#: are shown as stored, in a collapsed box.
PRETTY_MAX_BYTES = 16 * 1024
#: A pretty-printed text longer than this (deep nesting indents a lot) is shown
#: as stored instead.
PRETTY_MAX_CHARS = 128 * 1024

#: Runs of each cron the crons list shows.
RECENT_CRON_RUNS = 5

_ACTIVE_STATES = (State.PENDING, State.IN_PROGRESS)


class CappedCountPaginator(Paginator):
    """A paginator that counts at most :data:`COUNT_CAP` rows.

    ``SELECT COUNT(*)`` over millions of rows on every changelist page is the
    usual way a busy admin falls over; counting a ``LIMIT``-ed subquery costs
    at most ``COUNT_CAP`` index entries. Pages past the cap are reached by
    filtering or through the date hierarchy.
    """

    @cached_property
    def count(self) -> int:
        queryset: QuerySet = self.object_list  # type: ignore[assignment]  # the admin pages querysets
        counted = queryset.order_by()[: COUNT_CAP + 1].count()
        self.truncated = counted > COUNT_CAP
        return min(counted, COUNT_CAP)


class ScheduledFunctionChangeList(ChangeList):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Rows are read-only: "Select scheduled function to change" would mislead.
        if not self.is_popup:
            self.title = str(capfirst(self.opts.verbose_name_plural))

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        # Arguments may be megabytes per row; the list never shows them.
        return super().get_queryset(request, exclude_parameters).defer("args", "error")


class _Refused(Exception):
    """An input the admin pages refuse: answered with ``status`` and ``message``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _ExplainsBadLookups:
    """A changelist whose invalid filter or page is a 400 saying what was wrong.

    Django would redirect to ``?e=1`` and show "Database error" instead.
    """

    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        try:
            return super().get_changelist_instance(request)  # type: ignore[misc]  # ModelAdmin's
        except IncorrectLookupParameters as exc:
            raise _Refused(
                gettext("The list cannot show this page or filter: %(error)s")
                % {"error": exc or gettext("invalid parameters")}
            ) from None


class RegisteredNameFilter(admin.SimpleListFilter):
    """Filter by function name, offering the registered names.

    Asking the database for its distinct names would scan the whole table.
    """

    title = _("function")
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(entry.name, entry.name) for entry in registry.all()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value:
            return queryset.filter(name=value)
        return queryset


def _is_id(value: Any) -> bool:
    try:
        parse_id(value)
    except SchedulingError:
        return False
    return True


def _when(value: datetime | None) -> str | None:
    """A time to the second, in the current time zone, with the exact time as a tooltip."""
    if value is None:
        return None
    local = timezone.localtime(value)
    return format_html(
        '<time datetime="{}" title="{}">{}, {}</time>',
        value.astimezone(UTC).isoformat(),
        local.isoformat(),
        formats.date_format(local, "DATE_FORMAT"),
        formats.time_format(local, "H:i:s"),
    )


def _date_hierarchy_problem(field: str, params: dict[str, str]) -> str | None:
    """Why the date drill-down parameters cannot be a database range, or ``None``."""
    year, month, day = (params.get(f"{field}__{part}") for part in ("year", "month", "day"))
    if year is None:
        if month is not None or day is not None:
            return gettext("%(field)s__month and __day need %(field)s__year.") % {"field": field}
        return None
    if day is not None and month is None:
        return gettext("%(field)s__day needs %(field)s__month.") % {"field": field}
    parts = [(year, 4), (month or "1", 2), (day or "1", 2)]
    if not all(value.isascii() and value.isdigit() and len(value) <= n for value, n in parts):
        return gettext("A year, month and day are numbers, e.g. ?%(field)s__year=2030.") % {
            "field": field
        }
    try:
        start = datetime(int(year), int(month or 1), int(day or 1))
        if day is not None:
            end = start + timedelta(days=1)
        elif month is not None:
            end = (start + timedelta(days=32)).replace(day=1)
        else:
            end = start.replace(year=start.year + 1)
        for bound in (start, end):
            timezone.make_aware(bound).astimezone(UTC)
    except (OverflowError, ValueError):
        return gettext("There is no such date, or it is too near the years 1 or 9999.")
    return None


def _duration(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds < 1:
        return _("%(ms)d ms") % {"ms": round(seconds * 1000)}
    if seconds < 120:
        return _("%(s).1f s") % {"s": seconds}
    if seconds < 2 * 3600:
        return _("%(m)d min") % {"m": seconds // 60}
    if seconds < 2 * 86400:
        return _("%(h).1f h") % {"h": seconds / 3600}
    return _("%(d).1f days") % {"d": seconds / 86400}


@admin.register(ScheduledFunction)
class ScheduledFunctionAdmin(_ExplainsBadLookups, admin.ModelAdmin):
    """Scheduled functions: list, detail, cancel, schedule."""

    list_display = (
        "id",
        "name",
        "kind",
        "state_badge",
        "scheduled_at",
        "completed_at",
        "run_time",
        "attempts",
    )
    list_display_links = ("id", "name")
    list_filter = ("state", "kind", RegisteredNameFilter)
    search_fields = ("name", "=id")
    search_help_text = _("A function name (or part of one), or an id.")
    date_hierarchy = "scheduled_time"
    sortable_by = ("id", "name", "scheduled_at", "completed_at")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 100
    actions = ["cancel_selected"]
    fieldsets = (
        (None, {"fields": ("id", "name", "kind", "state_badge", "attempts", "owner")}),
        (
            _("Times"),
            {
                "fields": (
                    "scheduled_at",
                    "next_run_at",
                    "created_at",
                    "started_at",
                    "completed_at",
                    "run_time",
                )
            },
        ),
        (_("Arguments and outcome"), {"fields": ("args_pretty", "error_pretty")}),
        (_("Scheduled by and scheduling"), {"fields": ("parent_link", "children_links")}),
    )
    readonly_fields = (
        "state_badge",
        "scheduled_at",
        "next_run_at",
        "created_at",
        "started_at",
        "completed_at",
        "run_time",
        "args_pretty",
        "error_pretty",
        "parent_link",
        "children_links",
    )

    class Media:
        css = {"all": ("convex_scheduler/admin.css",)}

    # Permissions: rows change only through the scheduler. The change
    # permission gates cancelling, but no row is ever edited or deleted here.

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None:
            return False
        return super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def may_cancel(self, request: HttpRequest) -> bool:
        """Whether the user may cancel: the model's change permission."""
        return super().has_change_permission(request)

    # The list.

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return ScheduledFunctionChangeList

    #: Query-string parameters of the changelist's own machinery.
    LIST_PARAMETERS = frozenset(
        {ALL_VAR, ERROR_FLAG, IS_FACETS_VAR, IS_POPUP_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR}
    )
    #: Filter parameters the list filters, the overview and the "children" link produce.
    FILTER_PARAMETERS = frozenset(
        {
            "state__exact",
            "state__isnull",
            "kind__exact",
            "kind__isnull",
            "name",
            "pool",
            "parent",
            "parent__exact",
            "parent__id__exact",
        }
    )

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Only what the filters and the "children" link produce, with values
        # the database can take; changelist_view refuses the rest first with
        # a message (this is the second line of defence).
        if not isinstance(value, str) or "\x00" in value:
            return False
        if lookup in ("parent", "parent__exact", "parent__id__exact"):
            return _is_id(value)
        if lookup == "pool":
            return len(value) <= 100
        if lookup in {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}:
            return value.isascii() and value.isdigit() and len(value) <= 4
        return lookup in self.FILTER_PARAMETERS

    def _changelist_problem(self, request: HttpRequest) -> str | None:
        """What is wrong with the changelist's query string, or ``None``."""
        hierarchy = {f"{self.date_hierarchy}__{part}" for part in ("year", "month", "day")}
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return gettext("The query string contains a NUL character.")
            if key == TO_FIELD_VAR:
                if not all(self.to_field_allowed(request, value) for value in values):
                    return gettext("%(param)s may only name the id.") % {"param": TO_FIELD_VAR}
                continue
            if key in self.LIST_PARAMETERS or key in hierarchy:
                continue
            if key not in self.FILTER_PARAMETERS:
                return gettext(
                    "Unknown filter %(param)s. Filter with the choices beside the list: "
                    "state, kind, function, the dates above it, or a search."
                ) % {"param": repr(key[:100])}
            if key.startswith("parent") and not all(_is_id(value) for value in values):
                return gettext("%(param)s must be a scheduled function id.") % {"param": key}
        params = {key: request.GET[key] for key in hierarchy if key in request.GET}
        return _date_hierarchy_problem(str(self.date_hierarchy), params)

    def _action_problem(self, request: HttpRequest) -> _Refused | None:
        """What is wrong with a posted action, or ``None``."""
        names = [name for name in request.POST.getlist("action") if name]
        allowed = self.get_actions(request)
        for name in names:
            if name in allowed:
                continue
            if name in (self.actions or ()):
                return _Refused(
                    gettext("You do not have permission to %(action)s.") % {"action": name}, 403
                )
            return _Refused(
                gettext("There is no action %(action)s.") % {"action": repr(name[:100])}
            )
        for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME):
            if not _is_id(value):
                return _Refused(
                    gettext("%(value)s is not a scheduled function id.")
                    % {"value": repr(value[:100])}
                )
        return None

    def refused(self, request: HttpRequest, refusal: _Refused) -> TemplateResponse:
        """The admin page for a refused input: its status and what was wrong."""
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Bad request") if refusal.status < 403 else gettext("Not allowed"),
            "subtitle": None,
            "message": refusal.message,
            "opts": self.opts,
            "has_view_permission": self.has_view_permission(request),
        }
        if refusal.status == 413:
            context["title"] = gettext("Request too large")
        return TemplateResponse(
            request,
            "admin/convex_scheduler/scheduledfunction/refused.html",
            context,
            status=refusal.status,
        )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if "\x00" in term:
            return queryset.none(), False
        digits = term.removeprefix("#")
        if digits.isascii() and digits.isdigit():
            # An id is looked up by primary key alone, so it stays an index lookup.
            if not _is_id(digits):
                return queryset.none(), False
            return queryset.filter(pk=int(digits)), False
        return queryset.filter(name__icontains=term), False

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: ScheduledFunction) -> str:
        return format_html(
            '<span class="cs-badge cs-state-{}">{}</span>', obj.state, obj.get_state_display()
        )

    @admin.display(description=_("scheduled time"), ordering="scheduled_time")
    def scheduled_at(self, obj: ScheduledFunction) -> str | None:
        return _when(obj.scheduled_time)

    @admin.display(description=_("next run time"))
    def next_run_at(self, obj: ScheduledFunction) -> str | None:
        return _when(obj.next_run_time)

    @admin.display(description=_("creation time"))
    def created_at(self, obj: ScheduledFunction) -> str | None:
        return _when(obj.creation_time)

    @admin.display(description=_("started time"))
    def started_at(self, obj: ScheduledFunction) -> str | None:
        return _when(obj.started_time)

    @admin.display(description=_("completed time"), ordering="completed_time")
    def completed_at(self, obj: ScheduledFunction) -> str | None:
        return _when(obj.completed_time)

    @admin.display(description=pgettext_lazy("how long a run took", "run time"))
    def run_time(self, obj: ScheduledFunction) -> str | None:
        """From start to finish, for a finished function that started."""
        if obj.started_time is None or obj.completed_time is None:
            return None
        return str(_duration(max(obj.completed_time - obj.started_time, timedelta(0))))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        try:
            self._check_changelist_input(request)
            extra_context = {
                **(extra_context or {}),
                "overview": self.overview(),
                "cs_may_cancel": self.may_cancel(request),
            }
            response = super().changelist_view(request, extra_context)
        except _Refused as refusal:
            return self.refused(request, refusal)
        context = response.context_data if isinstance(response, TemplateResponse) else None
        if context is not None and "cl" in context:
            context["cs_date_hierarchy"] = self.date_hierarchy_choices(context["cl"])
        return response

    def _check_changelist_input(self, request: HttpRequest) -> None:
        try:
            problem = self._changelist_problem(request)
            action = None
            if request.method == "POST" and "_save" not in request.POST:
                action = self._action_problem(request)
        except TooManyFieldsSent:
            raise _Refused(gettext("Too many parameters; select fewer rows at a time.")) from None
        except RequestDataTooBig:
            raise _Refused(
                gettext("The request is too large; select fewer rows at a time."), 413
            ) from None
        if problem:
            raise _Refused(problem)
        if action is not None:
            raise action

    def overview(self) -> dict[str, Any]:
        """Counts per state, the scheduler's lag and the live workers, as the dashboard shows.

        Each state's count stops at :data:`COUNT_CAP` (shown as "10000+"), as
        the list's does: one ``GROUP BY state`` reads every row (200 ms at a
        million rows on PostgreSQL), a capped count per state at most
        ``COUNT_CAP`` entries of the state index.
        """
        now = clock.now()
        counts = {
            state.value: ScheduledFunction.objects.filter(state=state)
            .order_by()[: COUNT_CAP + 1]
            .count()
            for state in State
        }
        oldest_due = (
            ScheduledFunction.objects.due(now).values_list("next_run_time", flat=True).first()
        )
        lag = max(now - oldest_due, timedelta(0)) if oldest_due is not None else None
        workers = SchedulerWorker.objects.alive().count()
        pools: dict[str, dict[str, Any]] = {}
        for pool, state, count in (
            ScheduledFunction.objects.filter(state__in=(State.PENDING, State.IN_PROGRESS))
            .exclude(pool="")
            .order_by()
            .values_list("pool", "state")
            .annotate(n=Count("pk"))
        ):
            pools.setdefault(pool, {"name": pool, "pending": 0, "running": 0})
            pools[pool]["running" if state == State.IN_PROGRESS else "pending"] = count
        limits = scheduler_settings.POOLS or {}
        for pool in pools.values():
            pool["limit"] = (limits.get(pool["name"]) or {}).get("max_parallelism")
        return {
            "states": [
                {
                    "value": state.value,
                    "label": state.label,
                    "count": min(counts[state.value], COUNT_CAP),
                    "capped": counts[state.value] > COUNT_CAP,
                }
                for state in State
            ],
            "lag": lag,
            "lag_display": _duration(lag) if lag is not None else None,
            "oldest_due": oldest_due,
            "live_workers": workers,
            "pools": sorted(pools.values(), key=lambda pool: pool["name"]),
        }

    def date_hierarchy_choices(self, cl: ChangeList) -> dict[str, Any] | None:
        """The date drill-down, from the first and last row's dates instead of a ``DISTINCT`` scan.

        Two ``ORDER BY … LIMIT 1`` lookups on the ``scheduled_time`` index:
        SQLite answers ``MIN()`` and ``MAX()`` in one query with a scan of the
        whole table (230 ms at a million rows), each alone from the index.
        """
        field = self.date_hierarchy
        keys = [f"{field}__{part}" for part in ("year", "month", "day")]
        year, month, day = (cl.params.get(key) for key in keys)

        def link(filters: dict[str, Any]) -> str:
            return cl.get_query_string(filters, [f"{field}__"])

        if year and month and day:
            chosen = datetime(int(year), int(month), int(day))
            return {
                "back": {
                    "link": link({keys[0]: year, keys[1]: month}),
                    "title": capfirst(formats.date_format(chosen, "YEAR_MONTH_FORMAT")),
                },
                "choices": [{"title": capfirst(formats.date_format(chosen, "MONTH_DAY_FORMAT"))}],
            }
        times = cl.queryset.values_list(field, flat=True)
        earliest = times.order_by(field).first()
        latest = times.order_by(f"-{field}").first()
        if earliest is None or latest is None:
            return None
        first, last = timezone.localtime(earliest), timezone.localtime(latest)
        if not year and first.year == last.year:
            year = str(first.year)
            if first.month == last.month:
                month = str(first.month)
        if year and month:
            base = datetime(int(year), int(month), 1)
            return {
                "back": {"link": link({keys[0]: year}), "title": year},
                "choices": [
                    {
                        "link": link({keys[0]: year, keys[1]: month, keys[2]: str(number)}),
                        "title": capfirst(
                            formats.date_format(base.replace(day=number), "MONTH_DAY_FORMAT")
                        ),
                    }
                    for number in range(first.day, last.day + 1)
                ],
            }
        if year:
            return {
                "back": {"link": link({}), "title": _("All dates")},
                "choices": [
                    {
                        "link": link({keys[0]: year, keys[1]: str(number)}),
                        "title": capfirst(
                            formats.date_format(datetime(int(year), number, 1), "YEAR_MONTH_FORMAT")
                        ),
                    }
                    for number in range(first.month, last.month + 1)
                ],
            }
        return {
            "back": None,
            "choices": [
                {"link": link({keys[0]: str(number)}), "title": str(number)}
                for number in range(first.year, last.year + 1)
            ],
        }

    @admin.action(permissions=["change"], description=_("Cancel selected scheduled functions"))
    def cancel_selected(self, request: HttpRequest, queryset: ScheduledFunctionQuerySet) -> None:
        # "Select all N" may select a great many: cancel in batches of 1,000.
        selected = ScheduledFunction.objects.filter(pk__in=queryset.order_by().values("pk"))
        self._report_canceled(request, selected.cancel_in_batches(clock.now()))

    def _report_canceled(self, request: HttpRequest, canceled: int) -> None:
        self.message_user(
            request,
            ngettext(
                "Canceled %(count)d scheduled function.",
                "Canceled %(count)d scheduled functions.",
                canceled,
            )
            % {"count": canceled},
            messages.SUCCESS if canceled else messages.WARNING,
        )

    # The detail page.

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: Any = None
    ) -> ScheduledFunction | None:
        if from_field is not None or not _is_id(object_id):
            return None
        # The arguments and the error may be megabytes: load their first
        # ARGS_SHOWN characters and their sizes, never the whole of them.
        args_text = Cast("args", output_field=TextField())
        return (
            self.get_queryset(request)
            .defer("args", "error")
            .annotate(
                args_head=Substr(args_text, 1, ARGS_SHOWN),
                args_size=OctetLength(args_text),
                error_head=Substr("error", 1, ARGS_SHOWN),
                error_size=OctetLength("error"),
            )
            .filter(pk=parse_id(object_id))
            .first()
        )

    @admin.display(description=_("arguments"))
    def args_pretty(self, obj: ScheduledFunction) -> str:
        text: str = getattr(obj, "args_head", "")
        size: int = getattr(obj, "args_size", 0) or 0
        download = format_html(
            '<a class="cs-download" href="{}" download>{}</a>',
            self._download_url(obj.pk, "args"),
            gettext("Download the arguments as JSON (%(size)s)") % {"size": filesizeformat(size)},
        )
        if size <= PRETTY_MAX_BYTES:
            pretty = json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False)
            if len(pretty) <= PRETTY_MAX_CHARS:
                return format_html('<pre class="cs-pre">{}</pre>{}', pretty, download)
        cut = size > len(text.encode())
        summary = (
            gettext("%(size)s of arguments; the first %(chars)s characters are shown")
            if cut
            else gettext("%(size)s of arguments")
        ) % {
            "size": filesizeformat(size),
            "chars": formats.number_format(len(text), force_grouping=True),
        }
        return format_html(
            '<details class="cs-large"><summary>{}</summary><pre class="cs-pre">{}{}</pre>'
            "</details>{}",
            summary,
            text,
            "…" if cut else "",
            download,
        )

    @admin.display(description=_("error"))
    def error_pretty(self, obj: ScheduledFunction) -> str:
        text: str = getattr(obj, "error_head", "")
        size: int = getattr(obj, "error_size", 0) or 0
        if not text:
            return "-"
        if size <= len(text.encode()):
            return format_html('<pre class="cs-pre cs-error">{}</pre>', text)
        return format_html(
            '<pre class="cs-pre cs-error">{}…</pre>'
            '<a class="cs-download" href="{}" download>{}</a>',
            text,
            self._download_url(obj.pk, "error"),
            gettext("Download the whole error (%(size)s)") % {"size": filesizeformat(size)},
        )

    def _download_url(self, pk: int, part: str) -> str:
        return reverse(
            f"admin:convex_scheduler_scheduledfunction_{part}",
            args=[quote(pk)],
            current_app=self.admin_site.name,
        )

    def download_view(self, request: HttpRequest, object_id: str, part: str) -> HttpResponse:
        """The full arguments (JSON) or error (text) of one scheduled function, as a download."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if not _is_id(object_id):
            raise Http404(_("No scheduled function with this id."))
        column = Cast("args", output_field=TextField()) if part == "args" else F("error")
        text = (
            ScheduledFunction.objects.filter(pk=parse_id(object_id))
            .annotate(text=column)
            .values_list("text", flat=True)
            .first()
        )
        if text is None:
            raise Http404(_("No scheduled function with this id."))
        kind, extension = ("application/json", "json") if part == "args" else ("text/plain", "txt")
        response = HttpResponse(text, content_type=f"{kind}; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="scheduled-function-{parse_id(object_id)}-{part}.{extension}"'
        )
        return response

    @admin.display(description=_("parent"))
    def parent_link(self, obj: ScheduledFunction) -> str:
        if obj.parent_id is None:
            return "-"
        # No database constraint: retention may have deleted the parent.
        parent = ScheduledFunction.objects.filter(pk=obj.parent_id).only("pk", "name").first()
        if parent is None:
            return format_html("#{} {}", obj.parent_id, _("(deleted)"))
        return format_html(
            '<a href="{}">#{} {}</a>', self._change_url(parent.pk), parent.pk, parent.name
        )

    @admin.display(description=_("children"))
    def children_links(self, obj: ScheduledFunction) -> str:
        children = list(
            ScheduledFunction.objects.filter(parent_id=obj.pk)
            .order_by("id")
            .values_list("pk", "name", "state")[: CHILDREN_SHOWN + 1]
        )
        if not children:
            return "-"
        items = format_html_join(
            "",
            '<li><a href="{}">#{} {}</a> <span class="cs-badge cs-state-{}">{}</span></li>',
            (
                (self._change_url(pk), pk, name, state, State(state).label)
                for pk, name, state in children[:CHILDREN_SHOWN]
            ),
        )
        more = ""
        if len(children) > CHILDREN_SHOWN:
            url = reverse("admin:convex_scheduler_scheduledfunction_changelist")
            more = format_html(
                '<li><a href="{}?parent={}">{}</a></li>', url, obj.pk, _("All children…")
            )
        return format_html('<ul class="cs-children">{}{}</ul>', items, more)

    def _change_url(self, pk: int) -> str:
        return reverse(
            "admin:convex_scheduler_scheduledfunction_change",
            args=[quote(pk)],
            current_app=self.admin_site.name,
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Any = None,
    ) -> HttpResponse:
        context["can_cancel"] = (
            obj is not None and obj.state in _ACTIVE_STATES and self.may_cancel(request)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self) -> list[Any]:
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "cancel-all/",
                self.admin_site.admin_view(self.cancel_all_view),
                name="{}_{}_cancel_all".format(*info),
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="{}_{}_cancel".format(*info),
            ),
            path(
                "<path:object_id>/args.json",
                self.admin_site.admin_view(self.download_view),
                {"part": "args"},
                name="{}_{}_args".format(*info),
            ),
            path(
                "<path:object_id>/error.txt",
                self.admin_site.admin_view(self.download_view),
                {"part": "error"},
                name="{}_{}_error".format(*info),
            ),
            *super().get_urls(),
        ]

    def cancel_all_view(self, request: HttpRequest) -> HttpResponse:
        """Cancel every unfinished row the list's current filters match, after a confirmation.

        GET shows how many would be canceled; POST cancels them in
        transactions of at most 1,000 rows and goes back to the list.
        """
        if not self.may_cancel(request):
            raise PermissionDenied
        problem = self._changelist_problem(request)
        if problem:
            return self.refused(request, _Refused(problem))
        changelist = self.get_changelist_instance(request)
        matching = changelist.get_queryset(request).filter(
            state__in=(State.PENDING, State.IN_PROGRESS)
        )
        query = request.GET.urlencode()
        back = reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
        back = f"{back}?{query}" if query else back
        if request.method == "POST":
            canceled = ScheduledFunction.objects.filter(
                pk__in=matching.order_by().values("pk")
            ).cancel_in_batches(clock.now())
            self._report_canceled(request, canceled)
            return redirect(back)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Cancel all matching scheduled functions?"),
            "subtitle": None,
            "opts": self.opts,
            "count": matching.order_by().count(),
            "filters": [
                f"{key}={value}" for key, values in request.GET.lists() for value in values
            ],
            "back": back,
            "has_view_permission": True,
        }
        return TemplateResponse(
            request, "admin/convex_scheduler/scheduledfunction/cancel_all.html", context
        )

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: cancel one scheduled function through the scheduler."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may_cancel(request):
            raise PermissionDenied
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(gettext("No scheduled function with this id."))
        was_active = obj.state in _ACTIVE_STATES
        scheduler.cancel(obj.pk)
        obj.refresh_from_db()
        if was_active and obj.state == State.CANCELED:
            self.log_change(request, obj, [{"changed": {"fields": ["state"]}}])
            self.message_user(
                request, gettext("Canceled %(obj)s.") % {"obj": obj}, messages.SUCCESS
            )
        else:
            self.message_user(
                request,
                gettext("%(obj)s has already finished; nothing changed.") % {"obj": obj},
                messages.WARNING,
            )
        return redirect(self._change_url(obj.pk))

    # Scheduling: the add view is the "Schedule a function" form.

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        allow_internal = request.user.has_perm(SCHEDULE_INTERNAL_PERMISSION)
        status = 200
        if request.method == "POST":
            try:
                data = request.POST
            except RequestDataTooBig:
                return self.refused(
                    request,
                    _Refused(
                        gettext(
                            "The form is larger than this site accepts "
                            "(DATA_UPLOAD_MAX_MEMORY_SIZE); schedule large arguments from code "
                            "or over the REST API."
                        ),
                        413,
                    ),
                )
            except TooManyFieldsSent:
                return self.refused(request, _Refused(gettext("The form has too many fields.")))
            form = ScheduleForm(data, allow_internal=allow_internal)
            # Invalid input is a 400, with the form and its errors.
            status = 400
            if form.is_valid():
                pk = form.schedule()
                if pk is not None:
                    obj = ScheduledFunction.objects.get(pk=pk)
                    self.log_addition(request, obj, [{"added": {}}])
                    self.message_user(
                        request, gettext("Scheduled %(obj)s.") % {"obj": obj}, messages.SUCCESS
                    )
                    return redirect(self._change_url(pk))
        else:
            form = ScheduleForm(initial={"delay_ms": 0}, allow_internal=allow_internal)
        fieldsets = [(None, {"fields": ["function", "args", "delay_ms", "run_at"]})]
        adminform = helpers.AdminForm(
            form,  # type: ignore[arg-type]  # any form renders; the stubs ask for a ModelForm
            fieldsets,
            {},
        )
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Schedule a function"),
            "subtitle": None,
            "adminform": adminform,
            "form": form,
            "errors": helpers.AdminErrorList(form, []),  # type: ignore[arg-type]  # as above
            "opts": self.opts,
            "media": self.media + adminform.media,
            "has_view_permission": self.has_view_permission(request),
            "allow_internal": allow_internal,
            **(extra_context or {}),
        }
        return TemplateResponse(
            request,
            "admin/convex_scheduler/scheduledfunction/schedule_form.html",
            context,
            status=status,
        )


@admin.register(SchedulerWorker)
class SchedulerWorkerAdmin(admin.ModelAdmin):
    """Running ``runscheduler`` processes and their heartbeats (read-only)."""

    list_display = ("id", "hostname", "pid", "started_time", "last_heartbeat", "alive")
    ordering = ("-last_heartbeat",)
    show_facets = admin.ShowFacets.NEVER

    @admin.display(boolean=True, description=_("alive"))
    def alive(self, obj: SchedulerWorker) -> bool:
        # The one liveness rule, in database time.
        return SchedulerWorker.objects.alive().filter(pk=obj.pk).exists()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(CronJob)
class CronJobAdmin(_ExplainsBadLookups, admin.ModelAdmin):
    """Crons: list, detail, pause and resume; run-time crons are created and edited here.

    Code crons are read-only: the code is their source of truth. Saving a
    run-time cron goes through :func:`convex_scheduler.crons.register`, and
    deleting one through :func:`convex_scheduler.crons.delete` (which cancels
    its pending run). Permissions are Django's on crons: ``view``, ``add``,
    ``change`` (also to pause and resume) and ``delete``.
    """

    form = CronForm
    list_display = (
        "name",
        "schedule",
        "function",
        "next_run",
        "paused",
        "recent_runs",
        "skipped",
        "source",
    )
    list_filter = ("source", "paused")
    search_fields = ("name", "function")
    search_help_text = _("A cron or function name, or part of one.")
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedCountPaginator
    list_per_page = 50
    # Django's "Delete selected" comes too; it deletes through delete_queryset.
    actions = ["pause_selected", "resume_selected"]
    definition_fields = (
        "name",
        "function",
        "args",
        "schedule_type",
        "interval",
        "expression",
        "timezone",
    )
    status_fields = (
        "schedule",
        "source",
        "next_run",
        "paused",
        "removed_time",
        "last_tick",
        "run_count",
        "missed_count",
        "overlap_count",
        "recent_runs",
    )
    readonly_fields = status_fields

    #: Query-string parameters the changelist produces.
    LIST_PARAMETERS = frozenset(
        {ALL_VAR, ERROR_FLAG, IS_FACETS_VAR, IS_POPUP_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR}
    )
    FILTER_PARAMETERS = frozenset({"source__exact", "paused__exact"})

    class Media:
        css = {"all": ("convex_scheduler/admin.css",)}

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        allow = request.user.has_perm(SCHEDULE_INTERNAL_PERMISSION)
        return type(form.__name__, (form,), {"allow_internal": allow})

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ((None, {"fields": self.definition_fields}),)
        return (
            (None, {"fields": self.definition_fields}),
            (_("Status"), {"fields": self.status_fields}),
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ()
        # A cron is never renamed: its runs carry its name.
        return ("name", *self.status_fields)

    # Permissions: code crons change with the code only.

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_code:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.is_code and obj.removed_time is None:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        definition = form.definition
        schedule = definition.schedule
        job = crons.register(
            definition.name,
            definition.function,
            definition.args,
            interval=schedule.interval,
            cron=schedule.expression or None,
            timezone=schedule.timezone,
        )
        obj.pk = job.pk

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        crons.delete(obj.name)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        # Django's "Delete selected" refuses a selection with a code cron
        # (has_delete_permission), so every name here may be deleted.
        for name in list(queryset.values_list("name", flat=True)):
            crons.delete(name)

    # The list.

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None) -> Any:
        if from_field is not None or not _is_id(object_id):
            return None
        return super().get_object(request, object_id, from_field)

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        return isinstance(value, str) and "\x00" not in value and lookup in self.FILTER_PARAMETERS

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        if "\x00" in search_term:
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        for key, values in request.GET.lists():
            if "\x00" in key or any("\x00" in value for value in values):
                return HttpResponseBadRequest(gettext("The query string contains a NUL character."))
            if key not in self.LIST_PARAMETERS and key not in self.FILTER_PARAMETERS:
                return HttpResponseBadRequest(
                    gettext("Unknown filter %(param)s; filter by source or paused.")
                    % {"param": repr(key[:100])}
                )
        if request.method == "POST" and not all(
            _is_id(value) for value in request.POST.getlist(helpers.ACTION_CHECKBOX_NAME)
        ):
            return HttpResponseBadRequest(gettext("A selected row is not a cron id."))
        try:
            return super().changelist_view(request, extra_context)
        except _Refused as refusal:
            return HttpResponseBadRequest(refusal.message)

    @admin.display(description=_("schedule"))
    def schedule(self, obj: CronJob) -> str:
        return crons.describe(obj)

    @admin.display(description=_("next run"), ordering="next_tick")
    def next_run(self, obj: CronJob) -> str:
        if obj.next_tick is None:
            if obj.removed_time is not None:
                return str(_("removed from code"))
            return str(_("paused"))
        try:
            local = obj.next_tick.astimezone(ZoneInfo(obj.timezone))
        except (ZoneInfoNotFoundError, ValueError):
            local = obj.next_tick.astimezone(UTC)
        utc = obj.next_tick.astimezone(UTC)
        return format_html(
            '<time datetime="{}">{} {}</time><br><small>{} UTC</small>',
            utc.isoformat(),
            local.strftime("%Y-%m-%d %H:%M"),
            obj.timezone,
            utc.strftime("%Y-%m-%d %H:%M"),
        )

    @admin.display(description=_("last runs"))
    def recent_runs(self, obj: CronJob) -> str:
        # One query on the (cron, scheduled_time) index, five rows at most.
        runs = (
            ScheduledFunction.objects.filter(cron=obj.name)
            .order_by("-scheduled_time")
            .values_list("pk", "state", "scheduled_time")[:RECENT_CRON_RUNS]
        )
        return format_html_join(
            " ",
            '<a class="cs-badge cs-state-{}" href="{}" title="{}">{}</a>',
            (
                (
                    state,
                    reverse(
                        "admin:convex_scheduler_scheduledfunction_change",
                        args=[quote(pk)],
                        current_app=self.admin_site.name,
                    ),
                    when.astimezone(UTC).isoformat(),
                    State(state).label,
                )
                for pk, state, when in runs
            ),
        )

    @admin.display(description=_("skipped"))
    def skipped(self, obj: CronJob) -> str:
        return gettext("%(missed)d missed, %(overlap)d overlapping") % {
            "missed": obj.missed_count,
            "overlap": obj.overlap_count,
        }

    @admin.action(permissions=["change"], description=_("Pause selected crons"))
    def pause_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        paused = sum(crons.pause(name) for name in queryset.values_list("name", flat=True))
        self.message_user(
            request,
            ngettext("Paused %(count)d cron.", "Paused %(count)d crons.", paused)
            % {"count": paused},
            messages.SUCCESS if paused else messages.WARNING,
        )

    @admin.action(permissions=["change"], description=_("Resume selected crons"))
    def resume_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        resumed = sum(crons.resume(name) for name in queryset.values_list("name", flat=True))
        self.message_user(
            request,
            ngettext("Resumed %(count)d cron.", "Resumed %(count)d crons.", resumed)
            % {"count": resumed},
            messages.SUCCESS if resumed else messages.WARNING,
        )
