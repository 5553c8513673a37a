from django.urls import path
from rest_framework.routers import DefaultRouter

from hosts.api.views import PeerTrustViewSet, PortalKeyView

app_name = "hosts-api"

# /api/hosts/ is routed by vms.api.urls: its viewset (a subclass of
# hosts.api.views.HostViewSet) adds the VM counts and the refresh that syncs VMs.
router = DefaultRouter()
router.register("peer-trusts", PeerTrustViewSet, basename="peer-trust")

urlpatterns = [
    path("ssh-key/", PortalKeyView.as_view(), name="ssh-key"),
    *router.urls,
]
