from django.db import models


class Counter(models.Model):
    """A row that mutations increment: exactly-once shows as an exact count."""

    name = models.CharField(max_length=100, unique=True)
    value = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"


class ActionRun(models.Model):
    """One row per start of an action: at-most-once shows as no duplicates."""

    scheduled_function_id = models.BigIntegerField()
    label = models.CharField(max_length=100, default="")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"run of #{self.scheduled_function_id}"
