"""Start the django-q2 workers, after settling migrations a dead worker left behind."""

import logging
import multiprocessing
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)

# A cluster that ends by itself (broker down at its start) is started again after this.
RESTART_AFTER_S = 5.0


class Command(BaseCommand):
    help = (
        "Reconcile stale migrations with libvirt, then run the task workers (qcluster) "
        "with the reconciler and the hosts' event listeners beside them."
    )

    def handle(self, *args, **options):
        manage_py = [sys.executable, str(settings.BASE_DIR / "manage.py")]
        manage = [*manage_py, "reconcile_migrations"]
        # The reconciler and the listeners run apart: this process forks the workers and
        # must not hold libvirt's event-loop thread (or its locks) when it does.
        subprocess.run(manage, check=False)
        loop = subprocess.Popen([*manage, "--loop"])
        listeners = subprocess.Popen([*manage_py, "listen_hosts"])
        stopping = False

        def on_signal(signum, frame, cluster_handler):
            nonlocal stopping
            stopping = True
            if callable(cluster_handler):
                cluster_handler(signum, frame)

        try:
            while not stopping:
                # qcluster returns once its sentinel runs; wait for the cluster to end.
                call_command("qcluster")
                for signum in (signal.SIGTERM, signal.SIGINT):
                    handler = signal.getsignal(signum)
                    signal.signal(signum, lambda s, f, h=handler: on_signal(s, f, h))
                for child in multiprocessing.active_children():
                    child.join()
                if not stopping:
                    logger.warning(
                        "the task cluster ended by itself (broker down?); "
                        "starting it again in %g s",
                        RESTART_AFTER_S,
                    )
                    time.sleep(RESTART_AFTER_S)
        finally:
            for helper in (loop, listeners):
                helper.terminate()
            for helper in (loop, listeners):
                try:
                    helper.wait(10)
                except subprocess.TimeoutExpired:
                    helper.kill()
