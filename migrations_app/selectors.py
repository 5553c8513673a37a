from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from migrations_app.models import Migration


def migrations_visible_to(user: AbstractBaseUser) -> QuerySet[Migration]:
    """Administrators see every migration; other users the ones they requested."""
    queryset = Migration.objects.select_related("source", "destination")
    if not user.is_authenticated:
        return queryset.none()
    if user.is_staff:
        return queryset
    return queryset.filter(requested_by=user)
