"""Admin pages: watch scheduled functions, cancel them, schedule new ones.

Rows are read-only here. Every change goes through the domain API: single
cancels and new schedules through :mod:`convex_scheduler.scheduler`, the bulk
action through the QuerySet's ``cancel()`` transition. Nothing here runs a
function.

The changelist is built for large tables: no full-table ``COUNT(*)`` per page
(a capped count instead), no facet counts, no ``DISTINCT`` for the name filter
or the date hierarchy, and the large ``args``/``error`` columns are deferred.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, Min
from django.db.models.constants import LOOKUP_SEP
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import clock
from .conf import scheduler_settings
from .exceptions import SchedulingError
from .forms import ScheduleForm
from .models import ScheduledFunction, SchedulerWorker, State
from .registry import registry
from .scheduler import parse_id, scheduler

#: Rows a changelist counts at most; beyond it, the page says "more than".
COUNT_CAP = 10_000
#: Children listed on a detail page; the rest are a filtered changelist away.
CHILDREN_SHOWN = 20

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
        counted = self.object_list.order_by()[: COUNT_CAP + 1].count()
        self.truncated = counted > COUNT_CAP
        return min(counted, COUNT_CAP)


class ScheduledFunctionChangeList(ChangeList):
    def get_queryset(self, request, exclude_parameters=None):
        # Arguments may be megabytes per row; the list never shows them.
        return super().get_queryset(request, exclude_parameters).defer("args", "error")


class RegisteredNameFilter(admin.SimpleListFilter):
    """Filter by function name, offering the registered names.

    Asking the database for its distinct names would scan the whole table.
    """

    title = _("function")
    parameter_name = "name"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple]:
        return [(entry.name, entry.name) for entry in registry.all()]

    def queryset(self, request: HttpRequest, queryset):
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


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


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
class ScheduledFunctionAdmin(admin.ModelAdmin):
    """Scheduled functions: list, detail, cancel, schedule."""

    list_display = (
        "id",
        "name",
        "kind",
        "state_badge",
        "scheduled_time",
        "completed_time",
        "attempts",
    )
    list_display_links = ("id", "name")
    list_filter = ("state", "kind", RegisteredNameFilter)
    search_fields = ("name", "=id")
    search_help_text = _("A function name (or part of one), or an id.")
    date_hierarchy = "scheduled_time"
    sortable_by = ("id", "name", "scheduled_time", "completed_time")
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
                    "scheduled_time",
                    "next_run_time",
                    "creation_time",
                    "started_time",
                    "completed_time",
                )
            },
        ),
        (_("Arguments and outcome"), {"fields": ("args_pretty", "error_pretty")}),
        (_("Scheduled by and scheduling"), {"fields": ("parent_link", "children_links")}),
    )
    readonly_fields = (
        "state_badge",
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

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Only what the filters, the date hierarchy and the "children" link
        # produce, with values the database can take (an out-of-range integer
        # or a NUL character is a driver error, not an empty result).
        if not isinstance(value, str) or "\x00" in value:
            return False
        root = lookup.split(LOOKUP_SEP, 1)[0]
        if root in ("parent", "parent_id"):
            return lookup in ("parent", "parent__exact", "parent__id__exact") and _is_id(value)
        if lookup.startswith("scheduled_time__") and lookup.rsplit(LOOKUP_SEP, 1)[-1] in (
            "year",
            "month",
            "day",
        ):
            return value.isascii() and value.isdigit() and len(value) <= 4
        if root not in ("state", "kind", "name", "scheduled_time", "completed_time"):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_search_results(self, request: HttpRequest, queryset, search_term: str):
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

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {}), "overview": self.overview()}
        response = super().changelist_view(request, extra_context)
        if isinstance(response, TemplateResponse) and "cl" in (response.context_data or {}):
            response.context_data["cs_date_hierarchy"] = self.date_hierarchy_choices(
                response.context_data["cl"]
            )
        return response

    def overview(self) -> dict[str, Any]:
        """Counts per state, the scheduler's lag and the live workers, as the dashboard shows."""
        now = clock.now()
        counts = dict(
            ScheduledFunction.objects.order_by()
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        oldest_due = (
            ScheduledFunction.objects.due(now).values_list("next_run_time", flat=True).first()
        )
        lag = max(now - oldest_due, timedelta(0)) if oldest_due is not None else None
        timeout = timedelta(seconds=scheduler_settings.WORKER_TIMEOUT)
        workers = SchedulerWorker.objects.filter(last_heartbeat__gte=now - timeout).count()
        return {
            "states": [
                {"value": state.value, "label": state.label, "count": counts.get(state.value, 0)}
                for state in State
            ],
            "lag": lag,
            "lag_display": _duration(lag) if lag is not None else None,
            "oldest_due": oldest_due,
            "live_workers": workers,
        }

    def date_hierarchy_choices(self, cl: ChangeList) -> dict[str, Any] | None:
        """The date drill-down, from one ``MIN``/``MAX`` query instead of a ``DISTINCT`` scan."""
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
        bounds = cl.queryset.order_by().aggregate(first=Min(field), last=Max(field))
        if bounds["first"] is None:
            return None
        first, last = (timezone.localtime(bounds[key]) for key in ("first", "last"))
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
    def cancel_selected(self, request: HttpRequest, queryset) -> None:
        canceled = queryset.cancel(clock.now())
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

    def get_object(self, request: HttpRequest, object_id: str, from_field: Any = None):
        if from_field is None and not _is_id(object_id):
            return None
        return super().get_object(request, object_id, from_field)

    @admin.display(description=_("arguments"))
    def args_pretty(self, obj: ScheduledFunction) -> str:
        return format_html('<pre class="cs-pre">{}</pre>', _pretty_json(obj.args))

    @admin.display(description=_("error"))
    def error_pretty(self, obj: ScheduledFunction) -> str:
        if not obj.error:
            return "-"
        return format_html('<pre class="cs-pre cs-error">{}</pre>', obj.error)

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

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_cancel"] = (
            obj is not None and obj.state in _ACTIVE_STATES and self.may_cancel(request)
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="{}_{}_cancel".format(*info),
            ),
            *super().get_urls(),
        ]

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST: cancel one scheduled function through the scheduler."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may_cancel(request):
            raise PermissionDenied
        obj = self.get_object(request, object_id)
        if obj is None:
            raise Http404(_("No scheduled function with this id."))
        was_active = obj.state in _ACTIVE_STATES
        scheduler.cancel(obj.pk)
        obj.refresh_from_db()
        if was_active and obj.state == State.CANCELED:
            self.log_change(request, obj, [{"changed": {"fields": ["state"]}}])
            self.message_user(request, _("Canceled %(obj)s.") % {"obj": obj}, messages.SUCCESS)
        else:
            self.message_user(
                request,
                _("%(obj)s has already finished; nothing changed.") % {"obj": obj},
                messages.WARNING,
            )
        return redirect(self._change_url(obj.pk))

    # Scheduling: the add view is the "Schedule a function" form.

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            form = ScheduleForm(request.POST)
            if form.is_valid():
                pk = form.schedule()
                if pk is not None:
                    obj = ScheduledFunction.objects.get(pk=pk)
                    self.log_addition(request, obj, [{"added": {}}])
                    self.message_user(
                        request, _("Scheduled %(obj)s.") % {"obj": obj}, messages.SUCCESS
                    )
                    return redirect(self._change_url(pk))
        else:
            form = ScheduleForm(initial={"delay_ms": 0})
        fieldsets = [(None, {"fields": ["function", "args", "delay_ms", "run_at"]})]
        adminform = helpers.AdminForm(form, fieldsets, {})
        context = {
            **self.admin_site.each_context(request),
            "title": _("Schedule a function"),
            "subtitle": None,
            "adminform": adminform,
            "form": form,
            "errors": helpers.AdminErrorList(form, []),
            "opts": self.opts,
            "media": self.media + adminform.media,
            "has_view_permission": self.has_view_permission(request),
            **(extra_context or {}),
        }
        return TemplateResponse(
            request, "admin/convex_scheduler/scheduledfunction/schedule_form.html", context
        )


@admin.register(SchedulerWorker)
class SchedulerWorkerAdmin(admin.ModelAdmin):
    """Running ``runscheduler`` processes and their heartbeats (read-only)."""

    list_display = ("id", "hostname", "pid", "started_time", "last_heartbeat", "alive")
    ordering = ("-last_heartbeat",)
    show_facets = admin.ShowFacets.NEVER

    @admin.display(boolean=True, description=_("alive"))
    def alive(self, obj: SchedulerWorker) -> bool:
        timeout = timedelta(seconds=scheduler_settings.WORKER_TIMEOUT)
        return obj.last_heartbeat >= clock.now() - timeout

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
