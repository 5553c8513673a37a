"""The API's list and detail reads stay cheap as the data grows (docs/performance.md):
keyset pages for the migration list, a fixed number of queries per page whatever the
number of rows, and the lean read path answering exactly what the serializers say."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework import serializers

from audit.models import AuditEvent
from hosts.models import Host
from migrations_app.models import Migration
from vms.models import VM, VMDisk

pytestmark = pytest.mark.django_db


def _hosts(count: int) -> list[Host]:
    return [Host.objects.create(name=f"h{i:02d}", address=f"192.0.2.{i + 1}") for i in range(count)]


def _migrations(count: int, hosts: list[Host]) -> list[Migration]:
    start = timezone.now() - timedelta(days=1)
    rows = [
        Migration(
            vm_uuid=uuid.uuid4(),
            vm_name=f"vm-{i}",
            source=hosts[i % len(hosts)],
            destination=hosts[(i + 1) % len(hosts)],
            requested_by_name="admin",
            status="succeeded",
            max_downtime_ms=500,
            timeout_s=600,
            # Two rows share each time: the pages must still neither skip nor repeat.
            created_at=start + timedelta(seconds=i // 2),
        )
        for i in range(count)
    ]
    return Migration.objects.bulk_create(rows)


def _vms(count: int, hosts: list[Host]) -> None:
    now = timezone.now()
    vms = VM.objects.bulk_create(
        VM(
            uuid=uuid.uuid4(),
            name=f"vm-{i:03d}",
            host=hosts[i % len(hosts)],
            state="running",
            persistent=True,
            vcpus=1,
            memory_kib=262144,
            max_memory_kib=262144,
            last_synced_at=now,
        )
        for i in range(count)
    )
    VMDisk.objects.bulk_create(
        VMDisk(vm=vm, target="vda", path=f"/var/lib/libvirt/images/{vm.name}.qcow2") for vm in vms
    )


def _events(count: int) -> None:
    AuditEvent.objects.bulk_create(
        AuditEvent(
            event_type="host.created",
            actor_name="admin",
            target_type="hosts.host",
            target_id=str(i),
            target_repr=f"h{i}",
            host_name=f"h{i}",
        )
        for i in range(count)
    )


def test_the_migration_list_is_read_in_keyset_pages_newest_first(api):
    migrations = _migrations(7, _hosts(2))
    seen: list[int] = []
    page = api.get("/api/migrations/", {"page_size": 3}).json()
    assert "count" not in page and page["previous"] is None
    while True:
        assert len(page["results"]) <= 3
        seen += [m["id"] for m in page["results"]]
        if not page["next"]:
            break
        page = api.get(page["next"]).json()
    newest_first = sorted(migrations, key=lambda m: (m.created_at, m.pk), reverse=True)
    assert seen == [m.pk for m in newest_first]
    back = api.get(page["previous"]).json()
    assert [m["id"] for m in back["results"]] == seen[3:6]


def test_a_bad_cursor_is_400_naming_it_as_in_the_audit_log(api):
    for url in ("/api/migrations/", "/api/audit/"):
        response = api.get(url, {"cursor": "not-a-cursor"})
        assert response.status_code == 400, url
        assert response.json() == {"cursor": ["Not a valid page cursor."]}, url


@pytest.mark.parametrize("url", ["/api/hosts/", "/api/vms/", "/api/migrations/", "/api/audit/"])
def test_a_list_page_costs_the_same_queries_for_3_rows_or_40(api, url):
    """No query per row (select_related / prefetch / annotations): 40 rows of each kind
    take as many queries as 3."""

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            response = api.get(url)
        assert response.status_code == 200, response.content
        return len(captured)

    hosts = _hosts(3)
    _vms(3, hosts)
    _migrations(3, hosts)
    _events(3)
    queries()  # the token is then remembered (portal/authentication.py)
    few = queries()
    hosts += [
        Host.objects.create(name=f"more-{i}", address=f"198.51.100.{i + 1}") for i in range(37)
    ]
    _vms(40, hosts)
    _migrations(40, hosts)
    _events(40)
    assert queries() == few


def _drf(serializer_class, instance) -> dict:
    plain = type(
        "Plain" + serializer_class.__name__,
        (serializer_class,),
        {"to_representation": serializers.ModelSerializer.to_representation},
    )
    return plain(instance).data


def test_the_lean_read_path_answers_what_drf_would(api, vm):
    """Every field of a host, a VM, a migration and an audit event, filled and empty,
    rendered by LeanReadMixin equals DRF's own rendering of the same serializer."""
    from audit.api.serializers import AuditEventSerializer
    from migrations_app.serializers import MigrationSerializer
    from vms.api.serializers import HostSerializer, VMDetailSerializer, VMSerializer
    from vms.selectors import hosts_with_vm_counts

    host = vm.host
    Host.objects.filter(pk=host.pk).update(
        shared_storage_paths=["/srv/shared"],
        migration_features={"postcopy": True},
        memory_total_bytes=2**40,
        last_seen_at=timezone.now(),
        port=16509,
    )
    VMDisk.objects.create(vm=vm, target="vda", path="/srv/shared/web-1.qcow2", size_bytes=2**33)
    full = _migrations(1, _hosts(2))[0]
    Migration.objects.filter(pk=full.pk).update(
        completed_stats={"downtime": 12, "data_total": 2**30},
        percent=99.5,
        started_at=timezone.now(),
        error="no",
        failure_reason="libvirt",
    )
    response = api.post(f"/api/hosts/{host.pk}/maintenance/", {"enabled": True}, format="json")
    assert response.status_code == 200, response.content
    cases = [
        (HostSerializer, list(hosts_with_vm_counts())),
        (VMSerializer, list(VM.objects.select_related("host").prefetch_related("disks"))),
        (VMDetailSerializer, [vm]),
        (MigrationSerializer, list(Migration.objects.select_related("source", "destination"))),
        (AuditEventSerializer, list(AuditEvent.objects.all())),
    ]
    for serializer_class, rows in cases:
        assert len(rows) >= 1, serializer_class
        for row in rows:
            lean = serializer_class(row).data
            assert lean == _drf(serializer_class, row), serializer_class
            assert list(lean) == list(_drf(serializer_class, row))
    # List pages read as rows (LeanListMixin: values(), no model instances) too.
    VMDisk.objects.create(vm=vm, target="hda", device="cdrom", path="/srv/iso/boot.iso")
    for serializer_class, queryset in [
        (HostSerializer, hosts_with_vm_counts()),
        (VMSerializer, VM.objects.select_related("host").prefetch_related("disks")),
        (MigrationSerializer, Migration.objects.select_related("source", "destination")),
    ]:
        lookups = serializer_class.row_lookups()
        assert lookups, serializer_class
        rows = serializer_class.rows_complete(list(queryset.order_by("pk").values(*lookups)))
        lean = [serializer_class(row).data for row in rows]
        assert lean == [_drf(serializer_class, i) for i in queryset.order_by("pk")]
        assert [list(row) for row in lean] == [list(_drf(serializer_class, i)) for i in queryset]
    # A null relation on a slug field's path renders as null, as DRF does.
    orphan = Migration.objects.select_related("source", "destination").get(pk=full.pk)
    orphan.source = None
    assert MigrationSerializer(orphan).data["source"] is None


def test_list_pages_are_read_as_rows_where_every_field_allows(api, monkeypatch):
    """The host, VM and migration lists build no model instances (a VM's disks are
    read in one query for the page)."""
    from audit.api.serializers import AuditEventSerializer
    from migrations_app.serializers import MigrationSerializer
    from vms.api.serializers import HostSerializer, VMSerializer

    assert {"libvirt_uri", "vm_count"} <= {name for name, *_ in HostSerializer.row_plan()}
    assert "source__name" in MigrationSerializer.row_lookups()
    assert "pk" in VMSerializer.row_lookups()  # its disks are found by it
    assert AuditEventSerializer.row_lookups()  # it could; its list has its own selector
    _migrations(3, _hosts(2))
    built = []
    original = Migration.from_db.__func__

    def counting(cls, *args, **kwargs):
        built.append(cls)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Migration, "from_db", classmethod(counting))
    response = api.get("/api/migrations/")
    assert response.status_code == 200 and len(response.json()["results"]) == 3
    assert Migration not in built


def test_the_schema_says_the_migration_list_is_keyset_paged(api):
    schema = api.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/migrations/"]["get"]
    parameters = {p["name"] for p in operation["parameters"]}
    assert {"cursor", "page_size"} <= parameters and "page" not in parameters
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(page["properties"]) == {"next", "previous", "results"}
    # The detail takes no list filters (they apply to the list only).
    detail = schema["paths"]["/api/migrations/{id}/"]["get"]
    assert {p["name"] for p in detail["parameters"]} == {"id"}


def _tricky_rows(vm) -> datetime:
    """Values where rendering in SQL could differ from DRF: date-times with and without
    microseconds, text needing escapes, an IPv6 address, tcp and ssh hosts, a null port,
    JSON columns, disks in order, a VM without disks, a float."""
    host = vm.host
    whole_second = timezone.now().replace(microsecond=0)
    Host.objects.filter(pk=host.pk).update(
        shared_storage_paths=['/srv/"quoted"\\dir', "/srv/ünïcode"],
        migration_features={"postcopy": True, "nested": {"b": [1, None]}},
        last_seen_at=whole_second,
        port=16509,
        cpu_model='Model "X"\n\ttab',
    )
    Host.objects.create(name="v6", address="2001:db8::1", transport="tcp", port=None)
    Host.objects.create(name="v4-ssh", address="198.51.100.7", ssh_user="ops", port=2222)
    VM.objects.filter(pk=vm.pk).update(last_synced_at=whole_second, gone_at=None)
    VMDisk.objects.create(vm=vm, target="vdb", path="/srv/shared/b.qcow2", size_bytes=2**40)
    VMDisk.objects.create(vm=vm, target="vda", path="/srv/shared/a.qcow2", size_bytes=None)
    VM.objects.create(
        uuid=uuid.uuid4(),
        name="no-disks",
        host=Host.objects.get(name="v6"),
        state="shutoff",
        persistent=False,
        vcpus=2,
        memory_kib=1025,
        max_memory_kib=2048,
        last_synced_at=timezone.now(),
    )
    migrations = _migrations(3, list(Host.objects.all()))
    Migration.objects.filter(pk=migrations[0].pk).update(
        percent=12.5,
        completed_stats={"downtime": 12},
        started_at=whole_second,
        error='failed: "quote" \\ back',
    )
    return whole_second


def _ordered_equal(fast, slow) -> None:
    assert fast == slow
    assert list(fast) == list(slow)
    for a, b in zip(fast["results"], slow["results"], strict=True):
        assert list(a) == list(b)  # the serializer's field order, kept by the SQL


def test_postgresql_renders_the_list_pages_as_drf_would(api, vm, monkeypatch):
    """On PostgreSQL the host, VM and migration pages are rendered by the database
    (core.api.sql_rows): the same values, types and field order as the Python path,
    which a pretty-printed answer still takes. On SQLite every page takes the Python
    path."""
    from core.api import sql_rows
    from core.api.rows import LeanReadMixin
    from migrations_app.serializers import MigrationSerializer
    from vms.api.serializers import HostSerializer, VMSerializer

    whole_second = _tricky_rows(vm)
    rendered_in_python = []
    original = LeanReadMixin.render_row.__func__

    def counting(cls, row):
        rendered_in_python.append(cls)
        return original(cls, row)

    monkeypatch.setattr(LeanReadMixin, "render_row", classmethod(counting))
    on_postgresql = connection.vendor == "postgresql"
    for url in ("/api/hosts/", "/api/vms/", "/api/migrations/", "/api/migrations/?page_size=2"):
        rendered_in_python.clear()
        fast = api.get(url)
        assert fast.status_code == 200, fast.content
        assert bool(rendered_in_python) is not on_postgresql, url
        slow = api.get(url, HTTP_ACCEPT="application/json; indent=2")
        assert slow.status_code == 200 and rendered_in_python, url
        _ordered_equal(fast.json(), slow.json())
        if "page_size" in url:  # the keyset's next page, from the SQL path's rows
            fast_next = api.get(fast.json()["next"]).json()
            slow_next = api.get(slow.json()["next"], HTTP_ACCEPT="application/json; indent=2")
            _ordered_equal(fast_next, slow_next.json())
            assert fast_next["results"]
    hosts = api.get("/api/hosts/").json()["results"]
    uris = {h["name"]: h["libvirt_uri"] for h in hosts}
    assert uris["v6"] == "qemu+tcp://[2001:db8::1]/system"
    assert uris["v4-ssh"] == "qemu+ssh://ops@198.51.100.7:2222/system"
    seen = {h["name"]: h["last_seen_at"] for h in hosts}
    assert seen[vm.host.name] == whole_second.strftime("%Y-%m-%dT%H:%M:%SZ")  # no ".000000"
    from vms.selectors import hosts_with_vm_counts

    for serializer_class, queryset in [
        (HostSerializer, hosts_with_vm_counts()),
        (VMSerializer, VM.objects.all()),
        (MigrationSerializer, Migration.objects.all()),
    ]:
        rows = queryset.values(*serializer_class.row_lookups())
        assert (sql_rows.json_rows(rows, serializer_class) is not None) is on_postgresql


def test_a_field_without_an_sql_rendering_leaves_the_page_to_python(db):
    """A computed field with no SQL of its own, or a converter the module does not know,
    makes row_json_sql give up (None) rather than render something else."""
    from core.api import sql_rows
    from vms.api.serializers import VMSerializer

    class NoSQL(VMSerializer):
        lean_row_sql = {}  # memory_mib is computed in Python only

    NoSQL.row_lookups()
    names = list(NoSQL.row_lookups())
    assert sql_rows.row_json_sql(NoSQL, VM, names) is None
    assert sql_rows.row_json_sql(VMSerializer, VM, list(VMSerializer.row_lookups()))
    uuid_field = VM._meta.get_field("uuid")
    assert sql_rows.field_sql("c", uuid_field, str) == "(c)::text"
    assert sql_rows.field_sql("c", uuid_field, float) is None
    assert sql_rows.field_sql("c", VM._meta.get_field("memory_kib"), str) is None


@pytest.mark.parametrize("url", ["/api/hosts/", "/api/vms/", "/api/migrations/"])
def test_a_list_page_is_freed_with_its_response_not_by_the_collector(admin_user, url):
    """A page's rows left in reference cycles wait for a full garbage-collector pass,
    which stopped a web worker 40-60 ms (docs/performance.md, issue #24)."""
    import io
    import sys

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections
    from rest_framework.authtoken.models import Token

    hosts = _hosts(3)
    _vms(30, hosts)
    _migrations(30, hosts)
    token = Token.objects.create(user=admin_user).key
    handler = WSGIHandler()  # as the web tier calls Django: no test client around it

    def get() -> int:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": url,
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr,
            "HTTP_AUTHORIZATION": f"Token {token}",
        }
        statuses = []
        body = handler(environ, lambda status, _headers, _exc=None: statuses.append(status))
        length = len(b"".join(body))
        body.close()
        assert statuses == ["200 OK"], statuses
        return length

    # As Django's test client does: the test's connection stays open between requests.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        _measure_garbage(get)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def _measure_garbage(get) -> None:
    import gc

    get()  # caches filled outside the measured request
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert get() > 2_000
        gc.collect()
        garbage = list(gc.garbage)
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
        gc.enable()
    rows = [o for o in garbage if isinstance(o, dict) and ("name" in o or "vm_name" in o)]
    assert rows == [], f"{len(rows)} rows of the page were left to the collector"
    assert len(garbage) < 300, f"{len(garbage)} objects in reference cycles per request"
