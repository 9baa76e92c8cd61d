from django.db import models


class Probe(models.Model):
    """When a latency probe started running, on the machine's monotonic clock."""

    sample = models.IntegerField(primary_key=True)
    started_ns = models.BigIntegerField()

    def __str__(self) -> str:
        return f"probe {self.sample}"
