"""One reconciler pass, or (--loop) one every MIGRATION_RECONCILE_EVERY_S seconds."""

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection
from django.utils import timezone

from migrations_app.domain import decisions
from migrations_app.scheduling.schedule import (
    migrations_schedule_next_event,
    migrations_schedule_run,
)
from migrations_app.worker.reconciler import migrations_reconcile

logger = logging.getLogger(__name__)

# An event a run could not settle must not spin the loop.
MIN_SLEEP_AFTER_RUN_S = 0.2


class Command(BaseCommand):
    help = (
        "Settle migrations whose worker stopped, settle those that need attention once "
        "their hosts answer, clean leftovers, enqueue queued migrations whose task "
        "was lost, and queue scheduled migrations that are due."
    )

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="run until killed")

    def handle(self, *args, loop: bool = False, **options):
        while True:
            settled = self._guarded(migrations_reconcile, loop)
            if settled:
                self.stdout.write(f"settled migrations: {settled}")
            if not loop:
                return
            self._wait_for_next_pass()

    def _guarded(self, call: Callable, loop: bool):
        try:
            return call()
        except Exception:  # a loop outlives a database or broker outage
            if not loop:
                raise
            logger.exception("reconciler pass failed")
            connection.close()
            return None

    def _wait_for_next_pass(self) -> None:
        """Sleep until the next pass, running the schedule's events meanwhile."""
        next_pass_at = timezone.now() + timedelta(seconds=settings.MIGRATION_RECONCILE_EVERY_S)
        while True:
            now = timezone.now()
            if now >= next_pass_at:
                return
            next_event = self._guarded(migrations_schedule_next_event, True)
            if next_event is not None and next_event <= now:
                done = self._guarded(migrations_schedule_run, True)
                if done and any(done.values()):
                    self.stdout.write(f"schedule: {done}")
                time.sleep(MIN_SLEEP_AFTER_RUN_S)
                continue
            poll_s = settings.MIGRATION_SCHEDULE_POLL_S
            time.sleep(
                decisions.reconcile_sleep_s(
                    now=now, next_pass_at=next_pass_at, next_event_at=next_event, poll_s=poll_s
                )
            )
