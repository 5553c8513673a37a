from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, views, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from hosts.access import peer_services, ssh_services
from hosts.access.models import PeerTrust
from hosts.api.serializers import (
    PeerTrustRequestSerializer,
    PeerTrustSerializer,
    PortalKeySerializer,
)
from hosts.permissions import CanManageHostsOrReadOnly


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

    @extend_schema(
        responses={
            204: None,
            400: OpenApiResponse(
                description=(
                    "A host did not let the trust be taken off (unreachable, refused, "
                    "ssh access gone): `non_field_errors` says which and why; the trust "
                    "is kept."
                )
            ),
        }
    )
    def destroy(self, request: Request, *args, **kwargs) -> Response:
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance: PeerTrust) -> None:
        peer_services.peer_trust_remove(trust=instance, actor=Actor.from_request(self.request))
