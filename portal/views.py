"""Server-rendered pages, read-only: every action goes from the browser to the API."""

from uuid import UUID

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.views.defaults import page_not_found

from audit.permissions import can_read_audit
from audit.services import Actor
from hosts.hypervisor import UP_STATES
from hosts.models import Transport
from hosts.permissions import can_manage_group, can_manage_hosts
from hosts.selectors import (
    host_groups_visible,
    host_groups_visible_to,
    host_peer_trusts,
    hosts_in_service_except,
)
from listeners.selectors import listener_view
from migrations_app.domain.convergence import RECOMMENDED_POLICY, ConvergencePolicy
from migrations_app.domain.lifecycle import BATCH_FINAL_STATUSES, BatchStatus
from migrations_app.filters import MigrationFilterSet
from migrations_app.models import MigrationStatus
from migrations_app.permissions import can_migrate, can_migrate_in
from migrations_app.selectors import batches_visible_to, migrations_visible_to
from migrations_app.serializers import MigrationBatchSerializer
from portal import selectors
from portal.forms import ThrottledAuthenticationForm
from tokens.forms import TokenForm
from tokens.models import ApiToken
from tokens.services import token_create, token_revoke
from vms.filters import VMFilterSet
from vms.models import VMState
from vms.selectors import vm_current_with_host

MIGRATIONS_PER_PAGE = 50


class LoginView(auth_views.LoginView):
    """Django's login page, throttled: a locked attempt is answered 429 with Retry-After."""

    form_class = ThrottledAuthenticationForm

    def form_invalid(self, form: ThrottledAuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.lockout is not None:
            response.status_code = 429
            response["Retry-After"] = str(form.lockout.retry_after_s)
        return response


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    vm_filter = VMFilterSet(
        request.GET,
        queryset=selectors.vms_for_listing(request.user, state=request.GET.get("state", "")),
    )
    return render(
        request,
        "portal/dashboard.html",
        {
            "hosts": selectors.hosts_overview(request.user),
            "vms": vm_filter.qs,
            "vm_filter": vm_filter,
            "filtering": any(request.GET.get(k) for k in ("search", "host", "state")),
            "host_names": selectors.host_names(request.user),
            "states": VMState.choices,
            "active_migrations": selectors.active_migrations_for(request.user),
            "can_manage": can_manage_hosts(request.user),
            "can_migrate": can_migrate(request.user),
            "transports": Transport.choices,
            "host_groups": host_groups_visible_to(request.user),
        },
    )


@login_required
def vm_detail(request: HttpRequest, uuid: UUID) -> HttpResponse:
    vm = vm_current_with_host(uuid=str(uuid))
    visible = host_groups_visible(request.user)
    if vm is None or (visible is not None and vm.host.group_id not in visible):
        raise Http404("No VM with this UUID.")
    active = selectors.vm_active_migration(user=request.user, vm=vm)
    return render(
        request,
        "portal/vm_detail.html",
        {
            "vm": vm,
            "live": vm.state in UP_STATES,
            "other_definitions": selectors.vm_other_definitions(request.user, vm),
            "destinations": selectors.migration_destinations(vm),
            "migrations": selectors.vm_migrations(user=request.user, vm=vm),
            "active_migration": active,
            "active_migration_json": selectors.migration_json(active) if active else None,
            "can_migrate": can_migrate_in(request.user, vm.host.group_id),
            "can_manage": can_manage_group(request.user, vm.host.group_id),
            "convergence_policies": ConvergencePolicy.choices,
            "convergence_default": settings.MIGRATION_CONVERGENCE_POLICY,
            "convergence_recommended": RECOMMENDED_POLICY.value,
        },
    )


@login_required
def host_detail(request: HttpRequest, host_id: int) -> HttpResponse:
    host = selectors.host_overview(request.user, host_id)
    if host is None:
        raise Http404("No such host.")
    return render(
        request,
        "portal/host_detail.html",
        {
            "host": host,
            "vms": selectors.host_vms(host),
            "listener": listener_view(host),
            "poll_minutes": settings.INVENTORY_SYNC_MINUTES,
            "active_migrations": selectors.host_active_migrations(user=request.user, host=host),
            "can_manage": can_manage_group(request.user, host.group_id),
            "peer_trusts": host_peer_trusts(host),
            "other_hosts": hosts_in_service_except(request.user, host),
        },
    )


@login_required
def my_tokens(request: HttpRequest) -> HttpResponse:
    """The user's API tokens: create one (shown once), revoke one."""
    created = None
    form = TokenForm()
    if request.method == "POST":
        actor = Actor.from_request(request)
        if "revoke" in request.POST:
            token = get_object_or_404(ApiToken, pk=request.POST["revoke"], user=request.user)
            token_revoke(token=token, actor=actor)
            return redirect("my-tokens")
        form = TokenForm(request.POST)
        if form.is_valid():
            _token, created = token_create(user=request.user, actor=actor, **form.cleaned_data)
            form = TokenForm()
    return render(
        request,
        "portal/tokens.html",
        {
            "tokens": ApiToken.objects.filter(user=request.user),
            "form": form,
            "created": created,
        },
    )


@login_required
def migration_list(request: HttpRequest) -> HttpResponse:
    migration_filter = MigrationFilterSet(request.GET, queryset=migrations_visible_to(request.user))
    page = Paginator(migration_filter.qs, MIGRATIONS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request,
        "portal/migration_list.html",
        {
            "page": page,
            "migration_filter": migration_filter,
            "query": query.urlencode(),
            "statuses": MigrationStatus.choices,
            "chosen_statuses": request.GET.getlist("status"),
            "host_names": selectors.host_names(request.user),
        },
    )


@login_required
def migration_detail(request: HttpRequest, migration_id: int) -> HttpResponse:
    migration = migrations_visible_to(request.user).filter(pk=migration_id).first()
    if migration is None:
        raise Http404("No such migration, or not yours to see.")
    events = selectors.migration_audit_events(migration)
    return render(
        request,
        "portal/migration_detail.html",
        {
            "migration": migration,
            "migration_json": selectors.migration_json(migration),
            "samples_json": selectors.migration_chart_samples(migration),
            "timeline": selectors.migration_timeline(migration, events),
            "events": events,
            "completed_stats": sorted((migration.completed_stats or {}).items()),
            "can_control": can_migrate_in(request.user, migration.source.group_id),
            # Where a request came from is the audit log's: only its readers see it.
            "show_source_ip": can_read_audit(request.user),
            "can_resolve": can_manage_group(request.user, migration.source.group_id)
            and can_manage_group(request.user, migration.destination.group_id),
        },
    )


@login_required
def migration_batch_detail(request: HttpRequest, batch_id: int) -> HttpResponse:
    batch = batches_visible_to(request.user).filter(pk=batch_id).first()
    if batch is None:
        raise Http404("No such batch, or not yours to see.")
    children = batch.children.select_related("source", "destination").order_by("pk")
    return render(
        request,
        "portal/batch_detail.html",
        {
            "batch": batch,
            "children": children,
            "batch_json": MigrationBatchSerializer(batch).data,
            "batch_vocabulary": {
                "status_labels": dict(BatchStatus.choices),
                "final_statuses": [str(s) for s in BATCH_FINAL_STATUSES],
            },
            "can_control": can_migrate(request.user),
        },
    )


def healthz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404: JSON under /api/ (as every API error is), the usual page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": gettext("Not found.")}, status=404)
    return page_not_found(request, exception)
