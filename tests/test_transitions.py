"""One door for state: `migrations_app/transitions.py` is the only production code that
writes a migration's or a batch's `status` (proved over the source's syntax tree), and
the door itself refuses what the lifecycle does not allow and fences stale claims."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from audit.events import EventType
from audit.models import AuditEvent
from audit.services import Actor
from migrations_app.domain.options import MigrationOptions
from migrations_app.models import Migration, MigrationStatus
from migrations_app.transitions import ClaimLost, InvalidTransition, migration_change

ROOT = Path(__file__).resolve().parent.parent
# The packages that may see a migration (core, audit, hosts and vms lie below it, and
# their own `status` columns are other models').
PRODUCTION = ["migrations_app", "portal", "lab", "bench"]
# Other models of migrations_app with a `status` of their own.
OTHER_MODELS = {"WebhookDelivery"}
THE_DOOR = ROOT / "migrations_app/transitions.py"
# Rows are born with a status (created, not changed) by a request; the benchmarks'
# seeders build whole histories in memory (checked against the lifecycle table).
BIRTHPLACE = ROOT / "migrations_app/requests.py"
SEEDERS = {ROOT / "bench/seed_history.py", ROOT / "bench/synthetic.py"}


QUERYSET_STEPS = {"objects", "filter", "exclude", "all", "children", "select_for_update"}


def _writes_rows(call: ast.Call) -> bool:
    """Is this call a queryset's (rows of a model that is not one of OTHER_MODELS),
    not e.g. a dict's `update`?"""
    steps, node = set(), call.func
    while isinstance(node, ast.Attribute | ast.Call):
        if isinstance(node, ast.Attribute):
            steps.add(node.attr)
        node = node.func if isinstance(node, ast.Call) else node.value
    root = node.id if isinstance(node, ast.Name) else None
    return bool(steps & QUERYSET_STEPS) and root not in OTHER_MODELS


def _status_writes(source: str) -> list[tuple[int, str]]:
    """(line, how) of every write of an attribute or keyword named `status`: an
    assignment `x.status = ...`, a `setattr(x, "status", ...)`, or a call with a
    `status=` keyword to update()/create()/get_or_create()/update_or_create()."""
    writes = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    writes.append((node.lineno, "assignment"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            keywords = {k.arg for k in node.keywords}
            if (
                method in {"update", "create", "get_or_create", "update_or_create"}
                and "status" in keywords
                and _writes_rows(node)
            ):
                writes.append((node.lineno, method))
            if method == "save":
                for keyword in node.keywords:
                    if keyword.arg == "update_fields" and "status" in ast.unparse(keyword.value):
                        writes.append((node.lineno, "save(update_fields=status)"))
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            if len(node.args) > 1 and getattr(node.args[1], "value", None) == "status":
                writes.append((node.lineno, "setattr"))
    return writes


def _production_files():
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.relative_to(ROOT).parts[1:-1]:
                yield path


def test_only_the_door_writes_status():
    found = [
        f"{path.relative_to(ROOT)}:{line} ({how})"
        for path in _production_files()
        if path != THE_DOOR and path not in SEEDERS
        for line, how in _status_writes(path.read_text())
        if not (path == BIRTHPLACE and how == "create")
    ]
    assert found == [], "status written outside migrations_app/transitions.py:\n" + "\n".join(found)


def test_the_door_itself_is_seen_writing_status():
    """The rule above would notice a writer: it sees the door's own writes."""
    assert "assignment" in {how for _, how in _status_writes(THE_DOOR.read_text())}


@pytest.mark.parametrize(
    "code, how",
    [
        ("m.status = 'failed'", "assignment"),
        ("Migration.objects.filter(pk=1).update(status='failed')", "update"),
        ("m.save(update_fields=['status', 'phase'])", "save(update_fields=status)"),
        ("setattr(m, 'status', 'failed')", "setattr"),
        ("Migration.objects.create(status='queued')", "create"),
        ("batch.children.filter(pk=1).update(status='failed')", "update"),
    ],
)
def test_the_rule_sees_each_way_of_writing_status(code, how):
    assert _status_writes(code) == [(1, how)]


@pytest.fixture
def migration(db, django_user_model):
    from hosts.models import Host

    source = Host.objects.create(name="src", address="127.0.0.31")
    destination = Host.objects.create(name="dst", address="127.0.0.32")
    return Migration.objects.create(
        vm_uuid="9a0c5b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        vm_name="db-1",
        source=source,
        destination=destination,
        status=MigrationStatus.MIGRATING,
        claim_epoch=3,
        **MigrationOptions().as_model_fields(),
    )


def test_a_change_writes_one_event_of_the_one_detail_shape(migration):
    changed = migration_change(
        migration,
        MigrationStatus.FAILED,
        EventType.MIGRATION_FAILED,
        actor=Actor.system("test"),
        epoch=3,
        error="boom",
        failure_reason="libvirt",
    )
    assert changed.status == MigrationStatus.FAILED and changed.finished_at is not None
    (event,) = AuditEvent.objects.filter(event_type=EventType.MIGRATION_FAILED)
    assert event.before == {"status": "migrating"} and event.after == {"status": "failed"}
    assert set(event.detail) == {
        "vm_uuid",
        "vm_name",
        "source",
        "destination",
        "options",
        "batch",
        "error",
        "failure_reason",
    }
    assert (event.detail["error"], event.detail["failure_reason"]) == ("boom", "libvirt")


def test_a_stale_epoch_and_a_forbidden_change_write_nothing(migration):
    with pytest.raises(ClaimLost):
        migration_change(
            migration,
            MigrationStatus.COMPLETING,
            EventType.MIGRATION_COMPLETING,
            actor=Actor.system("test"),
            epoch=2,
        )
    with pytest.raises(InvalidTransition):
        migration_change(
            migration, MigrationStatus.QUEUED, EventType.MIGRATION_DUE, actor=Actor.system("t")
        )
    migration.refresh_from_db()
    assert migration.status == MigrationStatus.MIGRATING
    assert not AuditEvent.objects.exists()


def test_other_models_status_is_not_the_doors():
    assert _status_writes("WebhookDelivery.objects.filter(pk=1).update(status='sent')") == []


def test_a_dicts_update_is_not_a_write():
    assert _status_writes("fields.update(status='delivered')") == []
