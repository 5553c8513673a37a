from django.apps import AppConfig


class LabConfig(AppConfig):
    """Only provides the `manage.py lab` command; the lab itself is lab.lifecycle."""

    name = "lab"
    verbose_name = "Lab hypervisor hosts"
    default_auto_field = "django.db.models.BigAutoField"
