from rest_framework.routers import DefaultRouter

from migrations_app.api.views import MigrationViewSet, VMMigrateViewSet

app_name = "migrations-api"

router = DefaultRouter()
router.register("migrations", MigrationViewSet, basename="migration")
# Only the actions POST vms/{uuid}/migrate/ and vms/{uuid}/migrate/check/ (vms.api has the rest).
router.register("vms", VMMigrateViewSet, basename="vm")
urlpatterns = router.urls
