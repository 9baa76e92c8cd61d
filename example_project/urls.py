"""The admin at ``/admin/``; the scheduler's REST API and its OpenAPI schema at ``/api/``."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path(
        "",
        RedirectView.as_view(url="/admin/convex_scheduler/scheduledfunction/", permanent=False),
    ),
    path("admin/", admin.site.urls),
    path("api/", include("convex_scheduler.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
]
