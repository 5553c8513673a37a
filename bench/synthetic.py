"""bench/seed_history.py's inventory, plausible random values and events, and a fast writer."""

from __future__ import annotations

import json
import math
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.color import no_style
from django.db import connection, models

from audit.events import EventType
from hosts.models import Host, HostStatus, default_group_id
from migrations_app.domain.lifecycle import FailureReason
from vms.models import VM, VMState

GIB = 1024**3
SITES = ["ams", "fra", "par", "lon"]
ROLES = ["web", "api", "db", "cache", "queue", "ci", "k8s-node", "search", "mail", "vpn"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy"]
MEMORY_GIB = [1, 2, 2, 4, 4, 4, 8, 8, 16, 32, 64]
PRECHECK_FAILURES = [
    "enough_memory: {dst} has {free:.1f} GiB free, the VM needs {need:.1f} GiB",
    "cpu_compatible: the VM uses CPU mode 'host-passthrough', tied to its host's CPU",
    "destination_reachable: cannot connect to {addr}:16509: Connection refused",
    "no_host_devices: the VM has a host device (PCI passthrough)",
    "disks_available: /var/lib/libvirt/images/{vm}.qcow2 is not on storage {dst} sees",
]
R = FailureReason
RUN_FAILURES = [
    (R.LIBVIRT, "operation failed: migration out job: unexpectedly failed"),
    (R.LIBVIRT, "internal error: qemu unexpectedly closed the monitor"),
    (R.LIBVIRT, "operation failed: job 'migration out' failed: Unable to write to socket"),
    (R.TIMEOUT, "timed out after {timeout} s: operation aborted: migration out job: canceled"),
    (R.UNREACHABLE, "cannot open qemu+tcp://{addr}/system: unable to connect to server"),
    (
        R.WORKER_LOST,
        "the worker running this migration ({worker}) stopped; settled by the reconciler",
    ),
]


@dataclass
class SeedVM:
    uuid: uuid.UUID
    name: str
    memory_gib: int
    host: int  # index into the hosts: where it runs now
    first_host: int
    busy_until: datetime | None = None  # the end of its last migration


@dataclass
class SeedEvent:
    when: datetime
    fields: dict
    link: tuple[str, object] | None = None  # ("migration", index) / ("vm", uuid): id later


class Inventory(random.Random):
    """Users and hosts (written at once), VMs (planned), and the events planned so far."""

    def __init__(self, seed: int, hosts: int, users: int, vms: int, since: datetime) -> None:
        super().__init__(seed)
        self.users = _users(users)
        self.hosts = _hosts(self, hosts, since)
        self.vms = [self._vm(i) for i in range(vms)]
        self.migrations: list = []
        self.events: list[SeedEvent] = []

    def _vm(self, index: int) -> SeedVM:
        host = self.randrange(len(self.hosts))
        name = f"{self.choice(ROLES)}-{index:05d}"
        return SeedVM(self.uuid(), name, self.choice(MEMORY_GIB), host, host)

    def uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.getrandbits(128), version=4)

    def actor(self, user=None, **override) -> dict:
        """A user's request (session or token) or, without a user, a worker's."""
        if user is None:
            worker = f"{self.choice(['portal-1', 'portal-2'])}:{self.randrange(1000, 9999)}"
            actor = {"actor_id": None, "actor_name": f"worker {worker}", "source_ip": None}
            actor["auth_method"] = "system"
        else:
            actor = {"actor_id": user.pk, "actor_name": user.username}
            actor["source_ip"] = f"192.0.2.{user.pk % 250 + 1}"
            actor["auth_method"] = "token" if self.random() < 0.3 else "session"
        return {**actor, "request_id": self.uuid().hex, **override}

    def event(self, when: datetime, event_type, actor: dict, *, link=None, **fields) -> None:
        fields = {"event_type": event_type, "detail": {}, **actor, **fields}
        self.events.append(SeedEvent(when, fields, link))

    def precheck_failure(self, vm: SeedVM, destination: Host) -> str:
        return self.choice(PRECHECK_FAILURES).format(
            dst=destination.name,
            addr=destination.address,
            vm=vm.name,
            free=self.uniform(0.5, vm.memory_gib * 0.9),
            need=float(vm.memory_gib),
        )

    def run_failure(self, timeout_s: int, destination: Host, worker: str) -> tuple[R, str]:
        reason, template = self.choice(RUN_FAILURES)
        return reason, template.format(timeout=timeout_s, addr=destination.address, worker=worker)

    def job_stats(self, memory_gib: int, live: bool) -> dict:
        """libvirt-like completed job statistics of a migration of a VM this big."""
        memory, page = memory_gib * GIB, 4096
        setup_ms = int(self.lognormvariate(math.log(40), 0.4))
        stats = {"type": 3, "operation": 2, "success": True, "setup_time": setup_ms}
        if not live:  # the definition (and the memory of a paused VM) moves
            elapsed_ms = setup_ms + int(self.lognormvariate(math.log(800), 0.5))
            nothing = {"data_total": 0, "data_processed": 0, "data_remaining": 0}
            return {**stats, "time_elapsed": elapsed_ms, **nothing}
        bandwidth = self.uniform(0.4, 1.1) * GIB  # bytes/s on a 10 GbE link
        dirty_factor = self.lognormvariate(math.log(1.3), 0.25)  # re-sent dirty pages
        sent = int(memory * self.uniform(0.15, 0.7) * dirty_factor)  # only used pages
        elapsed_ms = setup_ms + int(1000 * sent / bandwidth)
        downtime = int(self.lognormvariate(math.log(45), 0.7))
        if self.random() < 0.02:
            downtime += self.randrange(300, 3000)  # a guest that dirties memory fast
        return stats | {
            "time_elapsed": elapsed_ms,
            "time_elapsed_net": elapsed_ms - self.randrange(0, 5),
            "downtime": downtime,
            "downtime_net": max(1, downtime - self.randrange(0, 5)),
            "data_total": memory,
            "data_processed": sent,
            "data_remaining": 0,
            "memory_total": memory,
            "memory_processed": sent,
            "memory_remaining": 0,
            "memory_constant": (memory - sent) // page,
            "memory_normal": sent // page,
            "memory_normal_bytes": sent,
            "memory_bps": int(bandwidth),
            "memory_dirty_rate": self.randrange(0, 20_000),
            "memory_page_size": page,
            "memory_iteration": self.randrange(2, 12),
            "memory_postcopy_requests": 0,
        }

    def plan_other_events(self, total: int, since: datetime, now: datetime) -> None:
        """Inventory events before the history, then random logins and host changes."""
        admin = self.users[0]
        for host in self.hosts:
            about = {"target_type": "hosts.host", "target_id": str(host.pk)}
            about |= {"target_repr": host.name, "host_name": host.name}
            after = {"name": host.name, "address": host.address, "transport": "tcp"}
            when = since - timedelta(minutes=self.randrange(60, 600))
            self.event(when, EventType.HOST_CREATED, self.actor(admin), after=after, **about)
        for vm in self.vms:
            first = self.hosts[vm.first_host].name
            about = {"target_type": "vms.vm", "target_repr": f"{vm.name} on {first}"}
            about |= {"host_name": first, "vm_uuid": vm.uuid, "vm_name": vm.name}
            when = since - timedelta(minutes=self.randrange(0, 60))
            actor = self.actor(actor_name="make demo")
            after = {"state": "running"}
            link = ("vm", vm.uuid)
            self.event(when, EventType.VM_DISCOVERED, actor, link=link, after=after, **about)
        span = (now - since).total_seconds()
        for _ in range(total - len(self.events)):
            self._background_event(since + timedelta(seconds=self.random() * span))

    def _background_event(self, when: datetime) -> None:
        """A login (55 %), logout (30 %), failed login (7 %) or host status change."""
        roll, user = self.random(), self.choice(self.users)
        if roll >= 0.92:
            host, down = self.choice(self.hosts), self.random() < 0.5
            states = [{"status": "reachable"}, {"status": "unreachable"}][:: 1 if down else -1]
            error = {"error": f"{host.address}:16509 did not answer within 5 s"}
            self.event(
                when,
                EventType.HOST_UNREACHABLE if down else EventType.HOST_REACHABLE,
                self.actor(actor_name="inventory-sync"),
                target_type="hosts.host",
                target_id=str(host.pk),
                target_repr=host.name,
                host_name=host.name,
                before=states[0],
                after=states[1],
                detail=error if down else {},
            )
            return
        if roll < 0.55:
            kind = EventType.AUTH_LOGIN
        else:
            kind = EventType.AUTH_LOGOUT if roll < 0.85 else EventType.AUTH_LOGIN_FAILED
        actor = self.actor(user, auth_method="password")
        if kind == EventType.AUTH_LOGOUT:
            actor["auth_method"] = "session"
        detail = {}
        if kind == EventType.AUTH_LOGIN_FAILED:
            actor.update(actor_id=None, source_ip=f"203.0.113.{self.randrange(1, 255)}")
            detail = {"account_exists": True}
        about = {"target_type": "auth.user", "target_id": str(user.pk)}
        self.event(when, kind, actor, target_repr=user.username, detail=detail, **about)

    def write_vms(self, now: datetime) -> None:
        existing = set(VM.objects.values_list("uuid", flat=True))
        VM.objects.bulk_create(
            (
                VM(
                    uuid=vm.uuid,
                    name=vm.name,
                    host=self.hosts[vm.host],
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
                for vm in self.vms
                if vm.uuid not in existing
            ),
            batch_size=2000,
        )


def _users(count: int) -> list:
    User = get_user_model()
    names = [f"ops-{PEOPLE[i % len(PEOPLE)]}{i // len(PEOPLE) or ''}" for i in range(count)]
    existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
    unusable = make_password(None)
    User.objects.bulk_create(
        User(username=n, password=unusable, is_staff=True) for n in names if n not in existing
    )
    return list(User.objects.filter(username__in=names).order_by("username"))


def _hosts(rng: random.Random, count: int, since: datetime) -> list[Host]:
    names = [f"kvm-{SITES[i % len(SITES)]}-{i // len(SITES) + 1:02d}" for i in range(count)]
    existing = set(Host.objects.filter(name__in=names).values_list("name", flat=True))
    group_id = default_group_id()  # bulk_create skips Host.save, which would set it
    Host.objects.bulk_create(
        Host(
            name=name,
            group_id=group_id,
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


def insert_with_ids(model: type[models.Model], rows: list, batch_size: int) -> None:
    """Insert `rows` (instances or attname dicts) with the next free ids: COPY or executemany
    (bulk_create spends most of its time compiling SQL)."""
    first_id = (model.objects.aggregate(m=models.Max("id"))["m"] or 0) + 1
    for offset, row in enumerate(rows):
        if isinstance(row, models.Model):
            row.id = first_id + offset
        else:
            row["id"] = first_id + offset
    fields = list(model._meta.concrete_fields)
    defaults = {f.attname: f.get_default() for f in fields}
    converters = [(f.attname, _converter(f)) for f in fields]
    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)

    def values(row) -> tuple:
        if isinstance(row, models.Model):
            return tuple(convert(getattr(row, name)) for name, convert in converters)
        return tuple(convert(row.get(name, defaults.get(name))) for name, convert in converters)

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


def _converter(field: models.Field):
    kind = field.get_internal_type()
    if kind == "JSONField":
        return lambda v: None if v is None else json.dumps(v, separators=(",", ":"))
    if connection.vendor == "sqlite":
        if kind == "DateTimeField":
            return connection.ops.adapt_datetimefield_value
        if kind == "UUIDField":
            return lambda v: v.hex if v is not None else None
    return lambda v: v
