"""Pages for what only the API did before: creating a batch (operators) and managing the
outgoing webhooks (admins). The pages read; every change goes through the API, with
its checks, audit and errors (static/portal/forms.js, static/portal/batch_new.js)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from hosts.selectors import hosts_visible_to
from migrations_app.domain.convergence import RECOMMENDED_POLICY, ConvergencePolicy
from migrations_app.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from migrations_app.permissions import can_migrate
from portal import selectors
from vms.models import VMState


@login_required
def batch_new(request: HttpRequest) -> HttpResponse:
    if not can_migrate(request.user):
        raise PermissionDenied("Creating a batch needs the operator role.")
    return render(
        request,
        "portal/batch_new.html",
        {
            "vms": selectors.vms_for_listing(request.user).filter(state=VMState.RUNNING),
            "hosts": hosts_visible_to(request.user).filter(retired=False).order_by("name"),
            "policies": ConvergencePolicy.choices,
            "recommended_policy": RECOMMENDED_POLICY,
        },
    )


@login_required
def webhooks(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:  # as the API: IsAdminUser
        raise PermissionDenied("Webhooks are managed by administrators (staff users).")
    return render(
        request,
        "portal/webhooks.html",
        {
            "endpoints": WebhookEndpoint.objects.order_by("id"),
            "deliveries": WebhookDelivery.objects.select_related("endpoint").order_by("-id")[:50],
            "events": WebhookEvent.choices,
        },
    )
