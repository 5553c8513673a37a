"""The audit log page (HTML; the events come from the same selector as the API)."""

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.filters import AuditEventFilterSet
from audit.permissions import audit_reader_required
from audit.selectors import audit_events_page
from core.forms import error_lines, local_input


@audit_reader_required
def audit_list(request: HttpRequest) -> HttpResponse:
    values = {name: request.GET.get(name, "") for name in AuditEventFilterSet.Meta.fields}
    values["since"], values["until"] = local_input(values["since"]), local_input(values["until"])
    context = {"filters": values, "events": [], "errors": [], "next_url": None}
    try:
        page = audit_events_page(params=request.GET)
    except ValidationError as exc:
        context["errors"] = error_lines(exc)
        return render(request, "audit/list.html", context, status=400)
    context["events"] = page.events
    if page.next_cursor:
        query = request.GET.copy()
        query["cursor"] = page.next_cursor
        context["next_url"] = f"?{query.urlencode()}"
    if request.GET.get("cursor"):
        first = request.GET.copy()
        first.pop("cursor")
        context["first_url"] = f"?{first.urlencode()}"
    return render(request, "audit/list.html", context)
