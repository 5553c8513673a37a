from django.urls import path
from rest_framework.routers import DefaultRouter

from hosts.api.views import (
    HostGroupGrantViewSet,
    HostGroupViewSet,
    PeerTrustViewSet,
    PortalKeyView,
)

app_name = "hosts-api"

# /api/hosts/ itself is vms.api's: a host is shown with its VM counts.
router = DefaultRouter()
router.register("peer-trusts", PeerTrustViewSet, basename="peer-trust")
router.register("host-groups", HostGroupViewSet, basename="host-group")
router.register("host-group-grants", HostGroupGrantViewSet, basename="host-group-grant")

urlpatterns = [
    path("ssh-key/", PortalKeyView.as_view(), name="ssh-key"),
    *router.urls,
]
