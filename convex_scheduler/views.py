"""The REST API: list, retrieve, schedule and cancel scheduled functions.

Scheduling and canceling go through :mod:`convex_scheduler.scheduler`; nothing
here runs a function.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.exceptions import ValidationError as APIValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from .conf import scheduler_settings
from .exceptions import SchedulingError
from .filters import ScheduledFunctionFilterSet, TiebreakOrderingFilter
from .forms import ScheduleRequestError, schedule_request
from .models import ScheduledFunction
from .scheduler import parse_id, scheduler
from .serializers import ScheduledFunctionSerializer, ScheduleSerializer

__all__ = ["ScheduledFunctionCursorPagination", "ScheduledFunctionViewSet"]


class ScheduledFunctionCursorPagination(CursorPagination):
    """Cursor pages: each page is one indexed range query, and nothing is counted.

    ``?page_size=`` picks the size (at most 500). Follow ``next`` and
    ``previous``; a cursor is only valid for the ordering it was made with.
    """

    ordering = ("-scheduled_time", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request):
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            # The position is filtered on as is; a tampered one must be a 404,
            # not a database error.
            field = ScheduledFunction._meta.get_field(self.ordering[0].lstrip("-"))
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
    403: OpenApiResponse(description=_("Not allowed (staff only by default), or CSRF failed.")),
}
_NOT_FOUND = {404: OpenApiResponse(description=_("No scheduled function with this id."))}
_BAD_REQUEST = {400: OpenApiResponse(description=_("Invalid input; the body names each field."))}


@extend_schema_view(
    list=extend_schema(
        summary=_("List scheduled functions"),
        description=_(
            "Newest scheduled first by default. Cursor-paginated: follow `next`; "
            "the total is never counted."
        ),
        responses={
            200: ScheduledFunctionSerializer(many=True),
            **_BAD_REQUEST,
            **_ERRORS,
            404: OpenApiResponse(description=_("Invalid cursor.")),
        },
    ),
    retrieve=extend_schema(
        summary=_("Get a scheduled function"),
        responses={200: ScheduledFunctionSerializer, **_ERRORS, **_NOT_FOUND},
    ),
    create=extend_schema(
        summary=_("Schedule a function"),
        description=_(
            "Schedule a registered public function with `args`, after `delay_ms` "
            "milliseconds or at `run_at` (exactly one). Internal functions cannot be "
            "scheduled here."
        ),
        request=ScheduleSerializer,
        responses={201: ScheduledFunctionSerializer, **_BAD_REQUEST, **_ERRORS},
    ),
)
class ScheduledFunctionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,
):
    """Scheduled functions: list, retrieve, schedule, cancel.

    Permissions come from ``CONVEX_SCHEDULER["API_PERMISSION_CLASSES"]`` (staff
    only by default); authentication from the project's DRF settings.
    """

    queryset = ScheduledFunction.objects.all()
    serializer_class = ScheduledFunctionSerializer
    parser_classes = [JSONParser]
    pagination_class = ScheduledFunctionCursorPagination
    filter_backends = [DjangoFilterBackend, TiebreakOrderingFilter]
    filterset_class = ScheduledFunctionFilterSet
    ordering_fields = ["scheduled_time", "creation_time", "id"]
    ordering = ["-scheduled_time", "-id"]
    lookup_value_regex = "[0-9]+"

    def get_permissions(self) -> list[Any]:
        return [permission() for permission in scheduler_settings.API_PERMISSION_CLASSES]

    def get_serializer_class(self) -> type:
        if self.action == "create":
            return ScheduleSerializer
        return ScheduledFunctionSerializer

    def get_object(self) -> ScheduledFunction:
        # The route only admits digits, but a number past the 64-bit range
        # would overflow the driver instead of matching nothing.
        try:
            parse_id(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
        except SchedulingError:
            raise Http404 from None
        return super().get_object()

    def perform_create(self, serializer: ScheduleSerializer) -> None:
        data = serializer.validated_data
        try:
            pk = schedule_request(
                data["function"],
                data["args"],
                delay_ms=data.get("delay_ms"),
                run_at=data.get("run_at"),
            )
        except ScheduleRequestError as exc:
            raise APIValidationError({exc.field: [exc.message]}) from None
        serializer.instance = ScheduledFunction.objects.get(pk=pk)

    def get_success_headers(self, data: Any) -> dict[str, str]:
        return {"Location": self.reverse_action("detail", args=[data["id"]])}

    @extend_schema(
        summary=_("Cancel a scheduled function"),
        description=_(
            "A pending function will never run; a running action keeps running but what it "
            "schedules from now on is born canceled. A finished function is returned "
            "unchanged."
        ),
        request=None,
        responses={200: ScheduledFunctionSerializer, **_ERRORS, **_NOT_FOUND},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """``POST scheduled-functions/{id}/cancel/``."""
        row = self.get_object()
        scheduler.cancel(row.pk)
        row.refresh_from_db()
        return Response(self.get_serializer(row).data, status=status.HTTP_200_OK)
