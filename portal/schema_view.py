"""/api/schema/ (apart from portal.openapi, which the schema generator imports)."""

from django.conf import settings
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions
from rest_framework.request import Request


class SchemaView(SpectacularAPIView):
    """/api/schema/: the schema view, refusing a `lang` it does not have (400) instead
    of answering in the default language, as its own schema says."""

    def initial(self, request: Request, *args, **kwargs) -> None:
        super().initial(request, *args, **kwargs)
        lang = request.query_params.get("lang")
        if lang and lang not in dict(settings.LANGUAGES):
            raise exceptions.ValidationError({"lang": [f"Not one of the languages: {lang!r}."]})
