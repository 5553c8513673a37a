from django.db import migrations

from audit import triggers


def install(apps, schema_editor):
    triggers.install(schema_editor, apps.get_model("audit", "AuditEvent"))


def uninstall(apps, schema_editor):
    triggers.uninstall(schema_editor, apps.get_model("audit", "AuditEvent"))


class Migration(migrations.Migration):
    dependencies = [("audit", "0002_event_columns_and_indexes")]

    operations = [migrations.RunPython(install, uninstall)]
