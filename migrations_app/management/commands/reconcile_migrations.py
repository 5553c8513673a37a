"""One reconciler pass, or (--loop) one every MIGRATION_RECONCILE_EVERY_S seconds."""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

from migrations_app.engine import migrations_reconcile

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Settle migrations whose worker stopped, settle those that need attention once "
        "their hosts answer, clean leftovers, and enqueue queued migrations whose task "
        "was lost."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="run until killed")

    def handle(self, *args, loop: bool = False, **options):
        while True:
            try:
                settled = migrations_reconcile()
                if settled:
                    self.stdout.write(f"settled migrations: {settled}")
            except Exception:  # a loop outlives a database or broker outage
                if not loop:
                    raise
                logger.exception("reconciler pass failed")
                connection.close()
            if not loop:
                return
            time.sleep(settings.MIGRATION_RECONCILE_EVERY_S)
