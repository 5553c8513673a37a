from django.urls import path

from hosts.api.views import PortalKeyView

app_name = "hosts-api"

# /api/hosts/ is routed by vms.api.urls: its viewset (a subclass of
# hosts.api.views.HostViewSet) adds the VM counts and the refresh that syncs VMs.
urlpatterns = [
    path("ssh-key/", PortalKeyView.as_view(), name="ssh-key"),
]
