from rest_framework.routers import SimpleRouter

from tokens.api import views

app_name = "tokens-api"

router = SimpleRouter()
router.register("tokens", views.ApiTokenViewSet, basename="api-token")
urlpatterns = router.urls
