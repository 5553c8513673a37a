"""What the schema test (tests/test_api_schema.py) found, held by plain examples, and the
rules portal.openapi applies to every operation (docs/api.md)."""

from __future__ import annotations

import json

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from drf_spectacular.generators import SchemaGenerator

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def openapi() -> dict:
    raw = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(json.dumps(raw, cls=DjangoJSONEncoder))


def _operations(openapi: dict):
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            yield path, method.upper(), operation


def test_every_operation_documents_401_and_its_error_body(openapi):
    error = {"$ref": "#/components/schemas/Error"}
    validation = {"$ref": "#/components/schemas/ValidationError"}
    for path, method, operation in _operations(openapi):
        responses = operation["responses"]
        where = f"{method} {path}"
        assert responses["401"]["content"]["application/json"]["schema"] == error, where
        if "requestBody" in operation or any(
            p["in"] == "query" for p in operation.get("parameters", [])
        ):
            assert responses["400"]["content"]["application/json"]["schema"] == validation
        if any(p["in"] == "path" for p in operation.get("parameters", [])):
            assert responses["404"]["content"]["application/json"]["schema"] == error, where
        if method != "GET":
            assert "403" in responses, where


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("post", "/api/vms/{uuid}/migrate/", "202"),
        ("post", "/api/vms/{uuid}/migrate/", "409"),
        ("post", "/api/migrations/{id}/cancel/", "409"),
        ("patch", "/api/migrations/{id}/", "409"),
        ("post", "/api/migration-batches/", "409"),
        ("post", "/api/hosts/{id}/evacuate/", "409"),
        ("get", "/api/vms/", "400"),  # its filters
        ("get", "/api/vms/", "404"),  # a page past the end
        ("get", "/api/audit/", "403"),  # the auditor role
    ],
)
def test_special_answers_are_documented(openapi, method, path, code):
    assert code in openapi["paths"][path][method]["responses"]


def test_read_only_choices_stored_blank_are_documented_blank(openapi):
    phase = openapi["components"]["schemas"]["Migration"]["properties"]["phase"]
    assert {"$ref": "#/components/schemas/BlankEnum"} in phase["oneOf"]


@pytest.mark.parametrize("url", ["/api/vms/?persistent=maybe", "/api/migrations/?live=null"])
def test_a_boolean_filter_refuses_what_is_not_a_boolean(api, url):
    response = api.get(url)
    assert response.status_code == 400, response.content
    name = url.split("?", 1)[1].split("=", 1)[0]
    assert name in response.json()


def test_a_boolean_filter_still_filters(api, vm):
    assert api.get("/api/vms/?persistent=true").json()["count"] == 1
    assert api.get("/api/vms/?persistent=false").json()["count"] == 0
    assert api.get("/api/vms/?persistent=").json()["count"] == 1


def test_an_export_error_is_json_even_when_csv_was_asked(api):
    response = api.get("/api/reports/migrations/export.csv?format=csv&since=soon")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert "since" in response.json()


def test_the_schema_refuses_an_unknown_language_in_json(api):
    response = api.get("/api/schema/?lang=xx")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert "lang" in response.json()


def test_an_unknown_format_is_a_json_404(api):
    response = api.get("/api/schema/?format=nonsense")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_a_malformed_vm_uuid_is_404(api, vm):
    # Matches the path's pattern, is not a UUID: it was a 400 before.
    response = api.get("/api/vms/3D81a65-0f5c3FA9E0A55E-0D42dEF3cB591/")
    assert response.status_code == 404
    assert api.get(f"/api/vms/{str(vm.uuid).upper()}/").status_code == 200


@pytest.mark.parametrize("url", ["/api/vms/{uuid}/migrate/", "/api/hosts/{host}/evacuate/"])
def test_options_describes_a_write_action(api, vm, url):
    # OPTIONS answered 500 here (no serializer to describe).
    response = api.options(url.format(uuid=vm.uuid, host=vm.host_id))
    assert response.status_code == 200, response.content
    assert response.json()["actions"]["POST"]


def test_a_batch_without_a_host_says_null(api, admin_user):
    from migrations_app.models import MigrationBatch

    MigrationBatch.objects.create(created_by=admin_user, created_by_name="admin")
    assert api.get("/api/migration-batches/").json()["results"][0]["host"] is None


def test_a_detail_url_ignores_the_list_filters(api, vm, admin_user):
    # get_object filtered by them: a queued migration was a 404 under ?status=failed.
    from hosts.models import Host
    from migrations_app.models import Migration

    migration = Migration.objects.create(
        vm_uuid=vm.uuid,
        vm_name=vm.name,
        source=vm.host,
        destination=Host.objects.get(name="dst"),
        requested_by=admin_user,
        requested_by_name="admin",
        max_downtime_ms=500,
        timeout_s=600,
    )
    assert api.get(f"/api/migrations/{migration.pk}/?status=failed").status_code == 200
    assert api.get("/api/migrations/?status=failed").json()["results"] == []
    assert api.get(f"/api/hosts/{vm.host_id}/?status=unreachable").status_code == 200
