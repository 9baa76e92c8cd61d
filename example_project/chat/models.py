from django.db import models


class Message(models.Model):
    """A chat message. Sent, notified and destroyed by scheduled functions."""

    author = models.CharField("author", max_length=50)
    body = models.TextField("body")
    created = models.DateTimeField("created", auto_now_add=True)
    destroy_at = models.DateTimeField(
        "self-destructs at",
        null=True,
        blank=True,
        help_text="The message is deleted by a scheduled mutation at this time.",
    )
    notified = models.BooleanField(
        "notified", default=False, help_text="A push notification was delivered."
    )

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.author}: {self.body[:40]}"
