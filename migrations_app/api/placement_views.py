"""Placement API: the destination ranking of a VM, and a host's evacuation."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from hosts.models import Host
from hosts.permissions import CanManageHosts
from hosts.selectors import hosts_visible_to
from migrations_app.api.placement_serializers import (
    DestinationsSerializer,
    EvacuateRequestSerializer,
    EvacuationSerializer,
    destinations_data,
    evacuation_data,
)
from migrations_app.api.serializers import DirtyRateQuerySerializer
from migrations_app.api.views import CONFLICT, DIRTY_RATE_PARAMETER
from migrations_app.evacuation import host_evacuate
from migrations_app.permissions import CanMigrate
from migrations_app.selectors import destinations_ranked
from vms.api.views import VMByUUIDMixin
from vms.models import VM


class VMDestinationsViewSet(VMByUUIDMixin, viewsets.GenericViewSet):
    """GET /api/vms/{uuid}/destinations/ (the operator role: it opens connections to the
    hosts for libvirt's CPU comparison)."""

    queryset = VM.objects.all()
    permission_classes = [CanMigrate]

    @extend_schema(responses=DestinationsSerializer, parameters=[DIRTY_RATE_PARAMETER])
    @action(detail=True, methods=["get"])
    def destinations(self, request: Request, uuid: str | None = None) -> Response:
        """Every other registered host ranked for this VM, best first: `score` (higher
        is better), `fit`, and the `reasons` (memory free after placing the VM and the
        VMs already migrating there, libvirt's CPU comparison, migrations in flight to
        and from the host, running VMs, reachability, maintenance). Unfit hosts come
        last with why. Changes nothing; a host that does not answer the CPU comparison
        within PORTAL_PLACEMENT_CPU_CHECK_TIMEOUT_S is unfit, with the reason. For a
        running VM each host also has the `convergence` forecast of an uncapped copy
        (its dirty rate measured meanwhile, `dirty_rate_s`); one that would not
        converge adds that reason, with the recommended policy."""
        query = DirtyRateQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        vm = self.get_object()
        placements = destinations_ranked(vm, dirty_rate_s=query.validated_data["dirty_rate_s"])
        return Response(destinations_data(vm=vm, placements=placements))


class HostEvacuateViewSet(viewsets.GenericViewSet):
    """POST /api/hosts/{id}/evacuate/ (the rest of /api/hosts/ is vms.api.views). The
    host admin role, not the operator: it puts the host into maintenance."""

    queryset = Host.objects.all()  # for the schema; get_queryset scopes it
    permission_classes = [CanManageHosts]

    def get_queryset(self):
        return hosts_visible_to(self.request.user)

    # What OPTIONS describes.
    serializer_class = EvacuateRequestSerializer

    @extend_schema(
        request=EvacuateRequestSerializer,
        responses={200: EvacuationSerializer, 202: EvacuationSerializer, 409: CONFLICT},
    )
    @action(detail=True, methods=["post"])
    def evacuate(self, request: Request, pk: str | None = None) -> Response:
        """The plan to move every VM off this host: which VM goes where, in what order
        (largest memory first, each placed by the destination ranking with the VMs
        planned before it counted, so no destination is overcommitted), and what cannot
        move and why (host devices; VMs not running: shut-off VMs stay defined on the
        host; VMs already moving; no fit destination). `dry_run` true (the default)
        changes nothing (200). `dry_run` false puts the host into maintenance and
        starts the plan as an evacuation batch of live migrations (202, `batch` and
        `Location: /api/migration-batches/{id}/`), in one transaction; 400 on `dry_run`
        if no VM can move, 409 if one started moving meanwhile (nothing changed)."""
        serializer = EvacuateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        dry_run = serializer.validated_data["dry_run"]
        evacuation, batch = host_evacuate(
            host=self.get_object(), actor=Actor.from_request(request), **serializer.validated_data
        )
        data = evacuation_data(
            evacuation=evacuation, dry_run=dry_run, batch_id=batch.pk if batch else None
        )
        if batch is None:
            return Response(data)
        location = f"/api/migration-batches/{batch.pk}/"
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})
