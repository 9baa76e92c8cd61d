"""``manage.py demouser``: create the demo login ``admin`` / ``admin`` if missing."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

USERNAME = "admin"
PASSWORD = "admin"


class Command(BaseCommand):
    help = "Create the demo superuser admin/admin unless a user of that name exists."

    def handle(self, *args, **options) -> None:
        User = get_user_model()
        if User.objects.filter(username=USERNAME).exists():
            return
        User.objects.create_superuser(USERNAME, f"{USERNAME}@example.com", PASSWORD)
        self.stdout.write(f"Created the demo user {USERNAME!r} with password {PASSWORD!r}.")
