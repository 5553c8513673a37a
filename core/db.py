"""The database's clock: the one time every node agrees on (a node's own clock may be off)."""

from __future__ import annotations

from django.db.models.functions import Now

# Django writes a datetime to SQLite as str() does: microseconds, or none when they are 0.
# Written the same way, a value read back compares equal to the stored text (the
# compare-and-set of a takeover); 'now' is one instant within a statement.
_SQLITE_NOW = (
    "CASE WHEN SUBSTR(STRFTIME('%%%%f', 'now'), 4) = '000'"
    " THEN STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%S', 'now')"
    " ELSE STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', 'now') || '000' END"
)


class DbNow(Now):
    """The database's current time, in SQL (PostgreSQL: the statement's time)."""

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template=_SQLITE_NOW, **extra_context)
