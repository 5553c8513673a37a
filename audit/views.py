"""The audit log page (HTML; the events come from the same selector as the API), and
what other apps' audit-reader pages share (migrations_app.views: the report page)."""

from datetime import UTC, datetime
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit.permissions import can_read_audit
from audit.selectors import audit_events_page

AUDIT_FILTERS = ["since", "until", "actor", "event_type", "host", "vm"]


def audit_reader_required(view):
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_read_audit(request.user):
            raise PermissionDenied("The audit log is for administrators and auditors.")
        return view(request, *args, **kwargs)

    return wrapper


def local_input(value: str | datetime) -> str:
    """A time as a datetime-local input shows it (UTC), or the text as it was typed."""
    if isinstance(value, str):
        parsed = parse_datetime(value.strip()) if value else None
        if parsed is None:
            return value
        value = parsed
    if timezone.is_aware(value):
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M")


def error_lines(exc: ValidationError) -> list[str]:
    return [f"{field}: {m}" for field, ms in exc.message_dict.items() for m in ms]


@audit_reader_required
def audit_list(request: HttpRequest) -> HttpResponse:
    values = {name: request.GET.get(name, "") for name in AUDIT_FILTERS}
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
