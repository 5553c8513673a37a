"""Before a migration starts: how fast the guest dirties its memory (libvirt measures it)
and how fast the link between the two hosts has moved memory before, for the forecast
`domain.convergence.forecast` makes of them. A warning, never a failed check."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db.models import Max, Q

from core import concurrency
from hosts import gateway
from hosts.models import Host
from migrations_app.domain.convergence import Forecast, MiB, forecast
from migrations_app.domain.lifecycle import MigrationStatus
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import Migration, MigrationSample
from migrations_app.prechecks import facts
from migrations_app.prechecks.facts import Opener
from vms.models import VM, VMState

# QEMU samples pages over a whole period: over 1 s the lab guest rewriting 8 MiB/s read
# 4 to 20 MiB/s, over 2 s 7 to 9. The check runs its pre-checks meanwhile.
DIRTY_RATE_DEFAULT_S = 2
DIRTY_RATE_MAX_S = 2
# A reading is reused this long (the check and the ranking of one dialog share it).
DIRTY_RATE_CACHE_S = 60
# The uncapped migrations between the two hosts whose fastest sample is the link.
LINK_HISTORY = 20


@dataclass(frozen=True)
class DirtyRateReading:
    bytes_s: int | None
    why_not: str = ""  # when bytes_s is None
    cached: bool = False


def _cache_key(vm: VM) -> str:
    return f"dirty-rate:{vm.host_id}:{vm.uuid}"


def _measure(opener: Opener, uuid: str, seconds: int) -> int:
    """MiB/s as libvirt measured it over `seconds` (bounded: GatewayError after)."""
    with opener() as conn:
        try:
            conn.start_dirty_rate_calc(uuid, seconds)
        except gateway.GatewayError:
            # QEMU runs one calculation at a time: another request's (the ranking the
            # dialog asked for as it opened) is read instead.
            if conn.dirty_rate(uuid).measured:
                raise
        deadline = time.monotonic() + seconds + 2
        time.sleep(seconds)
        while True:
            reading = conn.dirty_rate(uuid)
            if reading.measured and reading.megabytes_per_second is not None:
                return reading.megabytes_per_second
            if time.monotonic() > deadline:
                raise gateway.GatewayError(f"no dirty rate within {seconds + 2} s")
            time.sleep(0.1)


class DirtyRateMeasurement:
    """A measurement started now in a thread of its own (the pre-checks run meanwhile);
    `reading()` waits for it, bounded."""

    def __init__(self, vm: VM, *, seconds: int) -> None:
        self.vm = vm
        self.seconds = seconds
        self.cached = cache.get(_cache_key(vm))
        self.pending = None
        # A migrating VM's job holds libvirt's state lock: a calculation would wait ~30 s.
        self.moving = (
            self.cached is None
            and Migration.objects.filter(vm_uuid=vm.uuid, status=MigrationStatus.MIGRATING).exists()
        )
        if self.cached is None and seconds and vm.state == VMState.RUNNING and not self.moving:
            # The database work here; only libvirt in the thread (connections are per thread).
            # The pre-checks' own opener (facts.host_connector): one way to open a host.
            opener = facts.host_connector(vm.host, reuse=True)
            self.bound = settings.LIBVIRT_CONNECT_TIMEOUT_S + seconds + 3
            self.pending = concurrency.start(
                lambda: _measure(opener, str(vm.uuid), seconds), name="dirty-rate"
            )

    def reading(self) -> DirtyRateReading:
        if self.cached is not None:
            return DirtyRateReading(int(self.cached), cached=True)
        if self.vm.state != VMState.RUNNING:
            return DirtyRateReading(None, f"the VM is {self.vm.state}: it changes no memory")
        if self.moving:
            return DirtyRateReading(None, "the VM is migrating now")
        if self.pending is None:
            return DirtyRateReading(None, "not measured (dirty_rate_s=0) and none cached")
        if not self.pending.wait(self.bound):
            return DirtyRateReading(None, f"{self.vm.host.name} did not measure it in time")
        if self.pending.error is not None:
            return DirtyRateReading(None, f"libvirt did not measure it: {self.pending.error}")
        bytes_s = self.pending.result() * MiB
        cache.set(_cache_key(self.vm), bytes_s, DIRTY_RATE_CACHE_S)
        return DirtyRateReading(bytes_s)


def measured_link_bytes_s(source: Host, destination: Host) -> int | None:
    """The fastest progress sample of the last uncapped live migrations that succeeded
    between the two hosts (either way); None when there was none."""
    pair = Q(source=source, destination=destination) | Q(source=destination, destination=source)
    recent = (
        Migration.objects.filter(
            pair, live=True, bandwidth_mib_s=0, status=MigrationStatus.SUCCEEDED
        )
        .order_by("-created_at")
        .values_list("pk", flat=True)[:LINK_HISTORY]
    )
    found = MigrationSample.objects.filter(migration_id__in=list(recent)).aggregate(
        fastest=Max("throughput_bytes_s")
    )
    return found["fastest"] or None


def forecast_of(
    *, reading: DirtyRateReading, source: Host, destination: Host, options: MigrationOptions
) -> Forecast:
    """The forecast for one destination with the options asked for."""
    return forecast(
        dirty_rate_bytes_s=reading.bytes_s,
        cap_mib_s=options.bandwidth_mib_s,
        measured_link_bytes_s=measured_link_bytes_s(source, destination),
        policy=options.convergence_policy,
        postcopy_possible=not options.tunnelled,
        not_measured_why=reading.why_not,
    )
