from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog, set_language
from drf_spectacular.views import SpectacularSwaggerView

from portal import manage_views, metrics, views
from portal.forms import ThrottledAdminAuthenticationForm
from portal.schema_view import SchemaView

# The admin's login page is throttled like the portal's (portal.login_throttle).
admin.site.login_form = ThrottledAdminAuthenticationForm

urlpatterns = [
    # First: the probe is resolved without walking the other patterns.
    path("healthz", views.healthz, name="healthz"),
    path("", views.dashboard, name="dashboard"),
    path("vms/<uuid:uuid>/", views.vm_detail, name="vm-detail"),
    path("hosts/<int:host_id>/", views.host_detail, name="host-detail"),
    path("migrations/", views.migration_list, name="migration-list"),
    path("migrations/<int:migration_id>/", views.migration_detail, name="migration-detail"),
    path(
        "migration-batches/<int:batch_id>/",
        views.migration_batch_detail,
        name="migration-batch-detail",
    ),
    path("migration-batches/new/", manage_views.batch_new, name="migration-batch-new"),
    path("webhooks/", manage_views.webhooks, name="webhooks"),
    path("tokens/", views.my_tokens, name="my-tokens"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", include("hosts.api.urls")),
    path("api/", include("vms.api.urls")),
    path("api/", include("migrations_app.api.urls")),
    path("api/", include("audit.api.urls")),
    path("api/", include("tokens.api.urls")),
    path("", include("audit.urls")),
    path("", include("migrations_app.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    # Languages: the header's switcher posts here (cookie); the scripts' catalogue.
    path("i18n/setlang/", set_language, name="set_language"),
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("metrics", metrics.metrics_view, name="metrics"),
]

handler404 = views.not_found
