from django.urls import path
from rest_framework.routers import SimpleRouter

from audit.api import views

app_name = "audit-api"

router = SimpleRouter()
router.register("audit", views.AuditEventViewSet, basename="audit-event")
urlpatterns = [
    path("audit/", views.AuditEventListView.as_view(), name="audit-event-list"),
    *router.urls,
]
