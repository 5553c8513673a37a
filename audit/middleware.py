"""Request ids: one per request, the client's X-Request-ID if it sent a sane one, echoed
in the response so that a client can find its request in the audit log.

Audit events get a request id with or without this middleware (see
audit.services.request_id_of); with it (portal/settings.py), clients also see the id.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from audit.services import request_id_of


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request_id_of(request)
        response = self.get_response(request)
        response.setdefault("X-Request-ID", request_id)
        return response
