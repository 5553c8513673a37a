"""The inventory schedule runs the safety-net poll, which skips hosts a listener covers."""

from django.db import migrations

SCHEDULE_NAME = "inventory-sync"


def to_poll_hosts(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).update(
        func="listeners.tasks.poll_hosts"
    )


def to_sync_all(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).update(
        func="vms.tasks.sync_all_hosts"
    )


class Migration(migrations.Migration):
    dependencies = [
        ("listeners", "0001_initial"),
        ("vms", "0002_inventory_sync_schedule"),
    ]
    operations = [migrations.RunPython(to_poll_hosts, to_sync_all)]
