from rest_framework.routers import DefaultRouter

from migrations_app.api.views import MigrationViewSet

app_name = "migrations-api"

router = DefaultRouter()
router.register("migrations", MigrationViewSet, basename="migration")
urlpatterns = router.urls
