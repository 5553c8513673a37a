from rest_framework.routers import DefaultRouter

from vms.api.views import HostViewSet, VMViewSet

app_name = "vms-api"

router = DefaultRouter()
router.register("hosts", HostViewSet, basename="host")
router.register("vms", VMViewSet, basename="vm")
urlpatterns = router.urls
