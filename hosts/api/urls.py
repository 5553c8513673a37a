from django.urls import path
from rest_framework.routers import DefaultRouter

from hosts.api.views import HostViewSet, PortalKeyView

app_name = "hosts-api"

router = DefaultRouter()
router.register("hosts", HostViewSet, basename="host")
urlpatterns = [
    path("ssh-key/", PortalKeyView.as_view(), name="ssh-key"),
    *router.urls,
]
