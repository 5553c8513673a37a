from rest_framework.routers import DefaultRouter

from vms.api.views import VMViewSet

app_name = "vms-api"

router = DefaultRouter()
router.register("vms", VMViewSet, basename="vm")
urlpatterns = router.urls
