from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    # The API, its schema (api/schema/) and docs (api/docs/).
    path("api/", include("convex_scheduler.urls")),
]
