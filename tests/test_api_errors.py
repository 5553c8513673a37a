"""The one API exception handler: each domain exception and the answer it gets."""

import pytest
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from hosts import gateway
from hosts.access import ssh
from hosts.access.ssh_services import SshAccessError
from migrations_app.requests import MigrationConflict
from portal.api_errors import api_exception_handler


def _answer(exc: Exception, body: dict | None = None):
    django_request = APIRequestFactory().post("/api/x/", body or {}, format="json")
    request = Request(django_request, parsers=[JSONParser()])
    response = api_exception_handler(exc, {"request": request, "view": None})
    return response.status_code, response.data


def test_a_migration_conflict_is_409_with_the_reason():
    assert _answer(MigrationConflict("VM web-1 is already being migrated.")) == (
        409,
        {"detail": "VM web-1 is already being migrated."},
    )


def test_a_django_validation_error_is_400_naming_the_field():
    status, data = _answer(DjangoValidationError({"address": ["Not a hostname."]}))
    assert (status, data) == (400, {"address": ["Not a hostname."]})
    status, data = _answer(DjangoValidationError("Something is wrong."))
    assert (status, data) == (400, {"non_field_errors": ["Something is wrong."]})


@pytest.mark.parametrize(
    ("field", "body", "named"),
    [
        ("remote_host", {"remote_host": "h1", "user": "root"}, "remote_host"),  # migrate
        ("password", {"remote_host": "h1", "user": "root", "password": "x"}, "password"),
        ("remote_host", {"user": "root", "password": "x"}, "non_field_errors"),  # ssh-access
        ("fingerprint", {"fingerprint": "SHA256:x"}, "fingerprint"),  # accept-host-key
        ("fingerprint", {}, "non_field_errors"),
    ],
)
def test_an_ssh_access_error_names_the_input_the_request_sent(field, body, named):
    status, data = _answer(SshAccessError("no way in", field=field), body)
    assert (status, data) == (400, {named: ["no way in"]})


def test_host_errors():
    assert _answer(gateway.DomainNotFound("no domain with UUID u"))[0] == 404
    assert _answer(gateway.HostUnreachable("h1:16509 did not answer")) == (
        502,
        {"detail": "h1:16509 did not answer"},
    )
    assert _answer(gateway.GatewayError("operation failed"))[0] == 502
    assert _answer(ssh.SshUnreachable("h1:22 did not answer"))[0] == 502


def test_anything_else_is_left_to_drf():
    assert api_exception_handler(RuntimeError("bug"), {"request": None, "view": None}) is None
