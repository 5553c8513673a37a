"""Fill the database with a realistic synthetic history, for demos and benchmarks.

    .venv/bin/python bench/seed_history.py --migrations 100000 --events 500000

Migrations over the last --days days (90 % succeed, 6.5 % fail, 3.5 % are cancelled),
each through the lifecycle table with its audit events; other events fill the log up to
--events. Deterministic for a --seed but for the ids. Seed an empty database.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
if __name__ == "__main__":
    from bench.common import setup_django

    setup_django()

from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from audit.events import EventType  # noqa: E402
from audit.models import AuditEvent  # noqa: E402
from bench import synthetic  # noqa: E402
from migrations_app.domain.lifecycle import ALLOWED_TRANSITIONS, FailureReason, Phase  # noqa: E402
from migrations_app.domain.lifecycle import MigrationStatus as Status  # noqa: E402
from migrations_app.domain.progress import completed_fields  # noqa: E402
from migrations_app.models import Migration  # noqa: E402
from vms.models import VM  # noqa: E402

TIMEOUT_S = 21600
# The audit event of entering each status, as the portal writes it.
ENTERED = {
    Status.QUEUED: EventType.MIGRATION_REQUESTED,
    Status.CHECKING: EventType.MIGRATION_CHECKING,
    Status.MIGRATING: EventType.MIGRATION_STARTED,
    Status.COMPLETING: EventType.MIGRATION_COMPLETING,
    Status.SUCCEEDED: EventType.MIGRATION_SUCCEEDED,
    Status.FAILED: EventType.MIGRATION_FAILED,
    Status.CANCELLED: EventType.MIGRATION_CANCELLED,
}


class Outcome(enum.Enum):
    SUCCEEDED = "succeeded"
    PRECHECK_FAILED = "precheck_failed"
    FAILED = "failed"  # while running
    CANCELLED_QUEUED = "cancelled_queued"  # before a worker claimed it
    CANCELLED = "cancelled"  # while running


SHARES = {
    Outcome.SUCCEEDED: 0.90,
    Outcome.PRECHECK_FAILED: 0.065 * 0.35,
    Outcome.FAILED: 0.065 * 0.65,
    Outcome.CANCELLED_QUEUED: 0.035 * 0.5,
    Outcome.CANCELLED: 0.035 * 0.5,
}


@dataclasses.dataclass(frozen=True)
class SeedOptions:
    migrations: int = 10_000
    events: int = 50_000  # audit events in all
    hosts: int = 24
    vms: int = 3_000
    users: int = 10
    days: int = 365
    seed: int = 1
    batch_size: int = 5_000


class _History(synthetic.Inventory):
    def plan_migrations(self, count: int, since: datetime, now: datetime) -> None:
        span = (now - since).total_seconds() - 3600
        times = sorted(since + timedelta(seconds=self.random() * span) for _ in range(count))
        for created_at in times:
            vm = self.choice(self.vms)
            if vm.busy_until and vm.busy_until >= created_at:
                vm = self.choice(self.vms)  # a VM is migrated once at a time (mostly)
            destination = self.randrange(len(self.hosts) - 1)
            destination += destination >= vm.host
            (outcome,) = self.choices(list(SHARES), list(SHARES.values()))
            migration = self.migration(vm, destination, outcome, created_at)
            vm.busy_until = migration.finished_at
            if outcome is Outcome.SUCCEEDED:
                vm.host = destination

    def migration(
        self, vm: synthetic.SeedVM, destination: int, outcome: Outcome, created_at: datetime
    ) -> Migration:
        """One request's Migration row and audit events, one status change at a time."""
        source, target, user = self.hosts[vm.host], self.hosts[destination], self.choice(self.users)
        worker, live = self.actor(), self.random() < 0.85
        m = Migration(
            vm_uuid=vm.uuid,
            vm_name=vm.name,
            source=source,
            destination=target,
            requested_by=user,
            requested_by_name=user.username,
            status=Status.QUEUED,
            live=live,
            max_downtime_ms=500,
            timeout_s=TIMEOUT_S,
            created_at=created_at,
            claimed_by=worker["actor_name"].removeprefix("worker "),
        )
        link = ("migration", len(self.migrations))
        self.migrations.append(m)
        about = {"vm_uuid": str(vm.uuid), "vm_name": vm.name, "source": source.name}
        about["destination"] = target.name

        def record(when, event_type, actor, before=None, after=None, **detail) -> None:
            self.event(
                when,
                event_type,
                actor,
                link=link,
                before=before,
                after=after,
                detail={**about, **detail},
                target_type="migrations_app.migration",
                target_repr=f"{vm.name} {source.name} -> {target.name}",
                host_name=source.name,
                peer_host_name=target.name,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
            )

        def enter(when: datetime, status: Status, actor: dict, **detail) -> None:
            if status not in ALLOWED_TRANSITIONS[m.status]:
                raise AssertionError(f"{m.status} -> {status} is not in the lifecycle")
            record(when, ENTERED[status], actor, {"status": m.status}, {"status": status}, **detail)
            m.status = status

        options = {"live": live, "storage": "shared", "transport": "direct"}
        after = {"status": m.status}
        record(created_at, ENTERED[m.status], self.actor(user), None, after, options=options)
        when = created_at + timedelta(seconds=self.expovariate(1 / 3))
        if outcome is Outcome.CANCELLED_QUEUED:
            m.finished_at = m.cancel_requested_at = when
            m.error = f"Cancelled by {user.username} before it started."
            m.phase = m.claimed_by = ""
            enter(when, Status.CANCELLED, self.actor(user))
            return m
        m.started_at = m.heartbeat_at = when
        enter(when, Status.CHECKING, worker, worker=m.claimed_by)
        when += timedelta(seconds=self.uniform(0.2, 1.5))
        if outcome is Outcome.PRECHECK_FAILED:
            m.finished_at, m.error = when, f"Pre-checks failed: {self.precheck_failure(vm, target)}"
            m.failure_reason, m.phase = FailureReason.PRECHECK, Phase.CHECKS_FAILED
            enter(when, Status.FAILED, worker, error=m.error)
            return m
        enter(when, Status.MIGRATING, worker)
        stats = self.job_stats(vm.memory_gib, live)
        elapsed = timedelta(milliseconds=stats["time_elapsed"])
        if outcome is Outcome.SUCCEEDED:
            enter(when + elapsed, Status.COMPLETING, worker)
            m.finished_at = when + elapsed + timedelta(seconds=self.uniform(0.5, 3))
            m.phase, m.percent, m.data_remaining_bytes = Phase.DONE, 100.0, 0
            m.data_total_bytes = stats["data_total"]
            m.data_processed_bytes = stats["data_processed"]
            for name, value in completed_fields(stats).items():
                setattr(m, name, value)
            enter(m.finished_at, Status.SUCCEEDED, worker)
            return m
        # Failed or cancelled while running, part of the way through.
        m.finished_at = when = when + elapsed * self.uniform(0.05, 0.9)
        m.percent = round(self.uniform(1, 95), 1)
        if outcome is Outcome.CANCELLED:
            m.cancel_requested_at, m.phase = when - timedelta(seconds=1), Phase.CANCELLED
            m.error = (
                "cancelled on request: operation aborted: migration out job: canceled by "
                f"client (resumed the VM on {source.name})"
            )
            cancel = EventType.MIGRATION_CANCEL_REQUESTED
            record(m.cancel_requested_at, cancel, self.actor(user), status=m.status)
            enter(when, Status.CANCELLED, worker, error=m.error)
            return m
        m.failure_reason, error = self.run_failure(TIMEOUT_S, target, m.claimed_by)
        m.error = f"{error} (removed the incomplete copy on {target.name})"
        m.phase = Phase.FAILED
        enter(when, Status.FAILED, worker, error=m.error)
        return m


def seed(options: SeedOptions, out: TextIO = sys.stdout) -> None:
    if options.hosts < 2:
        raise ValueError("a migration needs at least 2 hosts")
    started = time.monotonic()
    now = timezone.now().replace(microsecond=0)
    since = now - timedelta(days=options.days)
    with transaction.atomic():
        history = _History(options.seed, options.hosts, options.users, options.vms, since)
    history.plan_migrations(options.migrations, since, now)
    history.plan_other_events(options.events, since, now)
    with transaction.atomic():
        synthetic.insert_with_ids(Migration, history.migrations, options.batch_size)
    out.write(f"{len(history.migrations)} migrations ({time.monotonic() - started:.1f} s)\n")
    with transaction.atomic():
        history.write_vms(now)
    vm_ids = dict(VM.objects.values_list("uuid", "id"))
    history.events.sort(key=lambda e: e.when)  # stable: events at one time keep their order
    for event in history.events:
        if event.link is not None:
            kind, key = event.link
            pk = history.migrations[key].pk if kind == "migration" else vm_ids[key]
            event.fields["target_id"] = str(pk)
    rows = [{**event.fields, "occurred_at": event.when} for event in history.events]
    history.events.clear()
    with transaction.atomic():
        synthetic.insert_with_ids(AuditEvent, rows, options.batch_size)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and not connection.in_atomic_block:
            # The visibility map too: index-only scans right after seeding would read the heap.
            cursor.execute("VACUUM (ANALYZE)")
        else:
            cursor.execute("ANALYZE")
    out.write(
        f"{len(rows)} audit events; {len(history.hosts)} hosts, {len(history.vms)} VMs, "
        f"{len(history.users)} users in {time.monotonic() - started:.1f} s\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for field in dataclasses.fields(SeedOptions):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=field.default)
    options = SeedOptions(**vars(parser.parse_args()))
    if options.hosts < 2:
        parser.error("--hosts must be at least 2")
    seed(options)


if __name__ == "__main__":
    main()
