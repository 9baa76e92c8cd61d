"""``manage.py demouser``: create the demo logins if missing.

``admin`` / ``admin`` is a superuser. ``viewer`` / ``viewer`` is staff with
only the view permission on scheduled functions: the admin shows it the list
and the details with no Cancel button and no Schedule form, and the REST API
lets it read but not schedule or cancel.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand

USERNAME = "admin"
PASSWORD = "admin"
VIEWER = "viewer"


class Command(BaseCommand):
    help = "Create the demo superuser admin/admin and the view-only user viewer/viewer."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if not User.objects.filter(username=USERNAME).exists():
            User.objects.create_superuser(USERNAME, f"{USERNAME}@example.com", PASSWORD)
            self.stdout.write(f"Created the demo user {USERNAME!r} with password {PASSWORD!r}.")
        if not User.objects.filter(username=VIEWER).exists():
            viewer = User.objects.create_user(VIEWER, password=VIEWER, is_staff=True)
            viewer.user_permissions.add(
                Permission.objects.get(
                    content_type__app_label="convex_scheduler", codename="view_scheduledfunction"
                )
            )
            self.stdout.write(f"Created the view-only user {VIEWER!r} with password {VIEWER!r}.")
