"""An index over only the rows that need it, where the database can do that."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import models
from django.db.models import Q


class PartialIndex(models.Index):
    """An index over the rows matching ``where`` on databases with partial indexes.

    PostgreSQL and SQLite get ``CREATE INDEX … WHERE``; MySQL and MariaDB,
    which have no partial indexes, get the same index over every row. Unlike
    ``Index(condition=…)``, it does not make Django warn (``models.W037``) on
    every ``migrate`` of a MariaDB database that the condition is ignored:
    there, a full index is what is meant.

    ``Index.create_sql`` is not documented API (``django.contrib.postgres``'s
    indexes override it too); ``tests/test_indexes.py`` checks the DDL it
    makes on every supported Django.
    """

    def __init__(self, *args: Any, where: Q, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.where = where

    def deconstruct(self) -> tuple[str, Sequence[Any], dict[str, Any]]:
        path, args, kwargs = super().deconstruct()
        kwargs["where"] = self.where
        return path, args, kwargs

    def create_sql(self, model: Any, schema_editor: Any, using: str = "", **kwargs: Any) -> Any:
        if not schema_editor.connection.features.supports_partial_indexes:
            return super().create_sql(model, schema_editor, using=using, **kwargs)
        _, args, options = models.Index.deconstruct(self)
        partial = models.Index(*args, **options, condition=self.where)
        return partial.create_sql(model, schema_editor, using=using, **kwargs)
