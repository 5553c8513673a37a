"""Webhook endpoints and their deliveries over the API (administrators only: an
endpoint receives every migration's end, and its secret signs them)."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from migrations_app import webhooks
from migrations_app.models import WebhookDelivery, WebhookEndpoint, WebhookEvent


class WebhookEndpointSerializer(serializers.ModelSerializer):
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices),
        allow_empty=False,
        help_text="The events POSTed to this URL.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ["id", "url", "events", "active", "description", "created_at", "created_by_name"]
        read_only_fields = ["id", "created_at", "created_by_name"]


class WebhookEndpointCreateSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        required=False,
        min_length=16,
        max_length=200,
        write_only=True,
        help_text="Shared secret of the HMAC signature; generated when left out.",
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]

    def validate_url(self, value: str) -> str:
        if refusal := webhooks.url_refusal(value):
            raise serializers.ValidationError(refusal)
        return value


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(help_text="The shared secret: shown only in this answer.")

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookDelivery
        fields = [f.name for f in WebhookDelivery._meta.concrete_fields]
        read_only_fields = fields


class WebhookEndpointViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Outgoing webhooks: where the end of migrations and batches is POSTed (signed
    `X-Portal-Signature: sha256=<HMAC>`). The URL's host must lie in
    PORTAL_HOST_NETWORKS (400 naming `url` otherwise; nothing is contacted)."""

    permission_classes = [IsAdminUser]
    queryset = WebhookEndpoint.objects.all()
    serializer_class = WebhookEndpointSerializer

    @extend_schema(
        request=WebhookEndpointCreateSerializer, responses={201: WebhookEndpointCreatedSerializer}
    )
    def create(self, request: Request, *args, **kwargs) -> Response:
        given = WebhookEndpointCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        endpoint, secret = webhooks.webhook_endpoint_create(
            actor=Actor.from_request(request), **given.validated_data
        )
        body = WebhookEndpointCreatedSerializer(
            {**WebhookEndpointSerializer(endpoint).data, "secret": secret}
        ).data
        return Response(body, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: WebhookEndpoint) -> None:
        webhooks.webhook_endpoint_delete(endpoint=instance, actor=Actor.from_request(self.request))


class WebhookDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every webhook delivery with its attempts (newest first); filter by endpoint,
    event or status."""

    permission_classes = [IsAdminUser]
    queryset = WebhookDelivery.objects.all()
    serializer_class = WebhookDeliverySerializer
    filterset_fields = ["endpoint", "event", "status"]
