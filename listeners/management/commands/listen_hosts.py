"""Listen to the libvirt events of every host whose listener lease this process takes."""

import logging
import signal

from django.core.management.base import BaseCommand

from listeners.runner import ListenerProcess
from migrations_app.worker.lease import worker_identity

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Listen to the domain events of the hosts (one process across all nodes holds each "
        "host's lease; run one per node, beside the workers)."
    )

    def handle(self, *args, **options):
        process = ListenerProcess(owner=f"listener {worker_identity()}")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _s, _f: process.stopping.set())
        process.run()
