"""Database triggers that make the audit table append-only below the ORM.

Only ON DELETE SET NULL of `actor_id` gets through. PostgreSQL refuses UPDATE and DELETE
(not TRUNCATE, which flush and the tests need: revoke it in production); SQLite refuses
UPDATE only (its flush is DELETE FROM), deletes are refused by the model.

On SQLite an AlterField that remakes the table drops the trigger: call `install()` again.
"""

from __future__ import annotations

from django.db.backends.base.schema import BaseDatabaseSchemaEditor

TRIGGER = "audit_event_append_only"
MESSAGE = "audit events are append-only"


def install(schema_editor: BaseDatabaseSchemaEditor, model) -> None:
    table = schema_editor.quote_name(model._meta.db_table)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(
            f"""
            CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND NEW.actor_id IS NULL
                   AND (to_jsonb(NEW) - 'actor_id') = (to_jsonb(OLD) - 'actor_id') THEN
                    RETURN NEW;  -- the acting user was deleted; actor_name stays
                END IF;
                RAISE EXCEPTION '{MESSAGE}: % refused', TG_OP
                    USING ERRCODE = 'restrict_violation';
            END;
            $$
            """,
            None,  # no parameters: the % above is plpgsql's, not a placeholder
        )
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
        schema_editor.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {TRIGGER}()"
        )
    elif vendor == "sqlite":
        columns = [f.column for f in model._meta.concrete_fields if f.column != "actor_id"]
        changed = " OR ".join(
            f"NEW.{schema_editor.quote_name(c)} IS NOT OLD.{schema_editor.quote_name(c)}"
            for c in columns
        )
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
        schema_editor.execute(
            f"CREATE TRIGGER {TRIGGER} BEFORE UPDATE ON {table} "
            f"WHEN NEW.actor_id IS NOT NULL OR {changed} "
            f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused'); END"
        )


def uninstall(schema_editor: BaseDatabaseSchemaEditor, model) -> None:
    table = schema_editor.quote_name(model._meta.db_table)
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {table}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
