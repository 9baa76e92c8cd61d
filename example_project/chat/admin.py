from django.contrib import admin

from .models import Message


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "author", "body", "created", "destroy_at", "notified"]
    list_filter = ["author", "notified"]
    search_fields = ["body", "author"]
