"""``include("convex_scheduler.urls")``: the REST API.

Mounted under ``api/`` this serves ``api/scheduled-functions/`` (list, create),
``api/scheduled-functions/{id}/`` and ``api/scheduled-functions/{id}/cancel/``.
Route names live in the ``convex_scheduler`` namespace, e.g.
``convex_scheduler:scheduledfunction-detail``.
"""

from rest_framework.routers import SimpleRouter

from .views import ScheduledFunctionViewSet

app_name = "convex_scheduler"

router = SimpleRouter()
router.register("scheduled-functions", ScheduledFunctionViewSet, basename="scheduledfunction")

urlpatterns = router.urls
