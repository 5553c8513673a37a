"""Start the django-q2 workers, after settling migrations a dead worker left behind."""

from django.core.management import call_command
from django.core.management.base import BaseCommand

from migrations_app.engine import migrations_reconcile


class Command(BaseCommand):
    help = "Reconcile stale migrations with libvirt, then run the task workers (qcluster)."

    def handle(self, *args, **options):
        settled = migrations_reconcile()
        if settled:
            self.stdout.write(f"settled stale migrations: {settled}")
        call_command("qcluster")
