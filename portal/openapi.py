"""The API's OpenAPI contract: `PortalAutoSchema` adds to every operation the error
answers the API really gives, with portal.api_errors' bodies (views add their own 409s).
No operation lets a host's failure out as a 502, so none documents it.
"""

from __future__ import annotations

import django_filters
from django.core.exceptions import FieldDoesNotExist
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ResolvedComponent
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import permissions, serializers
from rest_framework.generics import GenericAPIView

VALIDATION_ERROR_COMPONENT = "ValidationError"


class ErrorSerializer(serializers.Serializer):
    """Every error that is not about the input: {"detail": "..."}."""

    detail = serializers.CharField(help_text="What went wrong, for a person to read.")


VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "Bad input, by the name of what was wrong: {field: [message, ...]} for a field "
        "of the body or a query parameter, nested for nested input (e.g. "
        '{"items": [{}, {"vm": ["..."]}]}, {"options": {"max_downtime_ms": ["..."]}}); '
        '"non_field_errors" for the request as a whole; {"detail": "..."} if the body '
        "could not be parsed at all."
    ),
    "additionalProperties": {},
    "example": {"remote_host": ["This field is required."]},
}

_DESCRIPTIONS = {
    "400": "Bad input: the body names each field (or query parameter) that was wrong.",
    "401": "Not logged in: no or a wrong token (`Authorization: Token <key>`).",
    "403": "Logged in without the role this needs (or a session login without its CSRF token).",
    "404": "No such object (or a page number past the last page).",
    "406": "An `Accept` header this cannot answer: it answers the media types its success "
    "lists (and the browsable API's text/html).",
    "415": "A body in a format the operation does not read (see its request body), or "
    "without a Content-Type.",
}


class PortalAutoSchema(AutoSchema):
    def get_override_parameters(self) -> list:
        parameters = super().get_override_parameters()
        filterset_class = getattr(self.view, "filterset_class", None)
        # A plain APIView that filters by hand declares its FilterSet.
        if (
            filterset_class is not None
            and not isinstance(self.view, GenericAPIView)
            and self.method == "GET"
        ):
            parameters = [*filterset_parameters(filterset_class), *parameters]
        return parameters

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "query" and parameter["schema"].get("type") != "array":
                # An empty value is no filter (django-filter, pages, cursors): `?since=`.
                parameter["allowEmptyValue"] = True
        responses = operation.setdefault("responses", {})
        for code in self._error_codes(operation):
            if code not in responses:
                responses[code] = self._error_response(code)
        for code, response in responses.items():
            if code >= "400" and "content" not in response:
                # A view's own error answer, e.g. 409: the body is the Error (a 400's
                # names what was wrong, as every 400 does).
                component = (
                    self._validation_error_component() if code == "400" else self._error_component()
                )
                response["content"] = {"application/json": {"schema": component.ref}}
        return operation

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        if (
            isinstance(field, serializers.ChoiceField)
            and field.read_only
            and not field.allow_blank
            and _model_field_is_blank(field)
        ):
            # DRF drops allow_blank from read-only fields; the stored "" is still sent.
            field.allow_blank = True
        return super()._map_serializer_field(field, direction, bypass_extensions)

    def _error_codes(self, operation: dict) -> list[str]:
        parameters = operation.get("parameters", [])
        codes = ["401"]
        if "requestBody" in operation or any(p["in"] == "query" for p in parameters):
            codes.append("400")
        # DRF negotiates the answer's format before anything else, and parses a body
        # only in a format the operation reads.
        codes.append("406")
        if "requestBody" in operation:
            codes.append("415")
        # A role beyond IsAuthenticated, or an unsafe method (CSRF of a session login).
        if self.method not in permissions.SAFE_METHODS or self._needs_a_role():
            codes.append("403")
        # A page past the end, an unknown ?format= (DRF answers both 404).
        paged = any(p["in"] == "query" and p["name"] in ("page", "format") for p in parameters)
        if paged or any(p["in"] == "path" for p in parameters):
            codes.append("404")
        return codes

    def _needs_a_role(self) -> bool:
        return any(type(p) is not permissions.IsAuthenticated for p in self.view.get_permissions())

    def _error_response(self, code: str) -> dict:
        component = self._validation_error_component() if code == "400" else self._error_component()
        return {
            "description": _DESCRIPTIONS[code],
            "content": {"application/json": {"schema": component.ref}},
        }

    def _error_component(self) -> ResolvedComponent:
        return self.resolve_serializer(ErrorSerializer, "response")

    def _validation_error_component(self) -> ResolvedComponent:
        component = ResolvedComponent(
            name=VALIDATION_ERROR_COMPONENT,
            type=ResolvedComponent.SCHEMA,
            object=VALIDATION_ERROR_COMPONENT,
            schema=VALIDATION_ERROR_SCHEMA,
        )
        self.registry.register_on_missing(component)
        return component


def _model_field_is_blank(field: serializers.Field) -> bool:
    model = getattr(getattr(field.parent, "Meta", None), "model", None)
    if model is None or not field.source or "." in field.source:
        return False
    try:
        return bool(model._meta.get_field(field.source).blank)
    except FieldDoesNotExist:  # a property, a method
        return False


def filterset_parameters(filterset_class: type[django_filters.FilterSet]) -> list:
    """Query parameters of a FilterSet the view applies itself, typed as it reads them."""
    parameters = []
    for name, field in filterset_class.base_filters.items():
        description = str(field.extra.get("help_text", ""))
        choices = [str(value) for value, _label in field.extra.get("choices", [])]
        kind, extra = str, {}
        if isinstance(field, django_filters.MultipleChoiceFilter):
            kind = {"type": "array", "items": {"type": "string", "enum": choices}}
            extra = {"explode": True, "style": "form"}
        elif isinstance(field, django_filters.ChoiceFilter):
            extra = {"enum": choices}
        elif isinstance(field, django_filters.IsoDateTimeFilter):
            kind = OpenApiTypes.DATETIME
        parameters.append(OpenApiParameter(name, kind, description=description, **extra))
    return parameters
