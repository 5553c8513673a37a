from django.db.models import Q
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, views, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from hosts import group_services
from hosts.access import peer_services, ssh_services
from hosts.access.models import PeerTrust
from hosts.api.serializers import (
    HostGroupGrantSerializer,
    HostGroupSerializer,
    PeerTrustRequestSerializer,
    PeerTrustSerializer,
    PortalKeySerializer,
)
from hosts.models import HostGroup, HostGroupGrant
from hosts.permissions import (
    CanManageAllHostsOrReadOnly,
    CanManageHosts,
    CanManageHostsOrReadOnly,
    can_manage_group,
)
from hosts.selectors import host_groups_visible_to, scoped


class PortalKeyView(views.APIView):
    """The portal's public ssh key, to install on hosts by hand if preferred."""

    @extend_schema(responses=PortalKeySerializer)
    def get(self, request: Request) -> Response:
        key = ssh_services.portal_public_key()
        return Response({"public_key": key.public_line, "fingerprint": key.fingerprint})


class PeerTrustViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Host-to-host ssh trust for peer-to-peer migration. Set up by the first migration
    between two hosts (or here, ahead of time); removing it takes the source's key off
    the destination and the pinned host key off the source."""

    serializer_class = PeerTrustSerializer
    permission_classes = [CanManageHostsOrReadOnly]
    filterset_fields = ["source", "destination"]

    def get_queryset(self):
        trusts = PeerTrust.objects.select_related("source", "destination")
        return scoped(trusts, self.request.user, group_field="source__group_id")

    @extend_schema(request=PeerTrustRequestSerializer, responses={201: PeerTrustSerializer})
    def create(self, request: Request) -> Response:
        serializer = PeerTrustRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        for field in ("source", "destination"):
            host = serializer.validated_data[field]
            if not can_manage_group(request.user, host.group_id):
                raise PermissionDenied(
                    f"{field}: {host.name} is in host group {host.group.name}: a peer trust "
                    "needs the host admin role on both hosts' groups."
                )
        trust = peer_services.peer_trust_ensure(
            source=serializer.validated_data["source"],
            destination=serializer.validated_data["destination"],
            actor=Actor.from_request(request),
        )
        return Response(PeerTrustSerializer(trust).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: PeerTrust) -> None:
        peer_services.peer_trust_remove(trust=instance, actor=Actor.from_request(self.request))


HOST_GROUP_IN_USE = OpenApiResponse(description="The group still has hosts: move them first.")


class HostGroupViewSet(viewsets.ModelViewSet):
    """Host groups (oVirt's cluster, Nova's aggregate): migrations, recommendations and
    evacuations stay inside one. Each user lists the groups their roles cover; creating,
    changing and removing one needs the host admin role globally."""

    serializer_class = HostGroupSerializer
    permission_classes = [CanManageAllHostsOrReadOnly]
    filterset_fields = ["name"]

    def get_permissions(self):
        if self.action == "cpu_baseline":  # the group's host admins may ask for it
            return [CanManageHosts()]
        return super().get_permissions()

    def get_queryset(self):
        return host_groups_visible_to(self.request.user)

    def perform_create(self, serializer: HostGroupSerializer) -> None:
        serializer.instance = group_services.host_group_create(
            actor=Actor.from_request(self.request), **serializer.validated_data
        )

    def perform_update(self, serializer: HostGroupSerializer) -> None:
        serializer.instance = group_services.host_group_update(
            group=serializer.instance,
            actor=Actor.from_request(self.request),
            **serializer.validated_data,
        )

    @extend_schema(
        request=None,
        responses={
            200: HostGroupSerializer,
            409: OpenApiResponse(description="No host of the group reported its CPU or answers."),
        },
    )
    @action(detail=True, methods=["post"], url_path="cpu-baseline")
    def cpu_baseline(self, request: Request, pk: str | None = None) -> Response:
        """Compute the group's CPU baseline: libvirt's `baselineHypervisorCPU` (on a
        reachable host of the group) over the CPUs its hosts reported: the model and
        features every host of the group can give a VM. Host admin on the group; audited
        as host_group.updated."""
        group = group_services.host_group_cpu_baseline(
            group=self.get_object(), actor=Actor.from_request(request)
        )
        return Response(HostGroupSerializer(group).data)

    @extend_schema(responses={204: None, 409: HOST_GROUP_IN_USE})
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        """Remove an empty host group (its grants go with it); 409 while it has hosts."""
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: HostGroup) -> None:
        group_services.host_group_delete(group=instance, actor=Actor.from_request(self.request))


class IsStaffOrReadOnly(BasePermission):
    message = "Granting roles is for administrators (staff)."

    def has_permission(self, request, view) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return request.method in SAFE_METHODS or (user.is_active and user.is_staff)

    def has_object_permission(self, request, view, obj) -> bool:
        return self.has_permission(request, view)


class HostGroupGrantViewSet(
    mixins.CreateModelMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Roles granted on host groups (a user's or a Django group's). Administrators
    (staff) list, grant and take back every grant, audited; anyone else lists the
    grants that apply to them."""

    serializer_class = HostGroupGrantSerializer
    permission_classes = [IsStaffOrReadOnly]
    filterset_fields = ["role"]

    def get_queryset(self):
        grants = HostGroupGrant.objects.select_related("host_group", "user", "group")
        user = self.request.user
        if user.is_staff:
            return grants
        return grants.filter(Q(user_id=user.pk) | Q(group__in=user.groups.all()))

    def perform_create(self, serializer: HostGroupGrantSerializer) -> None:
        serializer.instance = group_services.grant_create(
            actor=Actor.from_request(self.request), **serializer.validated_data
        )

    def perform_destroy(self, instance: HostGroupGrant) -> None:
        group_services.grant_delete(grant=instance, actor=Actor.from_request(self.request))
