from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, views, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from core.api.lists import LeanListMixin
from hosts import peer_services, services, ssh_services, tls_services
from hosts.api.serializers import (
    AcceptHostKeySerializer,
    HostSerializer,
    MaintenanceSerializer,
    PeerTrustRequestSerializer,
    PeerTrustSerializer,
    PortalKeySerializer,
    SshAccessSerializer,
    TlsIssueSerializer,
)
from hosts.models import Host, PeerTrust
from hosts.permissions import CanManageHostsOrReadOnly


class HostViewSet(LeanListMixin, viewsets.ModelViewSet):
    """Hypervisor hosts. Reading needs a login; changes need the host admin role."""

    # /api/hosts/ is served by the subclass vms.api.views.HostViewSet, which adds what
    # needs the VM inventory: VM counts and `refresh` (it syncs the host's VMs).
    serializer_class = HostSerializer
    permission_classes = [CanManageHostsOrReadOnly]
    filterset_fields = ["status", "transport", "arch"]

    def get_queryset(self):
        return Host.objects.order_by("name")

    def perform_create(self, serializer: HostSerializer) -> None:
        serializer.instance = services.host_create(
            actor=Actor.from_request(self.request), **serializer.validated_data
        )

    def perform_update(self, serializer: HostSerializer) -> None:
        serializer.instance = services.host_update(
            host=serializer.instance,
            actor=Actor.from_request(self.request),
            **serializer.validated_data,
        )

    def perform_destroy(self, instance: Host) -> None:
        services.host_delete(host=instance, actor=Actor.from_request(self.request))

    def _host_response(self, host: Host) -> Response:
        return Response(self.get_serializer(self.get_queryset().get(pk=host.pk)).data)

    # The responses are the view's serializer (the subclass's, with the VM counts).
    @extend_schema(request=SshAccessSerializer)
    @action(detail=True, methods=["post"], url_path="ssh-access")
    def ssh_access(self, request: Request, pk: str | None = None) -> Response:
        """Install the portal's ssh key for a remote user, logging in once with the
        password (never stored); afterwards the host is reached over qemu+ssh."""
        serializer = SshAccessSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host = ssh_services.host_ssh_access_set_up(
            host=self.get_object(),
            user=serializer.validated_data["user"],
            password=serializer.validated_data["password"],
            actor=Actor.from_request(request),
        )
        return self._host_response(host)

    @extend_schema(request=AcceptHostKeySerializer)
    @action(detail=True, methods=["post"], url_path="accept-host-key")
    def accept_host_key(self, request: Request, pk: str | None = None) -> Response:
        """Accept the host's changed ssh host key, given the fingerprint checked out of
        band: 400 on `fingerprint` if no key is pending or the pending one is another."""
        serializer = AcceptHostKeySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host = ssh_services.host_key_accept(
            host=self.get_object(),
            fingerprint=serializer.validated_data["fingerprint"],
            actor=Actor.from_request(request),
        )
        return self._host_response(host)

    @extend_schema(request=MaintenanceSerializer)
    @action(detail=True, methods=["post"])
    def maintenance(self, request: Request, pk: str | None = None) -> Response:
        """Enter (`enabled` true) or leave maintenance, audited. A host in maintenance
        takes no new VMs: migrations to it fail their pre-check
        `destination_not_in_maintenance` and the destination ranking lists it unfit.
        What runs there stays: `POST /api/hosts/{id}/evacuate/` moves it off."""
        serializer = MaintenanceSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host = services.host_maintenance_set(
            host=self.get_object(),
            enabled=serializer.validated_data["enabled"],
            reason=serializer.validated_data["reason"],
            actor=Actor.from_request(request),
        )
        return self._host_response(host)

    @extend_schema(request=TlsIssueSerializer)
    @action(detail=True, methods=["post"], url_path="tls")
    def tls(self, request: Request, pk: str | None = None) -> Response:
        """Issue or renew the host's TLS certificates: the host makes its keys (they
        never leave it), the portal's CA signs them, they are installed for libvirtd
        and QEMU over ssh, and libvirtd is restarted. Needs ssh access set up."""
        serializer = TlsIssueSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        host = tls_services.host_tls_issue(
            host=self.get_object(),
            actor=Actor.from_request(request),
            restart=serializer.validated_data["restart_libvirtd"],
        )
        return self._host_response(host)


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
        return PeerTrust.objects.select_related("source", "destination")

    @extend_schema(request=PeerTrustRequestSerializer, responses={201: PeerTrustSerializer})
    def create(self, request: Request) -> Response:
        serializer = PeerTrustRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        trust = peer_services.peer_trust_ensure(
            source=serializer.validated_data["source"],
            destination=serializer.validated_data["destination"],
            actor=Actor.from_request(request),
        )
        return Response(PeerTrustSerializer(trust).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: PeerTrust) -> None:
        peer_services.peer_trust_remove(trust=instance, actor=Actor.from_request(self.request))
