"""A migration's options, table-tested without a database or a host
(migrations_app/options.py)."""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ValidationError

from hosts.gateway import MigrationSpec, migration_arguments
from migrations_app.domain.options import FIELD_NAMES, RULES, MigrationOptions, limits
from migrations_app.models import Migration


def _errors(**options) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        MigrationOptions(**options)
    return caught.value.message_dict


def test_defaults_come_from_the_fields_and_the_settings(settings):
    settings.MIGRATION_MAX_DOWNTIME_MS = 700
    settings.MIGRATION_TIMEOUT_S = 1200
    assert MigrationOptions().as_model_fields() == {
        "live": True,
        "storage": "shared",
        "transport": "direct",
        "delete_source": False,
        "bandwidth_mib_s": 0,
        "max_downtime_ms": 700,
        "auto_converge": False,
        "allow_postcopy": False,
        "compressed": False,
        "compression_method": "xbzrle",
        "compression_level": None,
        "parallel_connections": 0,
        "new_name": "",
        "timeout_s": 1200,
        "tls": False,
        "convergence_policy": "none",
    }


def test_options_cannot_be_changed_once_made():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MigrationOptions().live = False


# Combinations that are accepted (one per option that has a rule, at its edge).
VALID = [
    {},
    {"live": False},
    {"live": False, "delete_source": True, "new_name": "web-2", "bandwidth_mib_s": 10},
    {"transport": "tunnelled"},
    {"transport": "tunnelled", "compressed": True, "auto_converge": True},
    {"storage": "copy", "allow_postcopy": True, "auto_converge": True},
    {"parallel_connections": 64, "allow_postcopy": True},
    {"compressed": True},
    {"compressed": True, "compression_method": "xbzrle"},
    {"compressed": True, "compression_method": "mt"},
    {"compressed": True, "compression_method": "mt", "compression_level": 0},
    {"compressed": True, "compression_method": "mt", "compression_level": 9},
    {"compressed": False, "compression_method": "xbzrle", "compression_level": None},
    {"tls": True, "parallel_connections": 2, "storage": "copy", "allow_postcopy": True},
    {"max_downtime_ms": 100, "timeout_s": 1, "bandwidth_mib_s": 1_000_000},
    {"max_downtime_ms": 3_600_000},
]


@pytest.mark.parametrize("options", VALID)
def test_valid_options(options):
    assert MigrationOptions(**options).errors() == {}


def test_the_largest_timeout_is_the_task_runners_limit(settings):
    settings.MIGRATION_TIMEOUT_MAX_S = 3000
    assert limits()["timeout_s"] == (1, 3000)
    MigrationOptions(timeout_s=3000)
    assert _errors(timeout_s=3001) == {
        "timeout_s": ["Ensure this value is less than or equal to 3000."]
    }


# (options, the errors they get: field -> messages, in full)
INVALID = [
    (
        {"convergence_policy": "postcopy_when_stalled"},
        {
            "convergence_policy": [
                "The policy postcopy_when_stalled needs allow_postcopy: true (post-copy makes "
                "the VM depend on both hosts until it ends)."
            ]
        },
    ),
    (
        {"live": False, "convergence_policy": "abort_when_stalled"},
        {
            "convergence_policy": [
                "An offline migration copies no memory: choose the convergence policy none."
            ]
        },
    ),
    (
        {"convergence_policy": "sometimes"},
        {"convergence_policy": ['"sometimes" is not a valid choice.']},
    ),
    (
        {"max_downtime_ms": 99},
        {
            "max_downtime_ms": [
                "Max downtime must be at least 100 ms: below that the VM may never converge."
            ]
        },
    ),
    (
        {"max_downtime_ms": 3_600_001},
        {"max_downtime_ms": ["Ensure this value is less than or equal to 3600000."]},
    ),
    ({"timeout_s": 0}, {"timeout_s": ["Ensure this value is greater than or equal to 1."]}),
    (
        {"bandwidth_mib_s": -1},
        {"bandwidth_mib_s": ["Ensure this value is greater than or equal to 0."]},
    ),
    (
        {"parallel_connections": 65},
        {"parallel_connections": ["Ensure this value is less than or equal to 64."]},
    ),
    ({"storage": "nfs"}, {"storage": ['"nfs" is not a valid choice.']}),
    ({"transport": "pigeon"}, {"transport": ['"pigeon" is not a valid choice.']}),
    ({"live": "yes"}, {"live": ["Must be a valid boolean."]}),
    ({"timeout_s": "60"}, {"timeout_s": ["A valid integer is required."]}),
    ({"timeout_s": True}, {"timeout_s": ["A valid integer is required."]}),
    (
        {"new_name": "a/b"},
        {"new_name": ["Must not contain '/': it would break the libvirt connection URI."]},
    ),
    (
        {"new_name": "x" * 256},
        {"new_name": ["Ensure this field has no more than 255 characters."]},
    ),
    # Combinations (RULES), one at a time.
    (
        {"parallel_connections": 4, "transport": "tunnelled"},
        {"parallel_connections": ["Parallel connections cannot be tunnelled."]},
    ),
    (
        {"parallel_connections": 4, "compressed": True},
        {
            "compressed": [
                "Compression and parallel connections exclude each other (libvirt 9.0 has "
                "no zlib or zstd compression for parallel connections)."
            ]
        },
    ),
    (
        {"parallel_connections": 2, "compressed": True, "compression_method": "mt"},
        {
            "compressed": [
                "Compression and parallel connections exclude each other (libvirt 9.0 has "
                "no zlib or zstd compression for parallel connections)."
            ]
        },
    ),
    (
        {"compression_method": "mt"},
        {
            "compression_method": [
                "Choose a compression method only with compression on (compressed)."
            ]
        },
    ),
    (
        {"compression_level": 5},
        {
            "compression_level": [
                "A compression level needs compression on (compressed) with method mt."
            ]
        },
    ),
    (
        {"compressed": True, "compression_level": 5},
        {
            "compression_level": [
                "A compression level needs compression on (compressed) with method mt."
            ]
        },
    ),
    # Multifd's methods: libvirt 9.0 refuses them ("Unsupported compression method").
    (
        {"compressed": True, "compression_method": "zstd", "parallel_connections": 2},
        {"compression_method": ['"zstd" is not a valid choice.']},
    ),
    (
        {"compressed": True, "compression_method": "zlib"},
        {"compression_method": ['"zlib" is not a valid choice.']},
    ),
    (
        {"compressed": True, "compression_method": "mt", "compression_level": 10},
        {"compression_level": ["The compression level of method mt is 0 (none) to 9 (best)."]},
    ),
    (
        {"compressed": True, "compression_method": "mt", "compression_level": -1},
        {"compression_level": ["The compression level of method mt is 0 (none) to 9 (best)."]},
    ),
    (
        {"compressed": True, "compression_method": "mt", "compression_level": "3"},
        {"compression_level": ["A valid integer is required."]},
    ),
    (
        {"live": False, "allow_postcopy": True},
        {"live": ["Post-copy and auto-converge apply to live migrations only."]},
    ),
    (
        {"live": False, "auto_converge": True},
        {"live": ["Post-copy and auto-converge apply to live migrations only."]},
    ),
    (
        {"live": False, "storage": "copy"},
        {"storage": ["Disks can only be copied during a live migration."]},
    ),
    (
        {"live": False, "transport": "tunnelled"},
        {
            "transport": [
                "An offline migration cannot be tunnelled: only the VM's definition moves."
            ]
        },
    ),
    (
        {"allow_postcopy": True, "transport": "tunnelled"},
        {"allow_postcopy": ["Post-copy cannot be tunnelled."]},
    ),
    (
        {"storage": "copy", "transport": "tunnelled"},
        {"storage": ["Disks cannot be copied through a tunnelled migration."]},
    ),
    (
        {"tls": True, "live": False},
        {
            "tls": [
                "An offline migration moves only the VM's definition: there is no stream to "
                "encrypt."
            ]
        },
    ),
    (
        {"tls": True, "transport": "tunnelled"},
        {
            "tls": [
                "TLS encrypts QEMU's own migration stream: it cannot be tunnelled through libvirtd."
            ]
        },
    ),
    ({"tls": "yes"}, {"tls": ["Must be a valid boolean."]}),
    # Every broken rule is reported, each on its field.
    (
        {"max_downtime_ms": 10, "timeout_s": 0, "storage": "nfs"},
        {
            "storage": ['"nfs" is not a valid choice.'],
            "max_downtime_ms": [
                "Max downtime must be at least 100 ms: below that the VM may never converge."
            ],
            "timeout_s": ["Ensure this value is greater than or equal to 1."],
        },
    ),
    (
        {"live": False, "storage": "copy", "transport": "tunnelled", "auto_converge": True},
        {
            "live": ["Post-copy and auto-converge apply to live migrations only."],
            "storage": [
                "Disks can only be copied during a live migration.",
                "Disks cannot be copied through a tunnelled migration.",
            ],
            "transport": [
                "An offline migration cannot be tunnelled: only the VM's definition moves."
            ],
        },
    ),
    # Combinations are judged once the values are valid on their own.
    (
        {"parallel_connections": -1, "transport": "tunnelled"},
        {"parallel_connections": ["Ensure this value is greater than or equal to 0."]},
    ),
]


@pytest.mark.parametrize(("options", "errors"), INVALID)
def test_invalid_options_name_the_field(options, errors):
    assert _errors(**options) == errors


def test_every_rule_has_a_case():
    tested = {
        (field, message)
        for _options, errors in INVALID
        for field, messages in errors.items()
        for message in messages
    }
    assert {(rule.field, rule.message) for rule in RULES} <= tested


SPECS = [
    ({}, MigrationSpec()),
    (
        {"live": False, "delete_source": True, "new_name": "web-2"},
        MigrationSpec(live=False, undefine_source=True, destination_name="web-2"),
    ),
    (
        {"storage": "copy", "allow_postcopy": True, "auto_converge": True, "bandwidth_mib_s": 50},
        MigrationSpec(
            copy_storage=True, allow_postcopy=True, auto_converge=True, bandwidth_mib_s=50
        ),
    ),
    (
        {"transport": "tunnelled", "compressed": True},
        MigrationSpec(tunnelled=True, compressed=True, compression_method="xbzrle"),
    ),
    (
        {"compressed": True, "compression_method": "mt", "compression_level": 7},
        MigrationSpec(compressed=True, compression_method="mt", compression_level=7),
    ),
    ({"parallel_connections": 8}, MigrationSpec(parallel_connections=8)),
    # The monitor applies these while the job runs: libvirt's call does not take them.
    ({"max_downtime_ms": 250, "timeout_s": 60}, MigrationSpec()),
]


@pytest.mark.parametrize(("options", "spec"), SPECS)
def test_what_libvirt_is_asked_for(options, spec):
    assert MigrationOptions(**options).to_spec() == spec


def test_the_options_are_columns_of_a_migration_and_come_back_the_same():
    columns = {f.name for f in Migration._meta.fields}
    assert set(FIELD_NAMES) <= columns
    options = MigrationOptions(
        live=True,
        storage="copy",
        delete_source=True,
        bandwidth_mib_s=40,
        max_downtime_ms=300,
        auto_converge=True,
        allow_postcopy=True,
        parallel_connections=0,
        compressed=True,
        compression_method="mt",
        compression_level=4,
        new_name="web-2",
        timeout_s=900,
    )
    migration = Migration(**options.as_model_fields())
    assert MigrationOptions.from_migration(migration) == options


def test_a_record_is_not_judged_again(settings):
    """A migration queued before a limit changed still runs (and can be cancelled)."""
    migration = Migration(**MigrationOptions(timeout_s=5000).as_model_fields())
    settings.MIGRATION_TIMEOUT_MAX_S = 3000
    assert MigrationOptions.from_migration(migration).timeout_s == 5000


def test_tuning_judges_the_new_values_only(settings):
    recorded = MigrationOptions.from_migration(
        Migration(**MigrationOptions(timeout_s=5000, bandwidth_mib_s=10).as_model_fields())
    )
    settings.MIGRATION_TIMEOUT_MAX_S = 3000  # the record broke a limit since: not judged
    tuned = recorded.tuned(max_downtime_ms=200)
    assert (tuned.max_downtime_ms, tuned.bandwidth_mib_s, tuned.timeout_s) == (200, 10, 5000)
    assert recorded.tuned(bandwidth_mib_s=0).bandwidth_mib_s == 0
    with pytest.raises(ValidationError) as caught:
        recorded.tuned(max_downtime_ms=10, bandwidth_mib_s=-1)
    assert set(caught.value.message_dict) == {"max_downtime_ms", "bandwidth_mib_s"}


def test_the_spec_becomes_libvirts_parameters():
    """libvirt's own parameter names (virsh --comp-methods / --comp-mt-level)."""
    _flags, params = migration_arguments(
        MigrationSpec(compressed=True, compression_method="mt", compression_level=7)
    )
    assert params == {"compression": "mt", "compression.mt.level": 7}
    _flags, params = migration_arguments(MigrationSpec(parallel_connections=3))
    assert params == {"parallel.connections": 3}


# Storage "copy": the destination's free space (prechecks.rules.copy_space_verdict, pure).
def _disk(path="/var/lib/libvirt/images/a.qcow2", capacity=16 * 2**20, used=2**20, there=False):
    from migrations_app.prechecks.disk_space import DiskToCopy

    return DiskToCopy(path, capacity, used, there)


def copy_space_verdict(**arguments) -> tuple[bool, str]:
    from migrations_app.prechecks.disk_space import copy_space_verdict
    from migrations_app.prechecks.verdicts import CheckStatus

    verdict = copy_space_verdict(**arguments)
    return verdict.status == CheckStatus.PASS, verdict.message


def _pool(available, name="default", path="/var/lib/libvirt/images"):
    from hosts.gateway import PoolInfo

    return PoolInfo(name, path, 10 * available, 0, available)


def test_copied_disks_fit_in_the_destination_pool():
    ok, message = copy_space_verdict(
        destination="dst", disks=[_disk()], pools={"/var/lib/libvirt/images": _pool(2**30)}
    )
    assert ok
    # A copy is as large as the disk's capacity (QEMU's mirror fills it), not its use.
    assert message == "pool 'default' on dst has 1024.0 MiB free for 16.0 MiB of a.qcow2"
    ok, message = copy_space_verdict(
        destination="dst",
        disks=[_disk(capacity=2**20, used=2 * 2**20)],
        pools={"/var/lib/libvirt/images": _pool(8 * 2**20)},
    )
    assert ok and message == "pool 'default' on dst has 8.0 MiB free for 2.0 MiB of a.qcow2"


def test_copied_disks_that_do_not_fit_fail_with_what_to_do():
    ok, message = copy_space_verdict(
        destination="dst",
        disks=[_disk(), _disk("/var/lib/libvirt/images/b.raw", capacity=2**20, used=0)],
        pools={"/var/lib/libvirt/images": _pool(10 * 2**20)},
    )
    assert not ok
    assert message == (
        "pool 'default' on dst (/var/lib/libvirt/images) has 10.0 MiB free, the disks to copy "
        "there (a.qcow2, b.raw) take 17.0 MiB: free 7.0 MiB or more there, or choose another "
        "destination or shared storage"
    )


def test_a_disk_without_a_pool_or_already_there():
    ok, message = copy_space_verdict(
        destination="dst", disks=[_disk("/srv/vm/a.qcow2")], pools={"/srv/vm": None}
    )
    assert not ok and "no active storage pool on dst has the folder /srv/vm" in message
    assert "virsh pool-define-as NAME dir --target /srv/vm" in message
    assert copy_space_verdict(destination="dst", disks=[_disk(there=True)], pools={}) == (
        True,
        "every disk already exists on dst: libvirt copies into it",
    )
    assert copy_space_verdict(destination="dst", disks=[], pools={})[0]


def test_disk_progress_comes_from_the_job_stats():
    from migrations_app.domain.progress import sample_from_job_stats

    sample = sample_from_job_stats(
        {"disk_total": 100, "disk_processed": 40, "disk_remaining": 60, "data_total": 200}
    )
    assert (sample.disk_total_bytes, sample.disk_processed_bytes, sample.disk_remaining_bytes) == (
        100,
        40,
        60,
    )
    # libvirt reports disk_total 0 for a migration that copies no disk.
    assert sample_from_job_stats({"disk_total": 0, "disk_processed": 0}).disk_total_bytes is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"compressed": True, "compression_method": "zstd"}, "compression_method"),
        (
            {"compressed": True, "compression_method": "mt", "compression_level": 12},
            "compression_level",
        ),
        ({"compression_level": 3}, "compression_level"),
        ({"compressed": True, "parallel_connections": 2}, "compressed"),
    ],
)
def test_the_api_answers_400_on_the_compression_field(api, vm, payload, field):
    response = api.post(
        f"/api/vms/{vm.uuid}/migrate/", {"remote_host": "dst", **payload}, format="json"
    )
    assert response.status_code == 400
    assert list(response.json()) == [field], response.json()


def test_the_schema_shows_the_compression_options(api, db):
    schemas = api.get("/api/schema/?format=json").json()["components"]["schemas"]
    fields = schemas["MigrateRequest"]["properties"]
    method = fields["compression_method"]
    enum = schemas[method["allOf"][0]["$ref"].rsplit("/", 1)[1]] if "allOf" in method else method
    assert enum["enum"] == ["xbzrle", "mt"]
    assert (fields["compression_level"]["minimum"], fields["compression_level"]["maximum"]) == (
        0,
        9,
    )
