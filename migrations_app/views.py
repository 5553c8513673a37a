"""The migration report page, for administrators and auditors (figures as the API's)."""

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from audit.permissions import audit_reader_required
from core.forms import error_lines, local_input
from migrations_app import reports
from migrations_app.filters import OUTCOME_CHOICES
from migrations_app.selectors import migrations_for_report

REPORT_FILTERS = ["since", "until", "source", "destination", "vm", "user", "live"]


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
        context["errors"] = error_lines(exc)
        return render(request, "migrations_app/report.html", context, status=400)
    report = reports.migration_report_build(migrations=migrations)
    values["since"], values["until"] = local_input(scope.since), local_input(scope.until)
    query = request.GET.urlencode()
    context.update(
        scope=scope,
        report=report,
        csv_url=f"{reverse('migrations-api:report-migrations-csv')}?{query}",
        json_url=f"{reverse('migrations-api:report-migrations-json')}?{query}",
        api_url=f"{reverse('migrations-api:report-migrations')}?{query}",
        chart_data={
            "per_day": report["per_day"],
            "duration": report["distributions"]["duration_ms"],
            "downtime": report["distributions"]["downtime_ms"],
        },
    )
    return render(request, "migrations_app/report.html", context)
