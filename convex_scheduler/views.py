"""The REST API: list, retrieve, schedule and cancel scheduled functions; its schema and docs.

Scheduling and canceling go through :mod:`convex_scheduler.scheduler`; nothing
here runs a function. Permissions mirror the admin's: Django's model
permissions, ``view`` to read, ``add`` to schedule, ``change`` to cancel.
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any, NoReturn

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import Field, Model, QuerySet
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, ParseError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import BasePermission
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import clock, crons
from .conf import scheduler_settings
from .exceptions import SchedulingError
from .filters import ScheduledFunctionFilterSet, TiebreakOrderingFilter
from .models import CronJob, ScheduledFunction
from .scheduler import MAX_ARGS_DEPTH, json_nesting_exceeds, parse_id, scheduler
from .serializers import (
    CancelAllSerializer,
    CronJobSerializer,
    CronJobSummarySerializer,
    ScheduledFunctionSerializer,
    ScheduledFunctionSummarySerializer,
    ScheduleSerializer,
    cron_rows,
    with_previews,
    with_sizes,
)

__all__ = [
    "ENVELOPE_BYTES",
    "BoundedJSONParser",
    "CronJobPermissions",
    "CronJobViewSet",
    "RequestTooLarge",
    "ScheduledFunctionCursorPagination",
    "ScheduledFunctionDocsView",
    "ScheduledFunctionPermissions",
    "ScheduledFunctionSchemaView",
    "ScheduledFunctionViewSet",
    "max_body_bytes",
]

#: Bytes a request body may have beyond ``MAX_ARGS_BYTES``: the function name,
#: the time and the JSON around the arguments.
ENVELOPE_BYTES = 64 * 1024
#: How deeply a request body may nest: the body, ``args``, then the arguments'
#: own ``MAX_ARGS_DEPTH`` levels.
MAX_BODY_DEPTH = MAX_ARGS_DEPTH + 2


def max_body_bytes() -> int:
    """The largest request body the API reads: ``MAX_ARGS_BYTES`` plus :data:`ENVELOPE_BYTES`.

    The API reads bodies itself, so Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``
    does not apply to it.
    """
    return int(scheduler_settings.MAX_ARGS_BYTES) + ENVELOPE_BYTES


class ScheduledFunctionPermissions(permissions.DjangoModelPermissions):
    """The admin's permissions, over the API (the default of ``API_PERMISSION_CLASSES``).

    Reading (list, retrieve, the schema) needs ``view_scheduledfunction``,
    scheduling ``add_scheduledfunction`` and canceling
    ``change_scheduledfunction``. Anonymous users are refused. There is no
    permission to schedule internal functions here: the API never does.
    """

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        # Rows are never edited or deleted here: a 405 for every user.
        "PUT": [],
        "PATCH": [],
        "DELETE": [],
    }
    #: Actions whose permission is not the HTTP method's.
    action_perms = {
        "cancel": ["%(app_label)s.change_%(model_name)s"],
        "cancel_all": ["%(app_label)s.change_%(model_name)s"],
    }
    #: The model whose permissions apply.
    model: type[Model] = ScheduledFunction

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        model = self.model
        action_name = getattr(view, "action", None)
        if action_name in self.action_perms:
            names = {"app_label": model._meta.app_label, "model_name": model._meta.model_name}
            perms = [perm % names for perm in self.action_perms[action_name]]
        else:
            perms = self.get_required_permissions(request.method or "GET", model)
        return request.user.has_perms(perms)


class CronJobPermissions(ScheduledFunctionPermissions):
    """The admin's permissions on crons: ``view_cronjob`` to read, ``change_cronjob``
    to pause and resume."""

    action_perms = {
        "pause": ["%(app_label)s.change_%(model_name)s"],
        "resume": ["%(app_label)s.change_%(model_name)s"],
    }
    model = CronJob


def _default_permissions(model_permissions: type[BasePermission]) -> list[Any]:
    # The project's API_PERMISSION_CLASSES when it sets them, else the
    # model permissions of the view's model.
    configured = scheduler_settings.API_PERMISSION_CLASSES
    if configured is not None:
        return list(configured)
    return [model_permissions]


class _Guarded:
    """The API's permissions, and 401 (not 403) for anonymous users when any
    authentication class can ask for credentials."""

    #: The default permission, unless the project sets ``API_PERMISSION_CLASSES``.
    model_permissions: type[BasePermission] = ScheduledFunctionPermissions

    def get_permissions(self) -> list[Any]:
        return [permission() for permission in _default_permissions(self.model_permissions)]

    def get_authenticate_header(self, request: Request) -> str:
        # DRF asks only the first authentication class; with session
        # authentication first that turns every 401 into a 403.
        for authenticator in self.get_authenticators():  # type: ignore[attr-defined]  # APIView's
            header = authenticator.authenticate_header(request)
            if header:
                return str(header)
        return ""  # no class can ask for credentials: DRF answers 403


class RequestTooLarge(APIException):
    """413: the request body is over :func:`max_body_bytes`."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "request_too_large"


def _too_large(limit: int) -> NoReturn:
    raise RequestTooLarge(
        _(
            "The request body is over %(limit)d bytes: the arguments may have MAX_ARGS_BYTES "
            "(%(args)d) bytes and the rest of the request %(envelope)d."
        )
        % {
            "limit": limit,
            "args": scheduler_settings.MAX_ARGS_BYTES,
            "envelope": ENVELOPE_BYTES,
        }
    )


def _no_constant(name: str) -> NoReturn:
    raise ValueError(_("%(name)s is not a JSON number") % {"name": name})


class BoundedJSONParser(BaseParser):
    """JSON bodies up to :func:`max_body_bytes`, nested at most :data:`MAX_BODY_DEPTH` deep.

    Reads the body itself (Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` would stop
    an argument body short of ``MAX_ARGS_BYTES``), answers a larger one with a
    JSON 413, and refuses nesting before the recursive ``json`` parser could
    run out of stack. ``NaN`` and ``Infinity`` are not JSON and are refused.
    """

    media_type = "application/json"
    renderer_class = JSONRenderer

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        context = parser_context or {}
        limit = max_body_bytes()
        request = context.get("request")
        meta = getattr(request, "META", {})
        try:
            declared = int(meta.get("CONTENT_LENGTH") or 0)
        except (TypeError, ValueError):
            declared = 0
        if declared > limit:
            _too_large(limit)
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            _too_large(limit)
        encoding = context.get("encoding") or settings.DEFAULT_CHARSET
        try:
            # str.encode() refuses bytes-to-bytes codecs such as bz2_codec.
            "".encode(encoding)
            text = data.decode(encoding)
        except (LookupError, UnicodeError) as exc:
            raise ParseError(
                _("The request body is not valid %(encoding)s text: %(error)s.")
                % {"encoding": encoding, "error": exc}
            ) from None
        if json_nesting_exceeds(text, MAX_BODY_DEPTH):
            raise ParseError(
                _(
                    "The request body nests arrays and objects more than %(depth)d levels deep; "
                    "arguments may nest at most %(args)d."
                )
                % {"depth": MAX_BODY_DEPTH, "args": MAX_ARGS_DEPTH}
            )
        try:
            return json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError(_("JSON parse error - %(error)s") % {"error": exc}) from None


class ScheduledFunctionCursorPagination(CursorPagination):
    """Cursor pages: each page is one indexed range query, and nothing is counted.

    ?page_size= picks the size (at most 500; a list row is at most a few
    kilobytes, so a page stays within a few megabytes). Follow next and
    previous; a cursor is only valid for the ordering it was made with.
    """

    ordering = ("-scheduled_time", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            # The position is filtered on as is; a tampered one must be a 404,
            # not a database error.
            ordering = self.ordering[0] if isinstance(self.ordering, tuple) else self.ordering
            field = ScheduledFunction._meta.get_field(str(ordering).lstrip("-"))
            assert isinstance(field, Field)
            try:
                value = field.to_python(cursor.position)
                if hasattr(value, "tzinfo"):
                    if value.tzinfo is None:
                        raise ValueError
                    value.astimezone(UTC)
                elif isinstance(value, int):
                    parse_id(value)
            except (DjangoValidationError, SchedulingError, ValueError, OverflowError):
                raise NotFound(self.invalid_cursor_message) from None
        return cursor


_ERRORS = {
    401: OpenApiResponse(description=_("Not authenticated.")),
    403: OpenApiResponse(
        description=_("Not allowed: the model permission is missing, or CSRF failed.")
    ),
}
_NOT_FOUND = {404: OpenApiResponse(description=_("No scheduled function with this id."))}
_BAD_REQUEST = {400: OpenApiResponse(description=_("Invalid input; the body names each field."))}


@extend_schema_view(
    list=extend_schema(
        summary=_("List scheduled functions"),
        description=_(
            "Newest scheduled first by default. Each row has a short preview of its "
            "arguments and the first line of its error, with their sizes; the detail has "
            "them in full. Cursor-paginated: follow `next`; the total is never counted. "
            "Needs the view permission."
        ),
        responses={
            200: ScheduledFunctionSummarySerializer(many=True),
            **_BAD_REQUEST,
            **_ERRORS,
            404: OpenApiResponse(description=_("Invalid cursor.")),
        },
    ),
    retrieve=extend_schema(
        summary=_("Get a scheduled function"),
        description=_("With its arguments and error in full. Needs the view permission."),
        responses={200: ScheduledFunctionSerializer, **_ERRORS, **_NOT_FOUND},
    ),
    create=extend_schema(
        summary=_("Schedule a function"),
        description=_(
            "Schedule a registered public function with `args`, after `delay_ms` "
            "milliseconds or at `run_at` (exactly one). Internal functions cannot be "
            "scheduled here. Needs the add permission."
        ),
        request=ScheduleSerializer,
        responses={
            201: ScheduledFunctionSerializer,
            **_BAD_REQUEST,
            **_ERRORS,
            413: OpenApiResponse(
                description=_("The body is over MAX_ARGS_BYTES plus 64 KiB; the body says so.")
            ),
        },
    ),
)
class ScheduledFunctionViewSet(
    _Guarded,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Scheduled functions: list, retrieve, schedule, cancel.

    Reading needs the view permission on scheduled functions, scheduling the
    add permission and canceling the change permission, as in the admin.
    """

    queryset = ScheduledFunction.objects.all()
    serializer_class = ScheduledFunctionSerializer
    parser_classes = [BoundedJSONParser]
    pagination_class = ScheduledFunctionCursorPagination
    filter_backends = [DjangoFilterBackend, TiebreakOrderingFilter]
    filterset_class = ScheduledFunctionFilterSet
    ordering_fields = ["scheduled_time", "creation_time", "id"]
    ordering = ["-scheduled_time", "-id"]
    lookup_value_regex = "[0-9]+"

    def get_queryset(self) -> QuerySet[ScheduledFunction]:
        queryset = ScheduledFunction.objects.all()
        if self.action == "list":
            return with_previews(queryset)
        return with_sizes(queryset)

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return ScheduleSerializer
        if self.action == "list":
            return ScheduledFunctionSummarySerializer
        return ScheduledFunctionSerializer

    def get_object(self) -> ScheduledFunction:
        # The route only admits digits, but a number past the 64-bit range
        # would overflow the driver instead of matching nothing.
        try:
            parse_id(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
        except SchedulingError:
            raise Http404 from None
        return super().get_object()

    def get_success_headers(self, data: Any) -> dict[str, str]:
        return {"Location": self.reverse_action("detail", args=[data["id"]])}

    @extend_schema(
        summary=_("Cancel a scheduled function"),
        description=_(
            "A pending function will never run; a running action keeps running but what it "
            "schedules from now on is born canceled. A finished function is returned "
            "unchanged. Needs the change permission."
        ),
        request=None,
        responses={200: ScheduledFunctionSerializer, **_ERRORS, **_NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel this scheduled function: POST scheduled-functions/{id}/cancel/."""
        row = self.get_object()
        scheduler.cancel(row.pk)
        row = self.get_queryset().get(pk=row.pk)
        return Response(self.get_serializer(row).data, status=status.HTTP_200_OK)

    @extend_schema(
        summary=_("Cancel every matching scheduled function"),
        description=_(
            "Cancels the unfinished functions that match the same filters as the list "
            "(in transactions of at most 1,000 rows) and returns how many. Running actions "
            "keep running but are marked canceled. Needs the change permission."
        ),
        request=None,
        responses={200: CancelAllSerializer, **_ERRORS},
    )
    @action(detail=False, methods=["post"], url_path="cancel-all", pagination_class=None)
    def cancel_all(self, request: Request) -> Response:
        """Cancel what the list's filters match: POST scheduled-functions/cancel-all/."""
        matching = self.filter_queryset(self.get_queryset()).order_by()
        canceled = ScheduledFunction.objects.filter(pk__in=matching.values("pk")).cancel_in_batches(
            clock.now()
        )
        return Response({"canceled": canceled}, status=status.HTTP_200_OK)


class CronCursorPagination(CursorPagination):
    """Cursor pages of crons by name: one indexed range query each, nothing counted."""

    ordering = ("name",)
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Any:
        cursor = super().decode_cursor(request)
        position = str(cursor.position) if cursor and cursor.position is not None else ""
        if "\x00" in position or len(position) > crons.MAX_NAME_LENGTH:
            # A tampered position is a 404, not a database error.
            raise NotFound(self.invalid_cursor_message)
        return cursor


_NO_CRON = {404: OpenApiResponse(description=_("No cron with this name."))}


@extend_schema_view(
    list=extend_schema(
        summary=_("List crons"),
        description=_(
            "By name. Each row has its schedule in words, its next tick in UTC and in its "
            "time zone, the state of its last run, its skipped counts and a short preview of "
            "its arguments. Filter with `source` (code, runtime) and `paused`. "
            "Cursor-paginated. Needs the view permission on crons."
        ),
        responses={
            200: CronJobSummarySerializer(many=True),
            **_BAD_REQUEST,
            **_ERRORS,
            404: OpenApiResponse(description=_("Invalid cursor.")),
        },
    ),
    retrieve=extend_schema(
        summary=_("Get a cron"),
        description=_(
            "With its arguments in full and its last runs. Needs the view permission on crons."
        ),
        responses={200: CronJobSerializer, **_ERRORS, **_NO_CRON},
    ),
)
class CronJobViewSet(
    _Guarded, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Crons: list, retrieve, pause, resume.

    Reading needs the view permission on crons, pausing and resuming the change
    permission, as in the admin.
    """

    model_permissions = CronJobPermissions
    queryset = CronJob.objects.all()
    serializer_class = CronJobSerializer
    pagination_class = CronCursorPagination
    filter_backends = [DjangoFilterBackend]
    filterset_fields = ["source", "paused"]
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[CronJob]:
        return cron_rows(CronJob.objects.all(), previews=self.action == "list")

    def get_serializer_class(self) -> type:
        if self.action == "list":
            return CronJobSummarySerializer
        return CronJobSerializer

    def get_object(self) -> CronJob:
        name = self.kwargs[self.lookup_url_kwarg or self.lookup_field]
        if "\x00" in name or len(name) > crons.MAX_NAME_LENGTH:
            raise Http404  # no cron can have this name; the database need not be asked
        return super().get_object()

    def _toggle(self, change: Any) -> Response:
        job = self.get_object()
        change(job.name)
        job = self.get_queryset().get(pk=job.pk)
        return Response(self.get_serializer(job).data, status=status.HTTP_200_OK)

    @extend_schema(
        summary=_("Pause a cron"),
        description=_(
            "It starts no more runs until resumed; a run already started is left alone. "
            "Pausing a paused cron changes nothing. Needs the change permission on crons."
        ),
        request=None,
        responses={200: CronJobSerializer, **_ERRORS, **_NO_CRON},
    )
    @action(detail=True, methods=["post"])
    def pause(self, request: Request, name: str | None = None) -> Response:
        """Pause this cron: POST crons/{name}/pause/."""
        return self._toggle(crons.pause)

    @extend_schema(
        summary=_("Resume a cron"),
        description=_(
            "It runs again from its next tick; the paused period is not replayed. Needs the "
            "change permission on crons."
        ),
        request=None,
        responses={200: CronJobSerializer, **_ERRORS, **_NO_CRON},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request: Request, name: str | None = None) -> Response:
        """Resume this cron: POST crons/{name}/resume/."""
        return self._toggle(crons.resume)


def only_scheduled_functions(endpoints: list[Any], **kwargs: Any) -> list[Any]:
    """drf-spectacular preprocessing hook: keep this app's endpoints only."""
    return [
        endpoint
        for endpoint in endpoints
        if isinstance(getattr(endpoint[3], "cls", None), type)
        and issubclass(endpoint[3].cls, (ScheduledFunctionViewSet, CronJobViewSet))
    ]


class ScheduledFunctionSchemaView(_Guarded, SpectacularAPIView):
    """The OpenAPI 3 schema of this API, under the API's own permissions."""

    queryset = ScheduledFunction.objects.none()
    custom_settings = {
        "PREPROCESSING_HOOKS": ["convex_scheduler.views.only_scheduled_functions"],
    }


class ScheduledFunctionDocsView(_Guarded, SpectacularSwaggerView):
    """Swagger UI for this API's schema, under the API's own permissions."""

    queryset = ScheduledFunction.objects.none()
    url_name = "convex_scheduler:schema"
