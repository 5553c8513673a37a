"""The API's one exception handler: domain exceptions become HTTP answers here, with JSON
bodies whatever format was negotiated; an unexpected exception stays a 500."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from hosts import gateway
from hosts.access import ssh
from hosts.access.ssh_services import SshAccessError
from hosts.group_services import NoCpuToBaseline
from hosts.services import HostInUse
from migrations_app.requests import MigrationConflict


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class BadGateway(exceptions.APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "A hypervisor host did not answer as expected."
    default_code = "bad_gateway"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    response = drf_exception_handler(as_api_exception(exc, context), context)
    if response is not None:
        _errors_in_json(context.get("request"))
    return response


def _errors_in_json(request) -> None:
    """Error bodies are JSON even for another format (an export's CSV), but browsable HTML."""
    if request is None:
        return
    renderer = getattr(request, "accepted_renderer", None)  # None: negotiation failed
    if renderer is None or renderer.media_type not in ("application/json", "text/html"):
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type


def as_api_exception(exc: Exception, context: dict) -> Exception:
    """The APIException that stands for a domain exception (others unchanged)."""
    if isinstance(exc, MigrationConflict | HostInUse | NoCpuToBaseline):
        return Conflict(str(exc))
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            return exceptions.ValidationError(exc.message_dict)
        return exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: exc.messages})
    if isinstance(exc, SshAccessError):
        return exceptions.ValidationError({_input_named(exc.field, context): [str(exc)]})
    if isinstance(exc, gateway.HostRefused | ssh.SshRefused):
        # Outside PORTAL_HOST_NETWORKS: refused before anything was contacted.
        return exceptions.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: [str(exc)]})
    if isinstance(exc, gateway.DomainNotFound):
        return exceptions.NotFound(str(exc))
    if isinstance(exc, gateway.GatewayError | ssh.SshError):
        return BadGateway(str(exc))
    return exc


def _input_named(field: str, context: dict) -> str:
    """`field` if the request sent it, else non_field_errors."""
    request = context.get("request")
    try:
        sent = request.data if request is not None else {}
    except exceptions.ParseError:
        sent = {}
    return field if field in sent else api_settings.NON_FIELD_ERRORS_KEY
