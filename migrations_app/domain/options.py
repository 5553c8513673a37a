"""A migration's options, one shape from the request to libvirt, valid by construction. A
new option is a field here, a `Migration` column and a serializer field; a new rule is a
line of `RULES`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import InitVar, dataclass, field, fields, replace
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils.translation import gettext, gettext_noop
from django.utils.translation import gettext_lazy as _

from hosts import gateway
from hosts.validators import validate_uri_safe
from migrations_app.domain.convergence import ConvergencePolicy

if TYPE_CHECKING:
    from migrations_app.models import Migration


class StorageMode(models.TextChoices):
    SHARED = "shared", _("Shared storage (disks stay where they are)")
    COPY = "copy", _("Copy local disks to the destination")


class TransportMode(models.TextChoices):
    DIRECT = "direct", _("Direct (QEMU to QEMU)")
    TUNNELLED = "tunnelled", _("Tunnelled through the libvirt connection")


class CompressionMethod(models.TextChoices):
    # libvirt 9.0's (VIR_MIGRATE_PARAM_COMPRESSION); multifd's zlib / zstd need 9.4.
    XBZRLE = "xbzrle", _("XBZRLE (resend only what changed in pages sent before)")
    MT = "mt", _("Multithread zlib (compress every page; with a level)")


BANDWIDTH_MAX_MIB_S = 1_000_000
MAX_DOWNTIME_MAX_MS = 3_600_000
PARALLEL_CONNECTIONS_MAX = 64
NEW_NAME_MAX_LENGTH = 255  # the column's
# QEMU's compress-level (multithread compression): 0 = none ... 9 = best.
COMPRESSION_MT_LEVEL_RANGE = (0, 9)


def limits() -> dict[str, tuple[int, int]]:
    """Each integer option's smallest and largest value (the API schema shows them)."""
    return {
        "bandwidth_mib_s": (0, BANDWIDTH_MAX_MIB_S),  # 0: unlimited
        "max_downtime_ms": (settings.MIGRATION_MIN_DOWNTIME_MS, MAX_DOWNTIME_MAX_MS),
        "parallel_connections": (0, PARALLEL_CONNECTIONS_MAX),  # 0: one connection
        # Past the task runner's own limit the worker would be killed mid-migration.
        "timeout_s": (1, settings.MIGRATION_TIMEOUT_MAX_S),
    }


# DRF's wording where it has one, so a refusal reads the same from either.
_BELOW = {
    "max_downtime_ms": gettext_noop(
        "Max downtime must be at least %(low)s ms: below that the VM may never converge."
    )
}
_BOOLEANS = ("live", "delete_source", "auto_converge", "allow_postcopy", "compressed", "tls")
_CHOICES = {
    "storage": StorageMode.values,
    "transport": TransportMode.values,
    "compression_method": CompressionMethod.values,
    "convergence_policy": ConvergencePolicy.values,
}


def _setting(name: str) -> Callable[[], int]:
    return lambda: getattr(settings, name)


# A bandwidth of 0 means "unlimited" only when a job starts; on a running one the portal
# sets this (libvirt's read-back at or above it is unlimited too).
UNLIMITED_MIB_S = 8_388_607


@dataclass(frozen=True)
class MigrationOptions:
    """A migration's options, valid by construction (see `RULES` and `limits()`)."""

    live: bool = True
    storage: str = StorageMode.SHARED.value
    transport: str = TransportMode.DIRECT.value
    delete_source: bool = False
    bandwidth_mib_s: int = 0
    max_downtime_ms: int = field(default_factory=_setting("MIGRATION_MAX_DOWNTIME_MS"))
    auto_converge: bool = False
    allow_postcopy: bool = False
    compressed: bool = False
    # `compression_level` only for "mt" (None: QEMU's 1).
    compression_method: str = CompressionMethod.XBZRLE.value
    compression_level: int | None = None
    parallel_connections: int = 0
    new_name: str = ""
    timeout_s: int = field(default_factory=_setting("MIGRATION_TIMEOUT_S"))
    tls: bool = False  # QEMU's stream encrypted with the hosts' certificates (/etc/pki/qemu)
    # What the monitor does when the copy stalls (domain/convergence.py); not libvirt's.
    convergence_policy: str = field(default_factory=lambda: settings.MIGRATION_CONVERGENCE_POLICY)
    # Only `from_migration` passes False: a record is what was accepted.
    validate: InitVar[bool] = True

    def __post_init__(self, validate: bool) -> None:
        if validate and (errors := self.errors()):
            raise ValidationError(errors)

    def errors(self) -> dict[str, list[str]]:
        """Every broken rule, by field; combinations only once every value is valid."""
        found: dict[str, list[str]] = {}
        for name, message in self._value_errors():
            found.setdefault(name, []).append(message)
        if not found:
            for rule in RULES:
                if rule.refuses(self):
                    # The rules keep English msgids; the message is in the active language.
                    found.setdefault(rule.field, []).append(gettext(rule.message))
        return found

    def _value_errors(self) -> Iterator[tuple[str, str]]:
        for name in _BOOLEANS:
            if not isinstance(getattr(self, name), bool):
                yield name, gettext("Must be a valid boolean.")
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                yield name, gettext('"%(value)s" is not a valid choice.') % {"value": value}
        for name, (low, high) in limits().items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                yield name, gettext("A valid integer is required.")
            elif value < low:
                below = _BELOW.get(
                    name, gettext_noop("Ensure this value is greater than or equal to %(low)s.")
                )
                yield name, gettext(below) % {"low": low}
            elif value > high:
                yield (
                    name,
                    gettext("Ensure this value is less than or equal to %(high)s.")
                    % {"high": high},
                )
        level = self.compression_level
        if level is not None:
            low, high = COMPRESSION_MT_LEVEL_RANGE
            if isinstance(level, bool) or not isinstance(level, int):
                yield "compression_level", gettext("A valid integer is required.")
            elif not low <= level <= high:
                yield (
                    "compression_level",
                    gettext(
                        "The compression level of method mt is %(low)s (none) to %(high)s (best)."
                    )
                    % {"low": low, "high": high},
                )
        if not isinstance(self.new_name, str):
            yield "new_name", gettext("Not a valid string.")
        elif len(self.new_name) > (longest := NEW_NAME_MAX_LENGTH):
            yield (
                "new_name",
                gettext("Ensure this field has no more than %(longest)s characters.")
                % {"longest": longest},
            )
        else:
            try:
                validate_uri_safe(self.new_name)
            except ValidationError as exc:
                for message in exc.messages:
                    yield "new_name", message

    @property
    def copies_storage(self) -> bool:
        return self.storage == StorageMode.COPY

    @property
    def tunnelled(self) -> bool:
        return self.transport == TransportMode.TUNNELLED

    @classmethod
    def from_migration(cls, migration: Migration) -> MigrationOptions:
        """The options as recorded, not checked again (a limit may have changed since)."""
        return cls(**{name: getattr(migration, name) for name in FIELD_NAMES}, validate=False)

    def as_model_fields(self) -> dict[str, object]:
        """The `Migration` columns these options fill (also the audit's "options")."""
        return {name: getattr(self, name) for name in FIELD_NAMES}

    def tuned(
        self, *, max_downtime_ms: int | None = None, bandwidth_mib_s: int | None = None
    ) -> MigrationOptions:
        """These options retuned; only the new values are judged (ValidationError)."""
        given = {"max_downtime_ms": max_downtime_ms, "bandwidth_mib_s": bandwidth_mib_s}
        changes = {name: value for name, value in given.items() if value is not None}
        tuned = replace(self, validate=False, **changes)
        errors = {name: found for name, found in tuned.errors().items() if name in changes}
        if errors:
            raise ValidationError(errors)
        return tuned

    def to_spec(self) -> gateway.MigrationSpec:
        """What libvirt is asked for (the monitor applies max downtime and timeout)."""
        return gateway.MigrationSpec(
            live=self.live,
            undefine_source=self.delete_source,
            copy_storage=self.copies_storage,
            tunnelled=self.tunnelled,
            auto_converge=self.auto_converge,
            allow_postcopy=self.allow_postcopy,
            compressed=self.compressed,
            compression_method=self.compression_method if self.compressed else "",
            compression_level=self.compression_level if self.compressed else None,
            parallel_connections=self.parallel_connections,
            bandwidth_mib_s=self.bandwidth_mib_s,
            destination_name=self.new_name,
            tls=self.tls,
        )


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(MigrationOptions))


@dataclass(frozen=True)
class Rule:
    """A combination of options that is refused, reported on `field`."""

    field: str
    message: str
    refuses: Callable[[MigrationOptions], bool]


# Tried on libvirt 9.0 / QEMU 7.2 (the lab's): it refuses six of these, and accepts two
# that do nothing (compression over parallel connections, auto-converge offline).
RULES: tuple[Rule, ...] = (
    # libvirt: "Flags 'VIR_MIGRATE_TUNNELLED' and 'VIR_MIGRATE_PARALLEL' are mutually
    # exclusive" (QEMU's parallel channels are connections of their own).
    Rule(
        "parallel_connections",
        gettext_noop("Parallel connections cannot be tunnelled."),
        lambda o: o.parallel_connections > 0 and o.tunnelled,
    ),
    # XBZRLE over parallel channels goes uncompressed; "mt": "Multifd is not compatible
    # with compress"; multifd's zlib / zstd need libvirt 9.4.
    Rule(
        "compressed",
        gettext_noop(
            "Compression and parallel connections exclude each other (libvirt 9.0 has no "
            "zlib or zstd compression for parallel connections)."
        ),
        lambda o: o.compressed and o.parallel_connections > 0,
    ),
    # Without `compressed` a method or level alone would be silently ignored.
    Rule(
        "compression_method",
        gettext_noop("Choose a compression method only with compression on (compressed)."),
        lambda o: not o.compressed and o.compression_method != CompressionMethod.XBZRLE,
    ),
    Rule(
        "compression_level",
        gettext_noop("A compression level needs compression on (compressed) with method mt."),
        lambda o: o.compression_level is not None
        and not (o.compressed and o.compression_method == CompressionMethod.MT),
    ),
    # libvirt: "post-copy migration is not supported with non-live or paused migration";
    # auto-converge slows a running guest down: offline it is accepted and does nothing.
    Rule(
        "live",
        gettext_noop("Post-copy and auto-converge apply to live migrations only."),
        lambda o: not o.live and (o.allow_postcopy or o.auto_converge),
    ),
    # libvirt: "offline migration cannot handle non-shared storage".
    Rule(
        "storage",
        gettext_noop("Disks can only be copied during a live migration."),
        lambda o: not o.live and o.copies_storage,
    ),
    # libvirt: "tunnelled offline migration does not make sense".
    Rule(
        "transport",
        gettext_noop("An offline migration cannot be tunnelled: only the VM's definition moves."),
        lambda o: not o.live and o.tunnelled,
    ),
    # libvirt: "post-copy is not supported with tunnelled migration".
    Rule(
        "allow_postcopy",
        gettext_noop("Post-copy cannot be tunnelled."),
        lambda o: o.allow_postcopy and o.tunnelled,
    ),
    # libvirt 9.0 fails it after the start ("argument key 'host' must not have null value").
    Rule(
        "storage",
        gettext_noop("Disks cannot be copied through a tunnelled migration."),
        lambda o: o.copies_storage and o.tunnelled,
    ),
    Rule(
        "tls",
        gettext_noop(
            "An offline migration moves only the VM's definition: there is no stream to encrypt."
        ),
        lambda o: o.tls and not o.live,
    ),
    Rule(
        "tls",
        gettext_noop(
            "TLS encrypts QEMU's own migration stream: it cannot be tunnelled through libvirtd."
        ),
        lambda o: o.tls and o.tunnelled,
    ),
    # Refused rather than switched on silently: post-copy makes the VM depend on both
    # hosts until it ends, which the requester must have agreed to.
    Rule(
        "convergence_policy",
        gettext_noop(
            "The policy postcopy_when_stalled needs allow_postcopy: true (post-copy makes the "
            "VM depend on both hosts until it ends)."
        ),
        lambda o: o.convergence_policy == ConvergencePolicy.POSTCOPY_WHEN_STALLED
        and not o.allow_postcopy,
    ),
    Rule(
        "convergence_policy",
        gettext_noop("An offline migration copies no memory: choose the convergence policy none."),
        lambda o: not o.live and o.convergence_policy != ConvergencePolicy.NONE,
    ),
)


class LiveFrom(models.TextChoices):
    """Why a migration is live or offline (the migrate answer's `live_from`)."""

    REQUEST = "request", "live was given in the request"
    DEFAULT = "default", "live was not given and the VM was not shut off: live"
    VM_SHUT_OFF = "vm_shut_off", "live was not given and the VM was shut off: offline"


LIVE_FOR_SHUT_OFF = (
    "The VM is shut off: a live migration needs a running or paused VM. Leave live out "
    "or give live: false to move it offline (only its definition moves)."
)


def live_mode_resolved(
    *, options: MigrationOptions, given: frozenset[str], vm_state: str
) -> tuple[MigrationOptions, LiveFrom]:
    """The options for a VM in `vm_state` when the request named the options `given`.

    Without `live` a shut-off VM moves offline rather than failing its pre-checks later;
    `live: true` for a shut-off VM is refused on `live` (ValidationError) instead of
    queued to fail. A convergence policy not given follows the mode (offline: none).
    """
    shut_off = vm_state == "shut_off"  # vms.models.VMState.SHUT_OFF
    if "live" in given:
        if options.live and shut_off:
            raise ValidationError({"live": [LIVE_FOR_SHUT_OFF]})
        return options, LiveFrom.REQUEST
    if not shut_off:
        return options, LiveFrom.DEFAULT
    changes: dict[str, object] = {"live": False}
    if "convergence_policy" not in given:
        changes["convergence_policy"] = ConvergencePolicy.NONE.value
    # Judged again: e.g. storage copy has no offline form (400 on storage).
    return replace(options, **changes), LiveFrom.VM_SHUT_OFF
