"""The admin at ``/admin/``; the scheduler's REST API, its OpenAPI schema and docs at ``/api/``."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path(
        "",
        RedirectView.as_view(url="/admin/convex_scheduler/scheduledfunction/", permanent=False),
    ),
    path("admin/", admin.site.urls),
    # api/scheduled-functions/, api/schema/ and api/docs/, under the API's permissions.
    path("api/", include("convex_scheduler.urls")),
]
