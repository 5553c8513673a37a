from django.urls import path
from rest_framework.routers import DefaultRouter

from hosts.api.views import PeerTrustViewSet, PortalKeyView

app_name = "hosts-api"

# /api/hosts/ itself is vms.api's: a host is shown with its VM counts.
router = DefaultRouter()
router.register("peer-trusts", PeerTrustViewSet, basename="peer-trust")

urlpatterns = [
    path("ssh-key/", PortalKeyView.as_view(), name="ssh-key"),
    *router.urls,
]
