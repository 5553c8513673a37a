"""Fill the database with a realistic synthetic history, for demos and benchmarks.

    manage.py seed_history --migrations 100000 --events 500000

Creates users, hosts, VMs, migrations spread over the last --days days (most succeed,
some fail for the reasons the engine writes, some are cancelled) with libvirt-like
completed statistics, and the audit events of all of it, in time order: each
migration's lifecycle (requested, checking, started, completing, succeeded / failed /
cancelled), host and VM events, logins, failed logins, up to --events in total.
Everything is deterministic for a given --seed (except the ids, which follow the rows
already there). Migrations and events are written with COPY (PostgreSQL) or
executemany (SQLite), ids assigned here; audit events cannot be deleted, so seed an
empty database.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.core.management.color import no_style
from django.db import connection, models, transaction
from django.utils import timezone

from audit.events import EventType
from audit.models import AuditEvent
from hosts.models import Host, HostStatus
from migrations_app.domain.lifecycle import FailureReason, MigrationStatus, Phase
from migrations_app.models import Migration
from vms.models import VM, VMState

SITES = ["ams", "fra", "par", "lon"]
ROLES = ["web", "api", "db", "cache", "queue", "ci", "k8s-node", "search", "mail", "vpn"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
MEMORY_GIB = [1, 2, 2, 4, 4, 4, 8, 8, 16, 32, 64]
GIB = 1024**3
WORKERS = ["portal-1", "portal-2"]

PRECHECK_FAILURES = [
    "enough_memory: {dst} has {free:.1f} GiB free, the VM needs {need:.1f} GiB",
    "cpu_compatible: the VM uses CPU mode 'host-passthrough', tied to its host's CPU",
    "destination_reachable: cannot connect to {dst_addr}:16509: Connection refused",
    "no_host_devices: the VM has a host device (PCI passthrough)",
    "disks_available: /var/lib/libvirt/images/{vm}.qcow2 is not on storage {dst} sees",
]
RUN_FAILURES = [
    (FailureReason.LIBVIRT, "operation failed: migration out job: unexpectedly failed"),
    (FailureReason.LIBVIRT, "internal error: qemu unexpectedly closed the monitor"),
    (
        FailureReason.LIBVIRT,
        "operation failed: job 'migration out' failed: Unable to write to socket",
    ),
    (
        FailureReason.TIMEOUT,
        "timed out after {timeout} s: operation aborted: migration out job: canceled",
    ),
    (
        FailureReason.UNREACHABLE,
        "cannot open qemu+tcp://{dst_addr}/system: unable to connect to server",
    ),
    (
        FailureReason.WORKER_LOST,
        "the worker running this migration ({worker}) stopped; settled by the reconciler",
    ),
]


def _converter(field: models.Field):
    """Python value -> what the database driver takes, for the few field types here."""
    kind = field.get_internal_type()
    if kind == "JSONField":
        return lambda v: None if v is None else json.dumps(v, separators=(",", ":"))
    if connection.vendor == "sqlite":
        if kind == "DateTimeField":
            return connection.ops.adapt_datetimefield_value
        if kind == "UUIDField":
            return lambda v: v.hex if v is not None else None
    return lambda v: v


def _insert(model, rows: list, batch_size: int) -> None:
    """Insert `rows` (model instances, or dicts attname -> value; ids included) fast:
    COPY on PostgreSQL, executemany on SQLite. bulk_create spends most of its time
    compiling SQL, this does not. Fields a dict does not give take their default."""
    fields = list(model._meta.concrete_fields)
    defaults = {f.attname: f.get_default() for f in fields}
    converters = [(f.attname, _converter(f)) for f in fields]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)

    def values(row) -> tuple:
        if isinstance(row, models.Model):
            return tuple(convert(getattr(row, name)) for name, convert in converters)
        return tuple(
            convert(row[name] if name in row else defaults.get(name))
            for name, convert in converters
        )

    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(values(row))
        else:
            sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
            for start in range(0, len(rows), batch_size):
                cursor.executemany(sql, [values(r) for r in rows[start : start + batch_size]])
        for statement in connection.ops.sequence_reset_sql(no_style(), [model]):
            cursor.execute(statement)


def _next_id(model) -> int:
    return (model.objects.aggregate(m=models.Max("id"))["m"] or 0) + 1


@dataclass
class _VM:
    uuid: uuid.UUID
    name: str
    memory_gib: int
    host: int  # index into hosts (where the VM is now)
    first_host: int = 0
    busy_until: datetime | None = None


@dataclass
class _Plan:
    hosts: list[Host]
    users: list
    vms: list[_VM]
    migrations: list[Migration] = field(default_factory=list)
    # (occurred_at, sequence, event fields, link): link ("migration", index) or
    # ("vm", uuid) names a row whose id is known only once it is written.
    events: list[tuple] = field(default_factory=list)


class Command(BaseCommand):
    help = "Fill the database with synthetic hosts, VMs, migrations and audit events."

    def add_arguments(self, parser):
        parser.add_argument("--migrations", type=int, default=10_000)
        parser.add_argument("--events", type=int, default=50_000, help="Total audit events.")
        parser.add_argument("--hosts", type=int, default=24)
        parser.add_argument("--vms", type=int, default=3_000)
        parser.add_argument("--users", type=int, default=10)
        parser.add_argument("--days", type=int, default=365)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--batch-size", type=int, default=5_000)

    def handle(self, *args, **options):
        if options["hosts"] < 2:
            raise CommandError("--hosts must be at least 2")
        started = time.monotonic()
        rng = random.Random(options["seed"])
        now = timezone.now().replace(microsecond=0)
        since = now - timedelta(days=options["days"])
        batch = options["batch_size"]

        with transaction.atomic():
            users = self._users(options["users"])
            hosts = self._hosts(rng, options["hosts"], since)
        vms = [
            _VM(
                uuid=uuid.UUID(int=rng.getrandbits(128), version=4),
                name=f"{rng.choice(ROLES)}-{i:05d}",
                memory_gib=rng.choice(MEMORY_GIB),
                host=rng.randrange(len(hosts)),
            )
            for i in range(options["vms"])
        ]
        for vm in vms:
            vm.first_host = vm.host
        plan = _Plan(hosts=hosts, users=users, vms=vms)
        self._plan_migrations(rng, plan, options["migrations"], since, now)
        self._plan_other_events(rng, plan, options["events"], since, now)

        first_id = _next_id(Migration)
        for offset, migration in enumerate(plan.migrations):
            migration.id = first_id + offset
        with transaction.atomic():
            _insert(Migration, plan.migrations, batch)
        self.stdout.write(f"{len(plan.migrations)} migrations ({time.monotonic() - started:.1f} s)")

        with transaction.atomic():
            self._vm_rows(plan, now)
        vm_ids = dict(VM.objects.values_list("uuid", "id"))
        plan.events.sort(key=lambda e: (e[0], e[1]))
        first_id = _next_id(AuditEvent)
        rows = []
        for offset, (occurred_at, _seq, fields, link) in enumerate(plan.events):
            fields["id"] = first_id + offset
            fields["occurred_at"] = occurred_at
            if link is not None:
                kind, key = link
                pk = plan.migrations[key].pk if kind == "migration" else vm_ids[key]
                fields["target_id"] = str(pk)
            rows.append(fields)
        plan.events.clear()
        with transaction.atomic():
            _insert(AuditEvent, rows, batch)
        written = len(rows)
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql" and not connection.in_atomic_block:
                # Fresh planner statistics, and the visibility map autovacuum would set
                # later: until then index-only scans (the host list's VM counts) read
                # the heap, and a benchmark right after seeding measures that.
                cursor.execute("VACUUM (ANALYZE)")
            else:
                cursor.execute("ANALYZE")
        self.stdout.write(
            f"{written} audit events; {len(hosts)} hosts, {len(vms)} VMs, {len(users)} users "
            f"in {time.monotonic() - started:.1f} s"
        )

    # --- rows that exist before the history -------------------------------------------

    def _users(self, count: int) -> list:
        User = get_user_model()
        names = [f"ops-{PEOPLE[i % len(PEOPLE)]}{i // len(PEOPLE) or ''}" for i in range(count)]
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        unusable = make_password(None)
        User.objects.bulk_create(
            User(username=n, password=unusable, is_staff=True) for n in names if n not in existing
        )
        return list(User.objects.filter(username__in=names).order_by("username"))

    def _hosts(self, rng: random.Random, count: int, since: datetime) -> list[Host]:
        names = [f"kvm-{SITES[i % len(SITES)]}-{i // len(SITES) + 1:02d}" for i in range(count)]
        existing = set(Host.objects.filter(name__in=names).values_list("name", flat=True))
        Host.objects.bulk_create(
            Host(
                name=name,
                address=f"10.{20 + i % len(SITES)}.{i // 250}.{i % 250 + 1}",
                status=HostStatus.REACHABLE,
                hostname=f"{name}.example.net",
                arch="x86_64",
                cpu_model="EPYC-Milan",
                cpu_vendor="AMD",
                cpu_count=rng.choice([32, 64, 128]),
                hypervisor_type="QEMU",
                hypervisor_version="7.2.0",
                libvirt_version="9.0.0",
                memory_total_bytes=rng.choice([256, 512, 1024]) * GIB,
                last_seen_at=since,
            )
            for i, name in enumerate(names)
            if name not in existing
        )
        return list(Host.objects.filter(name__in=names).order_by("name"))

    def _vm_rows(self, plan: _Plan, now: datetime) -> None:
        existing = set(VM.objects.values_list("uuid", flat=True))
        VM.objects.bulk_create(
            (
                VM(
                    uuid=vm.uuid,
                    name=vm.name,
                    host=plan.hosts[vm.host],
                    state=VMState.RUNNING,
                    persistent=True,
                    vcpus=max(1, vm.memory_gib // 2),
                    memory_kib=vm.memory_gib * 1024 * 1024,
                    max_memory_kib=vm.memory_gib * 1024 * 1024,
                    arch="x86_64",
                    machine_type="pc-q35-7.2",
                    domain_type="kvm",
                    last_synced_at=now,
                )
                for vm in plan.vms
                if vm.uuid not in existing
            ),
            batch_size=2000,
        )

    # --- migrations and their events ----------------------------------------------------

    def _event(self, plan: _Plan, when: datetime, link: tuple | None, **fields) -> None:
        plan.events.append((when, len(plan.events), fields, link))

    def _plan_migrations(
        self, rng: random.Random, plan: _Plan, count: int, since: datetime, now: datetime
    ) -> None:
        span = (now - since).total_seconds() - 3600
        times = sorted(since + timedelta(seconds=rng.random() * span) for _ in range(count))
        hosts = plan.hosts
        for index, created_at in enumerate(times):
            vm = rng.choice(plan.vms)
            if vm.busy_until and vm.busy_until >= created_at:
                vm = rng.choice(plan.vms)  # a VM is migrated once at a time (mostly)
            source = vm.host
            destination = rng.randrange(len(hosts) - 1)
            destination += destination >= source
            user = rng.choice(plan.users)
            live = rng.random() < 0.85
            roll = rng.random()
            status = (
                MigrationStatus.SUCCEEDED
                if roll < 0.90
                else MigrationStatus.FAILED
                if roll < 0.965
                else MigrationStatus.CANCELLED
            )
            migration, lifecycle = self._migration(
                rng, vm, hosts[source], hosts[destination], user, live, status, created_at
            )
            plan.migrations.append(migration)
            vm.busy_until = migration.finished_at
            if status == MigrationStatus.SUCCEEDED:
                vm.host = destination
            detail = {
                "vm_uuid": str(vm.uuid),
                "vm_name": vm.name,
                "source": hosts[source].name,
                "destination": hosts[destination].name,
            }
            common = {
                "target_type": "migrations_app.migration",
                "target_repr": f"{vm.name} {hosts[source].name} -> {hosts[destination].name}",
                "host_name": hosts[source].name,
                "peer_host_name": hosts[destination].name,
                "vm_uuid": vm.uuid,
                "vm_name": vm.name,
            }
            for when, event_type, actor, before, after, extra in lifecycle:
                self._event(
                    plan,
                    when,
                    ("migration", index),
                    event_type=event_type,
                    before=before,
                    after=after,
                    detail={**detail, **extra},
                    **actor,
                    **common,
                )

    def _user_actor(self, rng: random.Random, user) -> dict:
        token = rng.random() < 0.3
        return {
            "actor_id": user.pk,
            "actor_name": user.username,
            "source_ip": f"192.0.2.{user.pk % 250 + 1}",
            "auth_method": "token" if token else "session",
            "request_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        }

    def _worker_actor(self, rng: random.Random) -> dict:
        return {
            "actor_id": None,
            "actor_name": f"worker {rng.choice(WORKERS)}:{rng.randrange(1000, 9999)}",
            "source_ip": None,
            "auth_method": "system",
            "request_id": uuid.UUID(int=rng.getrandbits(128), version=4).hex,
        }

    def _migration(self, rng, vm, source, destination, user, live, status, created_at):
        """The Migration row and its lifecycle events (when, type, actor, before, after,
        extra detail)."""
        by_user = self._user_actor(rng, user)
        worker = self._worker_actor(rng)
        options = {"live": live, "storage": "shared", "transport": "direct"}
        timeout_s = 21600
        migration = Migration(
            vm_uuid=vm.uuid,
            vm_name=vm.name,
            source=source,
            destination=destination,
            requested_by=user,
            requested_by_name=user.username,
            status=status,
            live=live,
            max_downtime_ms=500,
            timeout_s=timeout_s,
            created_at=created_at,
            claimed_by=worker["actor_name"].removeprefix("worker "),
        )
        events = [
            (
                created_at,
                EventType.MIGRATION_REQUESTED,
                by_user,
                None,
                {"status": "queued"},
                {"options": options},
            ),
        ]
        queued_s = rng.expovariate(1 / 3)
        if status == MigrationStatus.CANCELLED and rng.random() < 0.5:
            # Taken out of the queue before a worker claimed it.
            finished = created_at + timedelta(seconds=queued_s)
            migration.finished_at = migration.cancel_requested_at = finished
            migration.error = f"Cancelled by {user.username} before it started."
            migration.phase = ""
            migration.claimed_by = ""
            events.append(
                (
                    finished,
                    EventType.MIGRATION_CANCELLED,
                    self._user_actor(rng, user),
                    {"status": "queued"},
                    {"status": "cancelled"},
                    {},
                )
            )
            return migration, events

        started = created_at + timedelta(seconds=queued_s)
        migration.started_at = migration.heartbeat_at = started
        events.append(
            (
                started,
                EventType.MIGRATION_CHECKING,
                worker,
                {"status": "queued"},
                {"status": "checking"},
                {"worker": migration.claimed_by},
            )
        )
        checks_s = rng.uniform(0.2, 1.5)
        if status == MigrationStatus.FAILED and rng.random() < 0.35:
            message = rng.choice(PRECHECK_FAILURES).format(
                dst=destination.name,
                dst_addr=destination.address,
                vm=vm.name,
                free=rng.uniform(0.5, vm.memory_gib * 0.9),
                need=float(vm.memory_gib),
            )
            finished = started + timedelta(seconds=checks_s)
            migration.finished_at = finished
            migration.error = f"Pre-checks failed: {message}"
            migration.failure_reason = FailureReason.PRECHECK
            migration.phase = Phase.CHECKS_FAILED
            events.append(
                (
                    finished,
                    EventType.MIGRATION_FAILED,
                    worker,
                    {"status": "checking"},
                    {"status": "failed"},
                    {"error": migration.error},
                )
            )
            return migration, events

        running = started + timedelta(seconds=checks_s)
        events.append(
            (
                running,
                EventType.MIGRATION_STARTED,
                worker,
                {"status": "checking"},
                {"status": "migrating"},
                {},
            )
        )
        stats = self._job_stats(rng, vm, live)
        elapsed = timedelta(milliseconds=stats["time_elapsed"])
        if status == MigrationStatus.SUCCEEDED:
            completing = running + elapsed
            finished = completing + timedelta(seconds=rng.uniform(0.5, 3))
            migration.finished_at = finished
            migration.phase = Phase.DONE
            migration.percent = 100.0
            migration.completed_stats = stats
            migration.total_time_ms = stats["time_elapsed"]
            migration.downtime_ms = stats.get("downtime")
            migration.setup_time_ms = stats["setup_time"]
            migration.transferred_bytes = stats["data_processed"]
            migration.data_total_bytes = stats["data_total"]
            migration.data_processed_bytes = stats["data_processed"]
            migration.data_remaining_bytes = 0
            events.append(
                (
                    completing,
                    EventType.MIGRATION_COMPLETING,
                    worker,
                    {"status": "migrating"},
                    {"status": "completing"},
                    {},
                )
            )
            events.append(
                (
                    finished,
                    EventType.MIGRATION_SUCCEEDED,
                    worker,
                    {"status": "completing"},
                    {"status": "succeeded"},
                    {},
                )
            )
            return migration, events

        # Failed or cancelled while running, part of the way through.
        finished = running + elapsed * rng.uniform(0.05, 0.9)
        migration.finished_at = finished
        migration.percent = round(rng.uniform(1, 95), 1)
        if status == MigrationStatus.CANCELLED:
            migration.cancel_requested_at = finished - timedelta(seconds=1)
            migration.error = (
                f"cancelled on request: operation aborted: migration out job: canceled by client "
                f"(resumed the VM on {source.name})"
            )
            migration.phase = Phase.CANCELLED
            events.append(
                (
                    migration.cancel_requested_at,
                    EventType.MIGRATION_CANCEL_REQUESTED,
                    self._user_actor(rng, user),
                    None,
                    None,
                    {"status": "migrating"},
                )
            )
            events.append(
                (
                    finished,
                    EventType.MIGRATION_CANCELLED,
                    worker,
                    {"status": "migrating"},
                    {"status": "cancelled"},
                    {"error": migration.error},
                )
            )
            return migration, events
        reason, template = rng.choice(RUN_FAILURES)
        migration.failure_reason = reason
        migration.error = (
            template.format(
                timeout=timeout_s, dst_addr=destination.address, worker=migration.claimed_by
            )
            + f" (removed the incomplete copy on {destination.name})"
        )
        migration.phase = Phase.FAILED
        events.append(
            (
                finished,
                EventType.MIGRATION_FAILED,
                worker,
                {"status": "migrating"},
                {"status": "failed"},
                {"error": migration.error},
            )
        )
        return migration, events

    def _job_stats(self, rng: random.Random, vm: _VM, live: bool) -> dict:
        """libvirt-like completed job statistics of a migration of `vm`."""
        memory = vm.memory_gib * GIB
        setup_ms = int(rng.lognormvariate(math.log(40), 0.4))
        if not live:
            # An offline migration moves the definition (and the memory of a paused VM).
            elapsed_ms = setup_ms + int(rng.lognormvariate(math.log(800), 0.5))
            return {
                "type": 3,
                "operation": 2,
                "success": True,
                "time_elapsed": elapsed_ms,
                "setup_time": setup_ms,
                "data_total": 0,
                "data_processed": 0,
                "data_remaining": 0,
            }
        bandwidth = rng.uniform(0.4, 1.1) * GIB  # bytes/s on a 10 GbE link
        dirty_factor = rng.lognormvariate(math.log(1.3), 0.25)  # re-sent dirty pages
        processed = int(memory * rng.uniform(0.15, 0.7) * dirty_factor)  # only used pages
        elapsed_ms = setup_ms + int(1000 * processed / bandwidth)
        downtime = int(rng.lognormvariate(math.log(45), 0.7))
        if rng.random() < 0.02:
            downtime += rng.randrange(300, 3000)  # a guest that dirties memory fast
        page = 4096
        return {
            "type": 3,
            "operation": 2,
            "success": True,
            "time_elapsed": elapsed_ms,
            "time_elapsed_net": elapsed_ms - rng.randrange(0, 5),
            "downtime": downtime,
            "downtime_net": max(1, downtime - rng.randrange(0, 5)),
            "setup_time": setup_ms,
            "data_total": memory,
            "data_processed": processed,
            "data_remaining": 0,
            "memory_total": memory,
            "memory_processed": processed,
            "memory_remaining": 0,
            "memory_constant": (memory - processed) // page,
            "memory_normal": processed // page,
            "memory_normal_bytes": processed,
            "memory_bps": int(bandwidth),
            "memory_dirty_rate": rng.randrange(0, 20_000),
            "memory_page_size": page,
            "memory_iteration": rng.randrange(2, 12),
            "memory_postcopy_requests": 0,
        }

    # --- the rest of the log ------------------------------------------------------------

    def _plan_other_events(
        self, rng: random.Random, plan: _Plan, total: int, since: datetime, now: datetime
    ) -> None:
        system = {"actor_id": None, "actor_name": "make demo", "source_ip": None}
        admin = plan.users[0]
        for host in plan.hosts:
            when = since - timedelta(minutes=rng.randrange(60, 600))
            self._event(
                plan,
                when,
                None,
                event_type=EventType.HOST_CREATED,
                target_type="hosts.host",
                target_id=str(host.pk),
                target_repr=host.name,
                host_name=host.name,
                after={"name": host.name, "address": host.address, "transport": "tcp"},
                detail={},
                **self._user_actor(rng, admin),
            )
        for vm in plan.vms:
            when = since - timedelta(minutes=rng.randrange(0, 60))
            self._event(
                plan,
                when,
                ("vm", vm.uuid),
                event_type=EventType.VM_DISCOVERED,
                target_type="vms.vm",
                target_repr=f"{vm.name} on {plan.hosts[vm.first_host].name}",
                host_name=plan.hosts[vm.first_host].name,
                vm_uuid=vm.uuid,
                vm_name=vm.name,
                after={"state": "running"},
                detail={},
                auth_method="system",
                request_id=uuid.uuid4().hex,
                **system,
            )
        span = (now - since).total_seconds()
        remaining = total - len(plan.events)
        for _ in range(max(0, remaining)):
            when = since + timedelta(seconds=rng.random() * span)
            roll = rng.random()
            user = rng.choice(plan.users)
            if roll < 0.55:
                self._auth_event(rng, plan, when, EventType.AUTH_LOGIN, user)
            elif roll < 0.85:
                self._auth_event(rng, plan, when, EventType.AUTH_LOGOUT, user)
            elif roll < 0.92:
                self._auth_event(rng, plan, when, EventType.AUTH_LOGIN_FAILED, user)
            else:
                host = rng.choice(plan.hosts)
                down = rng.random() < 0.5
                self._event(
                    plan,
                    when,
                    None,
                    event_type=EventType.HOST_UNREACHABLE if down else EventType.HOST_REACHABLE,
                    target_type="hosts.host",
                    target_id=str(host.pk),
                    target_repr=host.name,
                    host_name=host.name,
                    before={"status": "reachable" if down else "unreachable"},
                    after={"status": "unreachable" if down else "reachable"},
                    detail={"error": f"{host.address}:16509 did not answer within 5 s"}
                    if down
                    else {},
                    **self._worker_actor(rng) | {"actor_name": "inventory-sync"},
                )

    def _auth_event(self, rng, plan: _Plan, when: datetime, event_type: str, user) -> None:
        failed = event_type == EventType.AUTH_LOGIN_FAILED
        self._event(
            plan,
            when,
            None,
            event_type=event_type,
            actor_id=None if failed else user.pk,
            actor_name=user.username,
            source_ip=f"192.0.2.{user.pk % 250 + 1}"
            if not failed
            else f"203.0.113.{rng.randrange(1, 255)}",
            auth_method="session" if event_type == EventType.AUTH_LOGOUT else "password",
            request_id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            target_type="auth.user",
            target_id=str(user.pk),
            target_repr=user.username,
            detail={"account_exists": True} if failed else {},
        )
