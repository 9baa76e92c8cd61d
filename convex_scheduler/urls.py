"""``include("convex_scheduler.urls")``: the REST API, its OpenAPI schema and its docs.

Mounted under ``api/`` this serves ``api/scheduled-functions/`` (list, create),
``api/scheduled-functions/{id}/``, ``api/scheduled-functions/{id}/cancel/``,
``api/crons/`` (list), ``api/crons/{name}/``, ``api/crons/{name}/pause/`` and
``/resume/``,
``api/schema/`` (the OpenAPI 3 schema) and ``api/docs/`` (Swagger UI), all
under the API's permissions, and ``api/metrics/`` (Prometheus gauges, under
``METRICS_PERMISSION``). Route names live in the ``convex_scheduler``
namespace, e.g. ``convex_scheduler:scheduledfunction-detail`` and
``convex_scheduler:schema``.
"""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .metrics import metrics
from .views import (
    CronJobViewSet,
    ScheduledFunctionDocsView,
    ScheduledFunctionSchemaView,
    ScheduledFunctionViewSet,
)

app_name = "convex_scheduler"

router = SimpleRouter()
router.register("scheduled-functions", ScheduledFunctionViewSet, basename="scheduledfunction")
router.register("crons", CronJobViewSet, basename="cronjob")

urlpatterns = [
    *router.urls,
    path("schema/", ScheduledFunctionSchemaView.as_view(), name="schema"),
    path("docs/", ScheduledFunctionDocsView.as_view(), name="docs"),
    path("metrics/", metrics, name="metrics"),
]
