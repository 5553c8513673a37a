"""Schedule the periodic inventory sync of every host (django-q2)."""

from django.conf import settings
from django.db import migrations

SCHEDULE_NAME = "inventory-sync"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "vms.tasks.sync_all_hosts",
            "schedule_type": "I",  # minutes
            "minutes": settings.INVENTORY_SYNC_MINUTES,
            "repeats": -1,
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("vms", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create_schedule, delete_schedule)]
