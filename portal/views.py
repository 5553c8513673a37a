from django.contrib.auth.decorators import login_required
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from hosts.models import Host
from vms.models import VM, VMState


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    hosts = Host.objects.annotate(
        running_vms=Count("vms", filter=Q(vms__state=VMState.RUNNING))
    ).order_by("name")
    vms = VM.objects.present().select_related("host").order_by("name", "host__name")
    return render(request, "portal/dashboard.html", {"hosts": hosts, "vms": vms})


def healthz(_request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
