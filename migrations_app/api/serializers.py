"""The API's input: the migrate request, a change of a scheduled migration, new values
for a running one, a batch (the read serializers are in migrations_app.serializers)."""

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from rest_framework import serializers

from core.filters import parse_id
from hosts.models import Host
from hosts.selectors import host_find
from hosts.validators import validate_uri_safe
from migrations_app.batches import BatchItem
from migrations_app.domain import decisions
from migrations_app.domain.convergence import RECOMMENDED_POLICY, ConvergencePolicy
from migrations_app.domain.options import (
    COMPRESSION_MT_LEVEL_RANGE,
    FIELD_NAMES,
    NEW_NAME_MAX_LENGTH,
    RULES,
    MigrationOptions,
    limits,
)
from migrations_app.models import CompressionMethod, StorageMode, TransportMode
from migrations_app.prechecks.forecast import DIRTY_RATE_DEFAULT_S, DIRTY_RATE_MAX_S
from vms.selectors import vm_current_with_host


class OptionIntegerField(serializers.IntegerField):
    """An integer option: parsed here; its limits are rules of `MigrationOptions`,
    checked there with its messages, and shown in the schema from the same table."""

    def __init__(self, *, option: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.min_value, self.max_value = limits()[option]


class AwareDateTimeField(serializers.DateTimeField):
    """An ISO 8601 date and time with its time zone (a time without one is refused:
    which zone was meant cannot be guessed)."""

    def to_internal_value(self, value):
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:  # well formed but no such date: the parent's message
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            raise serializers.ValidationError(
                _("Give the time zone, e.g. 2026-11-23T22:00:00+01:00 or 2026-11-23T21:00:00Z.")
            )
        return super().to_internal_value(value)


NOT_BEFORE_HELP = (
    "ISO 8601 with time zone. Start not before this time: until then the migration is "
    "`scheduled` (it holds no slot); in the past or empty: start now."
)
WINDOW_END_HELP = (
    "ISO 8601 with time zone, after not_before and in the future. If the migration has "
    "not started by then (e.g. waiting for a slot), it fails with failure_reason "
    "window_closed and nothing is moved."
)


class DirtyRateQuerySerializer(serializers.Serializer):
    """`?dirty_rate_s=` of the check and the destination ranking."""

    dirty_rate_s = serializers.IntegerField(
        default=DIRTY_RATE_DEFAULT_S, min_value=0, max_value=DIRTY_RATE_MAX_S
    )


class MigrateRequestSerializer(serializers.Serializer):
    """The migrate action's input; field names follow the Kimchi design.

    Besides each value's limits, these combinations of options are refused (400, on
    the field named):
    """

    remote_host = serializers.CharField(
        allow_blank=True,
        max_length=253,
        error_messages={"required": gettext_lazy("Remote host field cannot be blank")},
        help_text="Destination: a registered host's name or address, or a new hostname/IP "
        "(registered by the migration, transport ssh).",
    )
    # It ends up in the destination's qemu+ssh:// URI.
    user = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=32,
        validators=[validate_uri_safe],
        help_text="With password: set up password-less ssh for this remote user first "
        "(migrate only; migrate/check ignores both).",
    )
    password = serializers.CharField(
        required=False, allow_blank=True, write_only=True, trim_whitespace=False
    )
    delete_source = serializers.BooleanField(default=MigrationOptions.delete_source)
    live = serializers.BooleanField(
        required=False,
        help_text="Not given: live for a running or paused VM, offline for a shut-off one "
        "(the answer's `live_from` says which). true for a shut-off VM: 400 on live.",
    )
    storage = serializers.ChoiceField(choices=StorageMode.choices, default=MigrationOptions.storage)
    transport = serializers.ChoiceField(
        choices=TransportMode.choices, default=MigrationOptions.transport
    )
    bandwidth_mib_s = OptionIntegerField(
        option="bandwidth_mib_s",
        default=MigrationOptions.bandwidth_mib_s,
        help_text="MiB/s; 0: unlimited.",
    )
    max_downtime_ms = OptionIntegerField(
        option="max_downtime_ms",
        required=False,
        help_text="Default: PORTAL_MIGRATION_MAX_DOWNTIME_MS "
        f"({settings.MIGRATION_MAX_DOWNTIME_MS} ms).",
    )
    auto_converge = serializers.BooleanField(default=MigrationOptions.auto_converge)
    allow_postcopy = serializers.BooleanField(default=MigrationOptions.allow_postcopy)
    compressed = serializers.BooleanField(default=MigrationOptions.compressed)
    compression_method = serializers.ChoiceField(
        choices=CompressionMethod.choices,
        default=MigrationOptions.compression_method,
        help_text="With compressed: xbzrle (default) or mt. libvirt 9.0 has no zlib/zstd "
        "(multifd) compression.",
    )
    compression_level = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Method mt only: {} (none) to {} (best); empty: QEMU's 1.".format(
            *COMPRESSION_MT_LEVEL_RANGE
        ),
    )
    tls = serializers.BooleanField(
        default=MigrationOptions.tls,
        help_text="Encrypt QEMU's migration stream with TLS: both hosts need the portal's "
        "certificates (POST /api/hosts/{id}/tls/).",
    )
    parallel_connections = OptionIntegerField(
        option="parallel_connections",
        default=MigrationOptions.parallel_connections,
        help_text="0: one connection.",
    )
    new_name = serializers.CharField(
        required=False,
        allow_blank=True,
        default=MigrationOptions.new_name,
        max_length=NEW_NAME_MAX_LENGTH,
        help_text="The VM's name on the destination; empty: the same name.",
    )
    timeout_s = OptionIntegerField(
        option="timeout_s",
        required=False,
        help_text=f"Default: PORTAL_MIGRATION_TIMEOUT_S ({settings.MIGRATION_TIMEOUT_S} s).",
    )
    convergence_policy = serializers.ChoiceField(
        choices=ConvergencePolicy.choices,
        required=False,
        help_text="What the portal does when the copy stops converging (docs/"
        "migration-policies.md). Default: PORTAL_MIGRATION_CONVERGENCE_POLICY "
        f"({settings.MIGRATION_CONVERGENCE_POLICY}); recommended: {RECOMMENDED_POLICY.value} "
        "(with allow_postcopy).",
    )

    not_before = AwareDateTimeField(
        required=False, allow_null=True, default=None, help_text=NOT_BEFORE_HELP
    )
    window_end = AwareDateTimeField(
        required=False, allow_null=True, default=None, help_text=WINDOW_END_HELP
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # The schema shows the level's range; MigrationOptions judges it (its message).
        level = self.fields["compression_level"]
        level.min_value, level.max_value = COMPRESSION_MT_LEVEL_RANGE

    def validate_remote_host(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(_("Remote host field cannot be blank"))
        return value.strip()

    def validate(self, attrs: dict) -> dict:
        """{remote_host, user, password, options}; DRF answers a broken option rule 400."""
        user, password = attrs.get("user", ""), attrs.get("password", "")
        if bool(user) != bool(password):
            missing = "password" if user else "user"
            raise serializers.ValidationError(
                {missing: [_("Both user and password fields must be filled")]}
            )
        # Judged here too, before the view registers a host or sets up ssh access.
        schedule = decisions.schedule_errors(
            not_before=attrs.get("not_before"),
            window_end=attrs.get("window_end"),
            now=timezone.now(),
        )
        if schedule:
            raise serializers.ValidationError(schedule)
        given = frozenset(name for name in FIELD_NAMES if name in attrs)
        options = MigrationOptions(**{name: attrs.pop(name) for name in given})
        return {**attrs, "options": options, "given": given}


# The schema lists the rules from the one table (migrations_app.domain.options.RULES).
MigrateRequestSerializer.__doc__ += "".join(
    f"\n    - {rule.field}: {rule.message}" for rule in RULES
)


def _not_empty(attrs: dict, message: str) -> dict:
    if not attrs:
        raise serializers.ValidationError({"non_field_errors": [message]})
    return attrs


def _optional(field: serializers.Field) -> serializers.Field:
    """The same field, not required and without a default."""
    kwargs = {k: v for k, v in field._kwargs.items() if k != "default"}
    return type(field)(*field._args, **{**kwargs, "required": False})


class MigrationChangeSerializer(serializers.Serializer):
    """PATCH of a scheduled migration: its schedule and/or any option of the migrate
    request; only the fields given change, and the options as changed are judged by
    the same rules (400 on the field named). 409 once the migration has started."""

    not_before = AwareDateTimeField(required=False, allow_null=True, help_text=NOT_BEFORE_HELP)
    window_end = AwareDateTimeField(
        required=False, allow_null=True, help_text=WINDOW_END_HELP + " null: no window end."
    )

    def get_fields(self):
        fields = super().get_fields()
        request_fields = MigrateRequestSerializer().get_fields()
        for name in FIELD_NAMES:
            fields[name] = _optional(request_fields[name])
        return fields

    def validate(self, attrs: dict) -> dict:
        return _not_empty(attrs, "Give not_before, window_end or an option to change.")


class TuneSerializer(serializers.Serializer):
    """New values for a running migration, within the limits of the migrate request."""

    max_downtime_ms = OptionIntegerField(option="max_downtime_ms", required=False)
    bandwidth_mib_s = OptionIntegerField(option="bandwidth_mib_s", required=False)

    def validate(self, attrs: dict) -> dict:
        return _not_empty(attrs, "Give max_downtime_ms, bandwidth_mib_s or both.")


class BatchOptionsSerializer(MigrateRequestSerializer):
    """The migration options of a batch: the migrate request's options, same limits and
    rules (400 on the field named), without its destination and credentials."""

    remote_host = None
    user = None
    password = None
    # A batch moves running VMs: live unless said otherwise (its pre-checks refuse the rest).
    live = serializers.BooleanField(default=MigrationOptions.live)


BatchOptionsSerializer.__doc__ += "".join(f"\n    - {rule.field}: {rule.message}" for rule in RULES)

MAX_PARALLEL_LIMIT = 64


class BatchItemSerializer(serializers.Serializer):
    vm = serializers.UUIDField(help_text="The VM's libvirt UUID (a VM of the inventory).")
    destination = serializers.CharField(
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=253,
        help_text="A registered host's name, address or id. Empty: the best fit host of "
        "the destination ranking (GET /api/vms/{uuid}/destinations/); 400 on `items` if "
        "no host fits.",
    )
    options = serializers.DictField(
        required=False,
        help_text='This VM\'s overrides of the batch\'s options (e.g. {"storage": "copy"} '
        "for a VM on local disks), checked by the same rules on the merged options.",
    )

    def validate_vm(self, value):
        vm = vm_current_with_host(uuid=str(value))
        if vm is None:
            raise serializers.ValidationError(
                _("No VM with UUID %(uuid)s in the inventory.") % {"uuid": value}
            )
        return vm

    def validate_destination(self, value: str | None) -> Host | None:
        value = (value or "").strip()
        if not value:
            return None
        host_id = parse_id(value)
        host = Host.objects.filter(pk=host_id).first() if host_id is not None else None
        host = host or host_find(remote_host=value)
        if host is None:
            raise serializers.ValidationError(
                _("%(host)s is not a registered host (a batch does not register hosts).")
                % {"host": value}
            )
        return host


class BatchCreateSerializer(serializers.Serializer):
    """A batch of migrations: `items` (each a VM and its destination), the `options`
    every child migrates with (as the migrate request's; an item may override some),
    `stop_on_failure` and `max_parallel`."""

    items = BatchItemSerializer(many=True, allow_empty=False)
    options = BatchOptionsSerializer(required=False)
    stop_on_failure = serializers.BooleanField(
        default=False,
        help_text="True: after a child fails, the children not started yet are cancelled "
        "and the batch ends failed. False: the others go on.",
    )
    max_parallel = serializers.IntegerField(
        min_value=1,
        max_value=MAX_PARALLEL_LIMIT,
        default=1,
        help_text="At most this many children run at once (the per-host limits apply too).",
    )
    not_before = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="Start no child before this (ISO 8601 with time zone); the children wait "
        "as scheduled. In the past or empty: now.",
    )
    window_end = AwareDateTimeField(
        required=False,
        allow_null=True,
        help_text="A child not started by then fails (window_closed).",
    )

    def validate_items(self, items: list[dict]) -> list[dict]:
        seen: set = set()
        for item in items:
            uuid = item["vm"].uuid
            if uuid in seen:
                raise serializers.ValidationError(
                    _("VM %(name)s (%(uuid)s) appears more than once.")
                    % {"name": item["vm"].name, "uuid": uuid}
                )
            seen.add(uuid)
        return items

    def validate(self, attrs: dict) -> dict:
        """Items as BatchItem; an item's overrides are judged on the merged options."""
        options = attrs.get("options", {}).get("options") or MigrationOptions()
        raw = self.initial_data.get("options") or {}
        item_errors: list[dict] = []
        items = []
        for item in attrs["items"]:
            overrides = item.get("options")
            item_options = options
            errors: dict = {}
            if overrides:
                merged = BatchOptionsSerializer(data={**raw, **overrides})
                if merged.is_valid():
                    item_options = merged.validated_data["options"]
                else:
                    errors = {"options": merged.errors}
            item_errors.append(errors)
            items.append(BatchItem(item["vm"], item.get("destination"), item_options))
        if any(item_errors):
            raise serializers.ValidationError({"items": item_errors})
        return {**attrs, "options": options, "items": items}
