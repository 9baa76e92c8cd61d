from django.apps import AppConfig


class ProcrastAppConfig(AppConfig):
    name = "procrastapp"
