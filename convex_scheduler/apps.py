from django.apps import AppConfig
from django.utils.module_loading import autodiscover_modules
from django.utils.translation import gettext_lazy as _


class ConvexSchedulerConfig(AppConfig):
    name = "convex_scheduler"
    label = "convex_scheduler"
    verbose_name = _("Scheduler")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (register checks and signal receivers)
        from .registry import registry

        # Like admin.autodiscover(): each installed app's ``functions`` module
        # registers its scheduled functions.
        autodiscover_modules("functions")
        # Then each app's ``crons`` module declares its crons, which refer to
        # those functions; workers apply them when they start.
        autodiscover_modules("crons")
        registry.mark_startup()
