"""Schedule the reconciler of stale migrations (django-q2), every minute."""

from django.db import migrations

SCHEDULE_NAME = "migrations-reconcile"


def create_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.update_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": "migrations_app.tasks.reconcile_migrations",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("migrations_app", "0001_initial"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(create_schedule, delete_schedule)]
