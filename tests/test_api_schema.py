"""The API does what its OpenAPI schema says (issues #12, #22): a property-based run of
schemathesis over every operation of /api/schema/, against the app in-process (its WSGI
handler, through schemathesis' WSGI transport), with a token.

Checks on every answer: no 5xx, the status code is one the operation documents, the
content type is the documented one, the body matches the documented schema, and data
the schema forbids is refused (4xx).

Every run is bounded and deterministic (derandomized: the same cases each time):
- the quick run (reads and writes as a superuser, EXAMPLES examples per operation of the
  fuzzing phase, coverage phase off): about 20 s, part of `make test-fast`;
- the deep run (marker `fuzz`, `make test` only): as a superuser, the coverage phase on
  (boundary values, each parameter left out or of the wrong type, duplicated query
  parameters, and methods the schema does not list for a path) plus DEEP_EXAMPLES
  examples of the fuzzing phase; and every operation as each role, which must answer the
  403 it documents where the role does not reach.

The writes only run with PORTAL_HOST_NETWORKS restricted to loopback, asserted first:
here to 127.0.0.240/28, where nothing listens, so a host or webhook the fuzzer enters
with another address is refused (400) and one inside the range is refused by the kernel
at once (no SYN goes anywhere but the loopback interface); a made-up name is not looked
up (only numeric addresses resolve during the run: no DNS query). The database is the test's
(rolled back after each operation); `transaction.on_commit` never fires in it, so no
migration task is queued.
"""

from __future__ import annotations

import ipaddress
import json
import socket

import hypothesis
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core import signals
from django.core.serializers.json import DjangoJSONEncoder
from django.db import close_old_connections
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from portal.wsgi import application
from tests.conftest import running_vm_on

pytestmark = pytest.mark.django_db

EXAMPLES = 10
DEEP_EXAMPLES = 25
ROLE_EXAMPLES = 4
# The roles of migrations_app/migrations/0013_roles.py, and a user in no group.
ROLES = ("nobody", "viewer", "operator", "host admin", "auditor")
# Loopback, and nothing there: what the write operations may reach.
FUZZ_HOST_NETWORKS = "127.0.0.240/28"
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

# Not checked: positive_data_acceptance (schema-valid data must get a 2xx). The schema
# cannot say everything the API refuses with a 400 naming the input: an audit `cursor`
# is opaque (only one from a `next` link decodes), a report's `since` must lie before
# `until`, a peer-trust or webhook-delivery filter by id refuses an id that does not
# exist, and writes refuse hosts outside PORTAL_HOST_NETWORKS or a VM in the wrong state.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# The deep run also sends each operation without the token (it must be refused), and
# methods a path does not list (405 with an Allow header).
DEEP_CHECKS = [
    *CHECKS,
    ignored_auth,
    unsupported_method,
    allow_header_conformance,
    response_headers_conformance,
]


def _schema() -> dict:
    """The schema /api/schema/ serves (the same generator), as plain JSON."""
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(json.dumps(raw, cls=DjangoJSONEncoder))


def _loaded(*, coverage: bool) -> schemathesis.BaseSchema:
    loaded = schemathesis.openapi.from_dict(_schema())
    loaded.app = application
    # The coverage phase's cases are not bounded by max_examples (hundreds per
    # operation); the fuzzing phase, positive and negative, is.
    loaded.config.phases.coverage.enabled = coverage
    return loaded


schema = _loaded(coverage=False)
# The schema document itself is read in the quick run: generating it takes a
# third of a second, and the coverage phase would ask for it some sixty times.
deep_schema = _loaded(coverage=True).exclude(path="/api/schema/")


def _run_settings(examples: int):
    def decorate(test):
        return hypothesis.settings(
            max_examples=examples,
            derandomize=True,
            deadline=None,
            database=None,
            # The token and the seeded rows are function-scoped on purpose: every example
            # of one operation shares them (and their changes; rolled back at the end).
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )(test)

    return decorate


def _token_of(user) -> str:
    return Token.objects.create(user=user).key


@pytest.fixture
def _keep_connection():
    """The WSGI handler keeps the test's database connection (as Django's test client
    does: it would close it at the end of each request)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(admin_user, _keep_connection) -> str:
    """A superuser's token."""
    return _token_of(admin_user)


@pytest.fixture(params=ROLES)
def role_token(request, _keep_connection) -> str:
    """The token of a user with one role (or none)."""
    user = get_user_model().objects.create_user(username=f"fuzz-{request.param}".replace(" ", "-"))
    if request.param != "nobody":
        user.groups.add(Group.objects.get(name=request.param))
    return _token_of(user)


@pytest.fixture
def _no_dns(monkeypatch):
    """Names the fuzzer makes up are not looked up: only numeric addresses resolve, so
    no query leaves the machine (a made-up name is refused as unresolvable, 400)."""
    real = socket.getaddrinfo

    def numeric_only(host, port, family=0, type=0, proto=0, flags=0):
        return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)


@pytest.fixture
def seeded(admin_user, settings, _no_dns):
    """One of each object on loopback addresses where nothing listens, so that ids the
    fuzzer picks (small integers first) find something and bodies get checked."""
    from audit.events import EventType
    from audit.services import Actor, audit_event_record
    from hosts.access.models import PeerTrust
    from hosts.models import Host
    from migrations_app import webhooks
    from migrations_app.models import Migration, MigrationBatch, WebhookEvent

    settings.HOST_NETWORKS = FUZZ_HOST_NETWORKS
    settings.LIBVIRT_CONNECT_TIMEOUT_S = 1
    settings.PLACEMENT_CPU_CHECK_TIMEOUT_S = 1
    source = Host.objects.create(name="src", address="127.0.0.241")
    destination = Host.objects.create(name="dst", address="127.0.0.242")
    vm = running_vm_on(source)
    batch = MigrationBatch.objects.create(created_by=admin_user, created_by_name="admin")
    Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=source,
        destination=destination,
        requested_by=admin_user,
        requested_by_name="admin",
        max_downtime_ms=500,
        timeout_s=600,
        batch=batch,
    )
    PeerTrust.objects.create(
        source=source,
        destination=destination,
        source_key="ssh-ed25519 AAAA portal@src",
        source_key_fingerprint="SHA256:x",
        destination_user="root",
        destination_host_key_fingerprint="SHA256:y",
        verified_at=timezone.now(),
    )
    webhooks.webhook_endpoint_create(
        url="http://127.0.0.243/hook", events=[WebhookEvent.values[0]], actor=Actor.system()
    )
    audit_event_record(actor=Actor.system(), event_type=EventType.HOST_CREATED, target=source)
    return vm


_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _checks(case, checks: list) -> list:
    """In a form every value is text: a field sent as the text "null" or "0" is a
    valid string there, so a form body cannot be the wrongly typed data that
    negative_data_rejection expects refused; JSON bodies keep that check."""
    if case.media_type in _FORMS:
        return [check for check in checks if check is not negative_data_rejection]
    return checks


def _assert_loopback_only() -> None:
    from hosts.networks import allow_list

    allowed = allow_list()
    assert allowed.restricts, "PORTAL_HOST_NETWORKS must be set for the write run"
    assert not allowed.suffixes, allowed.describe()
    for network in allowed.networks:
        assert any(network.subnet_of(lo) for lo in LOOPBACK if lo.version == network.version), (
            f"{network} is not loopback: the write run must not reach any other address"
        )


@schema.include(method="GET").parametrize()
@_run_settings(EXAMPLES)
def test_every_read_does_what_the_schema_says(case, token, seeded):
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"}, checks=_checks(case, CHECKS)
    )


@schema.exclude(method="GET").parametrize()
@_run_settings(EXAMPLES)
def test_every_write_does_what_the_schema_says(case, token, seeded):
    _assert_loopback_only()
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"}, checks=_checks(case, CHECKS)
    )


@pytest.mark.fuzz
@deep_schema.parametrize()
@_run_settings(DEEP_EXAMPLES)
def test_every_operation_and_method_deeply(case, token, seeded):
    _assert_loopback_only()
    case.call_and_validate(
        headers={"Authorization": f"Token {token}"}, checks=_checks(case, DEEP_CHECKS)
    )


@pytest.mark.fuzz
@schema.exclude(path="/api/schema/").parametrize()
@_run_settings(ROLE_EXAMPLES)
def test_every_operation_as_each_role(case, role_token, seeded):
    _assert_loopback_only()
    case.call_and_validate(
        headers={"Authorization": f"Token {role_token}"}, checks=_checks(case, CHECKS)
    )


def _operations() -> list[tuple[str, str, dict]]:
    document = _schema()
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _filled(path: str, vm) -> str:
    """The path of a seeded object (ids are not 1 on PostgreSQL: its sequences survive
    the rolled-back tests before); an id nothing has where nothing was seeded."""
    from audit.models import AuditEvent
    from hosts.access.models import PeerTrust
    from hosts.models import Host, HostGroup, HostGroupGrant
    from migrations_app.models import Migration, MigrationBatch, WebhookEndpoint

    models = {
        "audit": AuditEvent,
        "hosts": Host,
        "host-groups": HostGroup,
        "host-group-grants": HostGroupGrant,
        "migration-batches": MigrationBatch,
        "migrations": Migration,
        "peer-trusts": PeerTrust,
        "webhooks": WebhookEndpoint,
    }
    model = models.get(path.split("/")[2])
    seeded_pk = model.objects.order_by("pk").values_list("pk", flat=True).first() if model else None
    pk = seeded_pk or 999999
    return path.replace("{id}", str(pk)).replace("{uuid}", str(vm.uuid))


def test_an_answer_in_a_format_nobody_serves_is_the_documented_406(api, seeded):
    """Outside schemathesis' reach (it keeps to the documented media types): an `Accept`
    the operation cannot answer."""
    for path, method, operation in _operations():
        response = getattr(api, method)(_filled(path, seeded), HTTP_ACCEPT="application/xml")
        assert response.status_code == 406, (method, path, response.status_code)
        assert "406" in operation["responses"], (method, path)


def test_a_body_in_a_format_nobody_reads_is_the_documented_415(api, seeded):
    """A text/plain body to every write: 415 where the operation reads a body, and a
    documented answer where it reads none."""
    reads_a_body = 0
    for path, method, operation in _operations():
        if method == "get":
            continue
        response = getattr(api, method)(_filled(path, seeded), "x", content_type="text/plain")
        assert str(response.status_code) in operation["responses"], (method, path, response)
        if "requestBody" in operation:
            reads_a_body += 1
            assert response.status_code == 415, (method, path, response.status_code)
    assert reads_a_body >= 15


def _query_parameters(operation: dict) -> list[dict]:
    return [p for p in operation.get("parameters", []) if p["in"] == "query"]


def test_a_nul_in_any_query_parameter_is_a_documented_answer(api, seeded):
    """PostgreSQL refuses a NUL in a text value (SQLite stores it): every query parameter
    of every read, NUL-laden, is a documented answer, a 400 naming it if refused."""
    sent = 0
    for path, method, operation in _operations():
        if method != "get":
            continue
        for parameter in _query_parameters(operation):
            name = parameter["name"]
            response = api.get(_filled(path, seeded), {name: "a\x00b"})
            sent += 1
            assert str(response.status_code) in operation["responses"], (path, name, response)
            if response.status_code == 400:
                assert name in response.json() or "detail" in response.json(), (path, name)
    assert sent >= 50


@pytest.mark.parametrize(
    ("value", "status"),
    [
        # Python reads offsets up to 23:59, PostgreSQL stores up to 15:59: read into UTC.
        ("2026-01-01T00:00:00+17:57", 200),
        ("2026-01-01T00:00:00-23:59", 200),
        # Past the year 9999 once in UTC.
        ("9999-12-31T23:59:59-01:00", 400),
    ],
)
def test_a_time_at_any_offset_in_any_date_parameter_is_a_documented_answer(
    api, seeded, value, status
):
    sent = 0
    for path, method, operation in _operations():
        for parameter in _query_parameters(operation):
            if method != "get" or parameter["schema"].get("format") != "date-time":
                continue
            name = parameter["name"]
            response = api.get(_filled(path, seeded), {name: value})
            sent += 1
            assert response.status_code == status, (path, name, response)
            if status == 400:
                assert name in response.json(), (path, name, response.json())
    assert sent >= 6
