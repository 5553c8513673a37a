"""The audit log and migration report pages (HTML; the figures come from the same
selectors and report module as the API)."""

from datetime import UTC, datetime
from functools import wraps

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from audit import reports
from audit.filters import OUTCOME_CHOICES
from audit.permissions import can_read_audit
from audit.selectors import audit_events_page, migrations_for_report

AUDIT_FILTERS = ["since", "until", "actor", "event_type", "host", "vm"]
REPORT_FILTERS = ["since", "until", "source", "destination", "vm", "user", "live"]


def audit_reader_required(view):
    @login_required
    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not can_read_audit(request.user):
            raise PermissionDenied("The audit log is for administrators and auditors.")
        return view(request, *args, **kwargs)

    return wrapper


def _local_input(value: str | datetime) -> str:
    """A time as a datetime-local input shows it (UTC), or the text as it was typed."""
    if isinstance(value, str):
        parsed = parse_datetime(value.strip()) if value else None
        if parsed is None:
            return value
        value = parsed
    if timezone.is_aware(value):
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M")


def _errors(exc: ValidationError) -> list[str]:
    return [f"{field}: {m}" for field, ms in exc.message_dict.items() for m in ms]


@audit_reader_required
def audit_list(request: HttpRequest) -> HttpResponse:
    values = {name: request.GET.get(name, "") for name in AUDIT_FILTERS}
    values["since"], values["until"] = _local_input(values["since"]), _local_input(values["until"])
    context = {"filters": values, "events": [], "errors": [], "next_url": None}
    try:
        page = audit_events_page(params=request.GET)
    except ValidationError as exc:
        context["errors"] = _errors(exc)
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


@audit_reader_required
def migration_report(request: HttpRequest) -> HttpResponse:
    values = {name: request.GET.get(name, "") for name in REPORT_FILTERS}
    outcomes = request.GET.getlist("outcome")
    context = {
        "filters": values,
        "outcomes": outcomes,
        "outcome_choices": OUTCOME_CHOICES,
        "errors": [],
    }
    try:
        migrations, scope = migrations_for_report(params=request.GET)
    except ValidationError as exc:
        context["errors"] = _errors(exc)
        return render(request, "audit/report.html", context, status=400)
    report = reports.migration_report_build(migrations=migrations)
    values["since"], values["until"] = _local_input(scope.since), _local_input(scope.until)
    query = request.GET.urlencode()
    context.update(
        scope=scope,
        report=report,
        csv_url=f"{reverse('audit-api:report-migrations-csv')}?{query}",
        json_url=f"{reverse('audit-api:report-migrations-json')}?{query}",
        api_url=f"{reverse('audit-api:report-migrations')}?{query}",
        chart_data={
            "per_day": report["per_day"],
            "duration": report["distributions"]["duration_ms"],
            "downtime": report["distributions"]["downtime_ms"],
        },
    )
    return render(request, "audit/report.html", context)
