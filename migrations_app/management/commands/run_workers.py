"""Start the django-q2 workers, after settling migrations a dead worker left behind."""

import multiprocessing
import subprocess
import sys

from django.core.management import call_command
from django.core.management.base import BaseCommand

from portal.settings import BASE_DIR


class Command(BaseCommand):
    help = (
        "Reconcile stale migrations with libvirt, then run the task workers (qcluster) "
        "with the reconciler looping beside them."
    )

    def handle(self, *args, **options):
        manage = [sys.executable, str(BASE_DIR / "manage.py"), "reconcile_migrations"]
        # The reconciler runs in processes of its own: this process forks the workers,
        # and must not hold libvirt's event-loop thread (or its locks) when it does.
        subprocess.run(manage, check=False)
        loop = subprocess.Popen([*manage, "--loop"])
        try:
            # qcluster returns once its sentinel process runs; wait for the cluster to
            # end (SIGTERM/SIGINT: its own handler stops it) before ending the loop.
            call_command("qcluster")
            for child in multiprocessing.active_children():
                child.join()
        finally:
            loop.terminate()
            try:
                loop.wait(10)
            except subprocess.TimeoutExpired:
                loop.kill()
