from rest_framework.routers import DefaultRouter

from hosts.api.views import HostViewSet

app_name = "hosts-api"

router = DefaultRouter()
router.register("hosts", HostViewSet, basename="host")
urlpatterns = router.urls
