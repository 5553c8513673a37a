from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from audit.models import AuditEvent


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    events = AuditEvent.objects.all()[:200]
    return render(request, "audit/list.html", {"events": events})


@login_required
def migration_report(request: HttpRequest) -> HttpResponse:
    return render(request, "audit/report.html", {})
