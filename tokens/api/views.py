from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from audit.services import Actor
from tokens.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
)
from tokens.models import ApiToken
from tokens.services import token_create, token_revoke


class ApiTokenViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your own API tokens: list, create (the token is in the answer, once), revoke."""

    serializer_class = ApiTokenSerializer
    queryset = ApiToken.objects.none()  # what the schema reads; each user gets their own

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return ApiToken.objects.filter(user=self.request.user)

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: ApiTokenCreatedSerializer})
    def create(self, request: Request) -> Response:
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, raw = token_create(
            user=request.user, actor=Actor.from_request(request), **serializer.validated_data
        )
        data = {**ApiTokenSerializer(token).data, "token": raw}
        return Response(data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    def destroy(self, request: Request, pk=None) -> Response:
        """Revoke the token: it answers 401 "revoked" from now on (kept for the record)."""
        token = token_revoke(token=self.get_object(), actor=Actor.from_request(request))
        return Response(ApiTokenSerializer(token).data)
